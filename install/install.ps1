# Installs tokend for the current Windows user and starts it at logon. Safe to run again: upgrades in place.
#   powershell -ExecutionPolicy Bypass -File install\install.ps1           (from a checkout)
#   $env:TOKEND_SOURCE = "tokend"; ...                                     (from PyPI or any pip requirement)
# Steps: tokend in a venv of its own in %LOCALAPPDATA%\tokend,
# a starter config if none exists (or `tokend init` when it exists and a console is attached), the logon task
# installed and started, `tokend status` printed.
$ErrorActionPreference = "Stop"

function Say($text) { Write-Host "tokend install: $text" }

$here = Split-Path -Parent $MyInvocation.MyCommand.Path
$source = $env:TOKEND_SOURCE
if (-not $source) {
    if (Test-Path (Join-Path $here "..\pyproject.toml")) { $source = (Resolve-Path (Join-Path $here "..")).Path }
    else { $source = "tokend" }
}
$python = if ($env:PYTHON) { $env:PYTHON } else { "py" }

# Always a venv of its own: the `tokend.cmd` launcher must stay beside that venv's python.exe (pipx and uv copy
# launchers elsewhere on Windows).
$venv = Join-Path $env:LOCALAPPDATA "tokend\venv"
Say "installing into $venv from $source"
& $python -m venv $venv
& (Join-Path $venv "Scripts\python.exe") -m pip install -q --upgrade pip | Out-Null
& (Join-Path $venv "Scripts\python.exe") -m pip install -q --upgrade $source
$tokend = Join-Path $venv "Scripts\tokend.cmd"
$userPath = [Environment]::GetEnvironmentVariable("Path", "User")
$scripts = Join-Path $venv "Scripts"
if (-not ($userPath -split ";" | Where-Object { $_ -eq $scripts })) {
    [Environment]::SetEnvironmentVariable("Path", "$userPath;$scripts", "User")
    Say "added $scripts to your PATH (new terminals)"
}

$config = if ($env:TOKEND_CONFIG) { $env:TOKEND_CONFIG } else { Join-Path $env:APPDATA "tokend\config.toml" }
if (-not (Test-Path $config)) {
    New-Item -ItemType Directory -Force -Path (Split-Path -Parent $config) | Out-Null
    @"
# tokend config: see README "Config". The daemon reloads this file when you save it.
[identities.me]
source = "azure-cli"          # run ``az login`` once; tokend follows that sign-in

# [targets.prod]
# host = "contoso-prod.postgres.database.azure.com"
# database = "*"
# user = "DBA Group"          # the Entra group's display name (or your UPN)
# identity = "me"
"@ | Set-Content -Encoding utf8 -Path $config  # a BOM is fine: tokend reads utf-8-sig
    Say "wrote a starter config at $config; add a [targets.*] table to it"
}

& $tokend service install --config $config
for ($i = 0; $i -lt 100; $i++) {
    & $tokend status --config $config *> $null
    if ($LASTEXITCODE -eq 0) { break }
    Start-Sleep -Milliseconds 100
}
& $tokend status --config $config
