@echo off
rem tokend's command on Windows, installed by pip beside the environment's python.exe: starts Python without
rem `site` so that `tokend token` is answered quickly (see the launcher `tokend` beside this file).
if not exist "%~dp0python.exe" (
  echo tokend: no python.exe beside %~f0; this launcher must stay in the Scripts folder of tokend's environment 1>&2
  exit /b 1
)
"%~dp0python.exe" -S "%~dp0tokend" %*
exit /b %ERRORLEVEL%
