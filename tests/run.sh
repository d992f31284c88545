#!/usr/bin/env bash
# Runs tokend's whole test suite on a fresh Debian/Ubuntu machine: installs what the tests need (Debian's
# PostgreSQL server and client, a virtualenv with tokend and its test tools, the Azure CLI from PyPI in a
# virtualenv of its own), then runs ruff and pytest. Extra arguments go to pytest (e.g. -m "not slow").
# What needs root is said on screen before anything is installed: Debian packages through apt-get (as root, or with
# sudo), and the second local user some tests add (tokend-other), which is removed at the end when this run added it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
log="$root/.test-install.log"
: > "$log"
say() { printf 'tests/run.sh: %s\n' "$*"; }
other_user=tokend-other  # tests/support/users.py OTHER_USER
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="none"; fi

need_apt=()
command -v psql >/dev/null || need_apt+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# A real Secret Service for the keyring and the encrypted sign-in cache: gnome-keyring on a private D-Bus session;
# libsecret reached from Python through Debian's PyGObject.
command -v dbus-daemon >/dev/null || need_apt+=(dbus)
command -v gnome-keyring-daemon >/dev/null || need_apt+=(gnome-keyring)
[ -d /usr/lib/python3/dist-packages/gi ] || need_apt+=(python3-gi)
command -v secret-tool >/dev/null || need_apt+=(libsecret-tools)
command -v zsh >/dev/null || need_apt+=(zsh)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || ls /usr/lib/*/faketime/libfaketimeMT.so.1 \
  >/dev/null 2>&1 || need_apt+=(faketime)
command -v fish >/dev/null || need_apt+=(fish)
# The local proxy's clients and reference relay: pgjdbc on a JRE, node-postgres on Node.js, stunnel4; PgBouncer.
[ -e /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
command -v java >/dev/null || need_apt+=(default-jre-headless)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v stunnel4 >/dev/null || need_apt+=(stunnel4)
command -v pgbouncer >/dev/null || need_apt+=(pgbouncer)
command -v tinyproxy >/dev/null || need_apt+=(tinyproxy)  # an HTTPS proxy between tokend and Entra
[ -e /usr/lib/x86_64-linux-gnu/girepository-1.0/Secret-1.typelib ] || ls /usr/lib/*/girepository-1.0/Secret-1.typelib \
  >/dev/null 2>&1 || need_apt+=(gir1.2-secret-1)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$sudo" = none ]; then
    say "missing Debian packages: ${need_apt[*]}; installing them needs root or sudo, and neither is available here:"
    say "run as root, or have an administrator run: apt-get install ${need_apt[*]}"
    exit 1
  fi
  how="as root"; [ -z "$sudo" ] || how="with sudo (it may ask for your password)"
  say "installing Debian packages through apt-get $how: ${need_apt[*]}"
  $sudo apt-get update >>"$log" 2>&1 || { tail -20 "$log"; exit 1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need_apt[@]}" >>"$log" 2>&1 \
    || { tail -20 "$log"; exit 1; }
fi

# The tests that attack tokend as another local user add one (tokend-other, with useradd: root only); remove it at
# the end when this run added it.
if ! getent passwd "$other_user" >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    say "some tests add the local user $other_user (useradd); it is removed when the run ends"
    trap 'getent passwd "$other_user" >/dev/null 2>&1 && userdel "$other_user" >/dev/null 2>&1 || true' EXIT
  else
    say "note: the tests that act as a second local user ($other_user) need root: skipped here (CI runs as root)"
  fi
fi
say "also installs, inside this checkout only: .venv, .venv-product, .venv-az (azure-cli), .venv-clients (pgAdmin, pgcli) (uv), .node (npm: pg)"

python=${PYTHON:-python3}
# The test venvs are filled by uv (Astral's installer, from PyPI): the same wheels pip would pick, installed in a
# fraction of pip's time (pip took ~110 of a 2-core run's CPU-seconds for the Azure CLI and pgAdmin alone, while the
# tests waited). Bytecode is compiled at install, as pip does: tests run tokend as other users, who cannot write it.
# install/install.sh, which users run, keeps pip, and its tests run it as it is.
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)"
  $python -m venv .venv
