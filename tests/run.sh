#!/usr/bin/env bash
# Runs tokend's whole test suite on a fresh Debian/Ubuntu machine: installs what the tests need (Debian's
# PostgreSQL server and client, a virtualenv with tokend and its test tools, the Azure CLI from PyPI in a
# virtualenv of its own), then runs ruff and pytest. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
log="$root/.test-install.log"
: > "$log"

need_apt=()
command -v psql >/dev/null || need_apt+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${need_apt[*]}"
  $sudo apt-get update >>"$log" 2>&1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need_apt[@]}" >>"$log" 2>&1 \
    || { tail -20 "$log"; exit 1; }
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)"
  $python -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >>"$log" 2>&1
.venv/bin/python -m pip install -q -e ".[test]" >>"$log" 2>&1 || { tail -20 "$log"; exit 1; }

# The real Azure CLI, in its own virtualenv: it pins its own azure-identity/msal.
if [ ! -x .venv-az/bin/az ]; then
  echo "installing the Azure CLI from PyPI into .venv-az (a few minutes)"
  $python -m venv .venv-az
  .venv-az/bin/python -m pip install -q azure-cli >>"$log" 2>&1 || { tail -20 "$log"; exit 1; }
fi
export TOKEND_TEST_AZ="$root/.venv-az/bin/az"

echo "ruff:"
.venv/bin/ruff check tokend tests bench
exec .venv/bin/python -m pytest "$@"
