#!/usr/bin/env bash
# The README's test command (and CI's lane): everything installs itself, then quick, e2e, a short
# chaos run and the oracles. Exits non-zero on any failure; pytest's "no tests ran" (5) fails too.
set -uo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$PWD/.tmp/xdg}"; mkdir -p -m 700 "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"

started=$(date +%s)
status=0
step() {
  local name="$1"; shift
  local t0=$(date +%s)
  echo "::: $name"
  "$@"
  local rc=$?
  echo "::: $name -> exit $rc in $(( $(date +%s) - t0 ))s"
  if [ "$rc" -ne 0 ]; then status=1; fi
}

step "quick (check, unit, integration, crashdemo, contract)" mise run quick
step "e2e (separate processes over HTTP)" mise run test:e2e
step "browser (the console in chromium)" mise run test:browser
step "crash matrix (a SIGKILL at each boundary)" mise run test:chaos:matrix
step "chaos (short)" mise run wf:intent:chaos -- --runs 12 --chaos-seconds 40 --converge-seconds 150
step "fleet chaos (short: 3 workers, one SIGKILLed for good, a fenced zombie, a PostgreSQL restart)" mise run fleet:chaos -- --runs 12 --submit-seconds 20 --stop-seconds 15 --takeover-seconds 6 --heartbeat-seconds 1 --converge-seconds 150
step "chaos live (short: real OpenCode daemon)" mise run wf:intent:chaos:live -- --runs 9 --chaos-seconds 60 --converge-seconds 180 --min-gap 0.5 --max-gap 1.5
step "oracles" mise run oracles

echo "test lane: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $(( $(date +%s) - started ))s"
exit $status