fi
.venv/bin/python -m pip install -q "uv>=0.9,<1" >>"$log" 2>&1 || { tail -20 "$log"; exit 1; }
uv() { "$root/.venv/bin/uv" "$@"; }
# The real GUI/terminal clients the client tests drive, pgAdmin 4 (its whole web app, ~620 MB) and pgcli, from PyPI in
# a virtualenv of their own (pgAdmin pins its own Flask and psycopg), and the real Azure CLI in another (it pins its
# own azure-identity/msal): installed in the background while the rest is built and tested. A test that needs one
# waits for its install (tests/support/installs.py reads .test-installs/NAME.pid and NAME.rc).
installs=()  # the installs running in the background, each a NAME: .venv-NAME, its log .test-install-NAME.log
rm -rf .test-installs && mkdir .test-installs
in_background() {  # NAME COMMAND...
  local name=$1
  shift
  ( rc=0; "$@" > ".test-install-$name.log" 2>&1 || rc=$?; echo $rc > ".test-installs/$name.rc" ) &
  echo $! > ".test-installs/$name.pid"
  installs+=("$name")
}
install_clients() {
  uv venv -q --python "$python" .venv-clients \
    && uv pip install -q --python .venv-clients/bin/python --compile-bytecode "pgadmin4>=9.18,<10" "pgcli>=4.7,<5"
}
install_az() {
  uv venv -q --python "$python" .venv-az \
    && uv pip install -q --python .venv-az/bin/python --compile-bytecode azure-cli
}
if [ ! -x .venv-clients/bin/pgcli ] || ! ls .venv-clients/lib/python*/site-packages/pgadmin4/pgAdmin4.py \
  >/dev/null 2>&1; then
  echo "installing pgAdmin 4 and pgcli from PyPI into .venv-clients (in the background)"
  in_background clients install_clients
fi
if [ ! -x .venv-az/bin/az ]; then
  echo "installing the Azure CLI from PyPI into .venv-az (in the background)"
  in_background az install_az
fi
wait_installs() {
  for name in "${installs[@]}"; do
    wait "$(cat ".test-installs/$name.pid")" || true
    [ "$(cat ".test-installs/$name.rc" 2>/dev/null)" = 0 ] \
      || { tail -20 ".test-install-$name.log"; echo "installing .venv-$name failed"; exit 1; }
  done
  installs=()
}
# Tests run what users install: a wheel built from this checkout, never an editable install.
#   .venv          the test tools, and tokend from that wheel (in-process tests import the installed copy)
#   .venv-product  a fresh venv (made by Python's venv, as install/install.sh makes it) holding nothing but the wheel
#                  and its dependencies: the `tokend` that the end-to-end tests run
rm -rf dist
uv build -q --wheel --out-dir dist . >>"$log" 2>&1 || { tail -20 "$log"; exit 1; }
wheel=$(ls "$root"/dist/tokend-*.whl)
echo "built $(basename "$wheel")"
uv pip install -q --python .venv/bin/python --compile-bytecode --reinstall-package tokend "$wheel[test]" >>"$log" 2>&1 \
  || { tail -20 "$log"; exit 1; }
rm -rf .venv-product
$python -m venv .venv-product
uv pip install -q --python .venv-product/bin/python --compile-bytecode "$wheel" >>"$log" 2>&1 \
  || { tail -20 "$log"; exit 1; }

