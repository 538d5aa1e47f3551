#!/usr/bin/env bash
# Profiles traffikd on a Redis tenant: where its CPU per decision goes.
#
#   bash bench/profile_redis.sh [BUILD_DIR]        (default: build-bench)
#
# Starts its own redis-server and traffikd (127.0.0.1, free ports; the same
# config as run_redis_bench.sh), drives traffik_loadgen at CONCURRENCY calls in
# flight for DURATION and records traffikd with `perf record -g` (PERF=1;
# CALLGRAPH=dwarf|fp, default dwarf) over that window. Prints on stdout: the
# load generator's JSON, traffikd's per-thread CPU (ms) and context switches
# (voluntary + involuntary) over the window from /proc/PID/task/*/{stat,status}
# with their sum per decision,
# and the top PERF_LINES of `perf report --sort comm,dso,sym --no-children`.
# Environment (defaults): CONCURRENCY=64 DURATION=5s CHANNELS=2 THREADS=2
# KEYS=1000 PERF=1 CALLGRAPH=dwarf PERF_LINES=45 OUT= (if set, perf.data is
# kept there).
set -euo pipefail
BUILD_DIR=${1:-build-bench}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-5s}
CHANNELS=${CHANNELS:-2}
THREADS=${THREADS:-2}
KEYS=${KEYS:-1000}
PERF=${PERF:-1}
CALLGRAPH=${CALLGRAPH:-dwarf}
PERF_LINES=${PERF_LINES:-45}
OUT=${OUT:-}
LOADGEN="$BUILD_DIR/bench/traffik_loadgen"
TRAFFIKD="$BUILD_DIR/server/traffikd"
log() { echo "profile_redis: $*" >&2; }
for bin in "$LOADGEN" "$TRAFFIKD"; do
  [[ -x "$bin" ]] || { log "missing $bin"; exit 1; }
done
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup profile

bench_start_redis || { log "cannot start redis-server"; exit 1; }

bench_write_config "redis://127.0.0.1:$REDIS_PORT/0"
bench_start_traffikd ||
  { log "traffikd did not start"; cat "$WORK/traffikd.err" >&2; exit 1; }

# Per-thread "name utime+stime(ticks) voluntary involuntary" of traffikd.
threads() {
  local t
  for t in /proc/"$TRAFFIKD_PID"/task/*; do
    [[ -r $t/stat ]] || continue
    awk -v name="$(cat "$t/comm")" -v tid="${t##*/}" \
      '{ sub(/^.*\) /, ""); print tid, name, $12 + $13 }' "$t/stat" |
      tr '\n' ' '
    awk '/^voluntary_ctxt_switches/ { v = $2 } /^nonvoluntary_ctxt_switches/ { n = $2 }
      END { print v, n }' "$t/status"
  done
}

"$LOADGEN" --target "$ADDR" --concurrency "$CONCURRENCY" --channels "$CHANNELS" \
  --threads "$THREADS" --keys "$KEYS" --warmup 1s --duration "$DURATION" \
  --watch-pid "server=$TRAFFIKD_PID" --json >"$WORK/loadgen.json" 2>"$WORK/loadgen.err" &
LG=$!
sleep 1.2
threads >"$WORK/before.txt"
secs=${DURATION%s}
if [[ $PERF == 1 ]]; then
  call=(-g)
  [[ $CALLGRAPH == dwarf ]] && call=(--call-graph dwarf,16384)
  perf record -q "${call[@]}" -F 2000 -p "$TRAFFIKD_PID" -o "$WORK/perf.data" \
    -- sleep "$((${secs%.*} - 1))" 2>/dev/null
else
  sleep "$((${secs%.*} - 1))"
fi
threads >"$WORK/after.txt"
wait "$LG"
cat "$WORK/loadgen.json"
echo
window=$((${secs%.*} - 1))
per_s=$(grep -o '"decisions_per_s":[0-9.]*' "$WORK/loadgen.json" | cut -d: -f2)
echo "per-thread over ~${window}s: tid name cpu_ms voluntary_cs involuntary_cs"
tick=$(getconf CLK_TCK)
join <(sort "$WORK/before.txt") <(sort "$WORK/after.txt") |
  awk -v tick="$tick" '{ cpu = ($7 - $3) * 1000 / tick; v = $8 - $4; n = $9 - $5;
    if (cpu > 0 || v > 0) printf "%s %s %.0f %d %d\n", $1, $2, cpu, v, n }' |
  sort -k3 -n -r >"$WORK/threads.txt"
cat "$WORK/threads.txt"
# Per decision: the threads' CPU over the sampling window ÷ (the load generator's
# decisions/s over its measured run × that window).
awk -v d="${per_s:-0}" -v w="$window" '{ cpu += $3; cs += $4 + $5 }
  $2 == "traffik-redis" { io = $3; io_cs = $4 + $5 }
  END { n = d * w; if (n <= 0) exit
    printf "per decision: traffikd CPU %.2f us, context switches %.3f; I/O thread %.2f us, %.3f\n",
      cpu * 1000 / n, cs / n, io * 1000 / n, io_cs / n }' "$WORK/threads.txt"
if [[ $PERF == 1 ]]; then
  [[ -z $OUT ]] || cp "$WORK/perf.data" "$OUT"
  perf report -i "$WORK/perf.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null |
    grep -v '^#' | grep -E '^ +[0-9]' | head -n "$PERF_LINES" || true
fi
