# shellcheck shell=bash
# Sourced by the bench scripts: one work directory and the processes a script
# starts, both cleaned up however the script ends.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   bench_setup NAME        # WORK=/tmp/traffik-NAME.XXXXXX, traps set
#   some_server & PIDS+=($!)
#
# On exit every process in PIDS gets SIGTERM, then SIGKILL if it is still alive
# after BENCH_KILL_TENTHS tenths of a second (default 50); WORK is removed.

PIDS=()
WORK=

bench_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq "${BENCH_KILL_TENTHS:-50}"); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [[ -z "$WORK" ]] || rm -rf "$WORK"
}

bench_setup() {  # NAME
  WORK=$(mktemp -d "/tmp/traffik-$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