# Debian's PyGObject (gi) into both venvs, when their Python has the system Python's ABI: msal-extensions
# needs it for libsecret. Only the gi package is linked, not the whole system site-packages.
sys_abi=$(/usr/bin/python3 -c 'import sys; print(sys.implementation.cache_tag)' 2>/dev/null || true)
for venv in .venv .venv-product; do
  venv_abi=$($venv/bin/python -c 'import sys; print(sys.implementation.cache_tag)')
  site=$($venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if [ -d /usr/lib/python3/dist-packages/gi ] && [ "$venv_abi" = "$sys_abi" ]; then
    mkdir -p $venv/system-gi
    ln -sfn /usr/lib/python3/dist-packages/gi $venv/system-gi/gi
    echo "$root/$venv/system-gi" > "$site/system-gi.pth"
  else
    echo "note: Debian's PyGObject does not fit $venv ($venv_abi vs ${sys_abi:-none}); encrypted-cache tests skip"
  fi
done
export TOKEND_TEST_BIN="$root/.venv-product/bin/tokend"

# node-postgres, for the proxy's client tests
if [ ! -d .node/node_modules/pg ]; then
  mkdir -p .node
  (cd .node && npm install --silent --no-audit --no-fund pg@8 >>"$log" 2>&1) || { tail -20 "$log"; exit 1; }
fi

export TOKEND_TEST_AZ="$root/.venv-az/bin/az"

# ruff; mypy as Linux, Windows and macOS type the code (each branch on system.WINDOWS/MACOS/LINUX taken or skipped as
# there; a cache of its own per platform, so the three runs do not undo one another's); the GitHub workflow's schema.
lint() {
  echo "ruff:"
  .venv/bin/ruff check tokend tests bench && .venv/bin/ruff format --check tokend tests bench && echo "mypy:" \
    && .venv/bin/mypy \
    && .venv/bin/mypy --platform win32 --always-true WINDOWS --always-false MACOS --always-false LINUX \
      --cache-dir .mypy_cache/win32 \
    && .venv/bin/mypy --platform darwin --always-true MACOS --always-false WINDOWS --always-false LINUX \
      --cache-dir .mypy_cache/darwin \
    && echo "GitHub workflow schema:" \
    && .venv/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml
}
# The linters run in the background beside the first tests (mostly one core each); they must pass for the run to pass.
lint > .test-lint.log 2>&1 &
lint_pid=$!
lint_passed() {
  local rc=0
  wait $lint_pid || rc=$?
  cat .test-lint.log
  [ $rc = 0 ] || { echo "lint failed"; exit 1; }
}
status=0
# Given a selection (-m, -k, or test paths), run exactly that (with .venv/bin/pytest: the installed copy).
for arg in "$@"; do  # not exec: the EXIT trap cleans up
  case $arg in
    -m|-k|tests*|*.py*)
      .venv/bin/pytest "$@" || status=$?
      lint_passed
      wait_installs
      exit $status ;;
  esac
done
# Unit tests first: in-process, against the checkout itself (`python -m pytest` puts it first on sys.path), no wheel
# and no servers; a failure here stops the run in seconds.
echo "unit tests:"
.venv/bin/python -m pytest -q tests/unit "$@" || { kill $lint_pid 2>/dev/null; exit 1; }
lint_passed
# End-to-end tests: .venv/bin/pytest, not `python -m pytest`, which would import the checkout instead of the installed
# copy, and without Hypothesis' pytest plugin (no end-to-end test uses it; it costs each pytest process 1.2 CPU-s to
# start). Every `soak` test (minutes of waiting on token rotations, each with its own emulator and PostgreSQL) runs in
# a pytest process of its own, started now, beside the rest. (Not at a lower priority: under nice 5 the hostile-load
# soak's attacker got too little CPU for the volume it must reach.)
e2e=(.venv/bin/pytest -p no:hypothesispytest)
rm -rf .soak-logs && mkdir -p .soak-logs
mapfile -t soaks < <("${e2e[@]}" --collect-only -q -m soak tests/e2e "$@" 2>/dev/null | grep '::')
pids=()
for i in "${!soaks[@]}"; do
  "${e2e[@]}" -q "$@" "${soaks[$i]}" > ".soak-logs/$i.log" 2>&1 &
  pids+=($!)
done
echo "started ${#soaks[@]} soak tests side by side with the rest"
# The rest in three pytest-xdist workers, which hand each the next test as it finishes one (each test has its own
# HOME, ports and servers): most tests wait (on the emulator, refreshes, servers) more than they compute, so a third
# worker keeps two cores busy.
echo "end-to-end tests:"
"${e2e[@]}" -n 3 -m "not soak" "$@" tests/e2e || status=$?
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "soak passed: ${soaks[$i]}"
  else
    status=1
    echo "soak FAILED: ${soaks[$i]}"
    cat ".soak-logs/$i.log"
  fi
done
wait_installs
exit $status
