#!/usr/bin/env bash
# Install what intentd needs, idempotently: uv + the locked venv, bubblewrap, the pinned opencode
# npm package, and the embedded PostgreSQL with migrations applied. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
fi
uv sync --locked --quiet

if ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: installing bubblewrap"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  fi
fi

uv run --no-sync python -m intentd.cli db up
mise run oc:setup
# The console's browser assets (vendored from the pinned npm packages) and Debian's chromium for the
# browser lane (tests/browser): both idempotent.
mise run console:setup
mise run browser:setup
# The OpenCode daemon's own unprivileged account (idempotent; it owns only the workspaces root and
# its state directory, and runs in a bubblewrap jail).
if [ "$(id -u)" = 0 ]; then
  uv run --no-sync python -m intentd.oc.daemon user
fi
