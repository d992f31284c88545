#!/bin/sh
# Installs tokend for the current user and starts it. Safe to run again: upgrades in place.
#   sh install/install.sh            from a checkout (installs that checkout)
#   TOKEND_SOURCE=tokend sh install.sh   from PyPI, or any pip requirement / path / URL
# Steps: tokend in a venv of its own in the user's data folder (~/.local/share/tokend/venv), on PATH as ~/.local/bin/tokend;
# a starter config and an empty environment file (tokend.env, 0600) if none exist — never touched again; the daemon
# (re)started, reading both; `tokend status` printed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${TOKEND_SOURCE:-}" ]; then
  if [ -f "$here/../pyproject.toml" ]; then TOKEND_SOURCE=$(cd "$here/.." && pwd); else TOKEND_SOURCE=tokend; fi
fi
python=${PYTHON:-python3}
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
bin_dir=${TOKEND_BIN_DIR:-$HOME/.local/bin}

say() { printf 'tokend install: %s\n' "$*"; }

# A venv of tokend's own, in the user's data folder. System site-packages make the distribution's PyGObject
# visible: the encrypted sign-in cache needs it on Linux.
venv="$data_home/tokend/venv"
say "installing into $venv from $TOKEND_SOURCE"
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install -q --upgrade "$TOKEND_SOURCE"
mkdir -p "$bin_dir"
ln -sf "$venv/bin/tokend" "$bin_dir/tokend"
tokend="$bin_dir/tokend"
case ":$PATH:" in *":$bin_dir:"*) ;; *) say "add $bin_dir to your PATH to run tokend by name";; esac

config=${TOKEND_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/tokend/config.toml}
if [ ! -f "$config" ]; then
  mkdir -p "$(dirname "$config")"
  umask 077
  cat > "$config" <<'TOML'
# tokend config: see README "Config". The daemon reloads this file when you save it.
[identities.me]
source = "azure-cli"          # run `az login` once; tokend follows that sign-in

# [targets.prod]
# host = "contoso-prod.postgres.database.azure.com"
# database = "*"
# user = "DBA Group"          # the Entra group's display name (or your UPN)
# identity = "me"
TOML
  say "wrote a starter config at $config; add a [targets.*] table to it"
fi

# The daemon's environment file beside the config (secret variables, HTTPS_PROXY, …): made once, empty and 0600;
# never rewritten, so a second install keeps what the user put there. Every way of starting the daemon reads it.
envfile="$(dirname "$config")/tokend.env"
if [ ! -e "$envfile" ]; then
  (umask 077 && cat > "$envfile" <<'ENV'
# tokend's daemon environment: KEY=value lines (systemd's EnvironmentFile syntax), read at start and on reload.
# Keep this file mode 0600. E.g.:
# APP_SECRET=…                        for client_secret_env = "APP_SECRET"
# HTTPS_PROXY=http://proxy.example:3128
# NO_PROXY=localhost,127.0.0.1
ENV
  )
  say "wrote an empty environment file at $envfile (mode 0600) for the daemon's secrets and proxy settings"
fi

# Start it at login (and now); where there is no service manager, start it in the background instead.
if out=$("$tokend" service install --config "$config" 2>&1); then
  say "$out"
else
  say "$out"
  "$tokend" stop --config "$config" >/dev/null 2>&1 || true
  state=${XDG_STATE_HOME:-$HOME/.local/state}/tokend
  mkdir -p "$state"
  nohup "$tokend" run --config "$config" >/dev/null 2>&1 &
  say "started the daemon in the background for now (logs: $state/log/tokend.log)"
fi
i=0
while [ $i -lt 100 ] && ! "$tokend" status --config "$config" >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
"$tokend" status --config "$config" || true
grep -q '^\[targets\.' "$config" || say "no targets yet: add one to $config; the daemon picks it up within seconds"
