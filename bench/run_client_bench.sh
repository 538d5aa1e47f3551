#!/usr/bin/env bash
# Client-side coalescing (ClientOptions::coalesce) against plain unary checks,
# through the client library, at the same concurrency.
#
#   bash bench/run_client_bench.sh [BUILD_DIR]        (default: build)
#
# Builds its targets (traffikd, traffik_client_bench), starts traffikd on a
# free 127.0.0.1 port with the memory backend, then runs traffik_client_bench
# (CALLERS threads, each a closed loop of Client::Check) alternating unary and
# coalesced for ROUNDS rounds; reports the median round of each mode:
# decisions/s, p50/p99 per Check, and CPU per decision of traffikd
# (/proc/PID/stat utime+stime delta / decisions) and of the client process.
# Prints a Markdown section on stdout (progress on stderr); everything it
# started is stopped on exit. If RESULTS_KV names a file, appends
# client_unary_dps, client_coalesced_dps, client_coalesce_ratio,
# client_unary_p99_us, client_coalesced_p99_us, client_unary_cpu_us,
# client_coalesced_cpu_us (traffikd CPU us per decision) to it.
#
# Environment (defaults): DURATION=8 WARMUP=1 (seconds per run) ROUNDS=3
# CALLERS=256 KEYS=1000 MAX_DELAY_US=500 MAX_BATCH=64 RESULTS_KV=
# (2 modes x ROUNDS x (WARMUP + DURATION + ~1 s): about a minute by default.)
set -euo pipefail

BUILD_DIR=${1:-build}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
CALLERS=${CALLERS:-256}
KEYS=${KEYS:-1000}
MAX_DELAY_US=${MAX_DELAY_US:-500}
MAX_BATCH=${MAX_BATCH:-64}
RESULTS_KV=${RESULTS_KV:-}

log() { echo "run_client_bench: $*" >&2; }

log "building traffikd traffik_client_bench in $BUILD_DIR"
cmake --build "$BUILD_DIR" --target traffikd traffik_client_bench >&2

BENCH="$BUILD_DIR/bench/traffik_client_bench"
TRAFFIKD="$BUILD_DIR/server/traffikd"
for bin in "$BENCH" "$TRAFFIKD"; do
  [[ -x "$bin" ]] || { log "missing $bin"; exit 1; }
done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup client-bench

bench_write_config "memory"
bench_start_traffikd ||
  { log "traffikd did not start:"; cat "$WORK/traffikd.err" >&2; exit 1; }
log "traffikd (memory) on $ADDR, pid $TRAFFIKD_PID"

kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RUNS
for round in $(seq "$ROUNDS"); do
  for mode in unary coalesced; do
    log "$mode round $round/$ROUNDS (${WARMUP}s + ${DURATION}s, $CALLERS callers)"
    out=$("$BENCH" --target "$ADDR" --mode "$mode" --callers "$CALLERS" \
      --duration-s "$DURATION" --warmup-s "$WARMUP" --keys "$KEYS" \
      --max-delay-us "$MAX_DELAY_US" --max-batch "$MAX_BATCH" \
      --server-pid "$TRAFFIKD_PID") || { log "$mode run failed"; out=""; }
    log "  $out"
    [[ -n "$out" ]] && RUNS[$mode]+="$out"$'\n'
  done
done

# The median round (by decisions/s) of a mode: prints its key=value line.
median_run() {
  printf '%s' "${RUNS[$1]:-}" | sed '/^$/d' |
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^dps=/) { split($i, a, "="); print a[2], $0 } }' |
    sort -n -k1,1 | cut -d' ' -f2- |
    awk '{ line[NR] = $0 } END { if (NR) print line[int((NR + 1) / 2)] }'
}
UNARY=$(median_run unary)
COALESCED=$(median_run coalesced)
[[ -n "$UNARY" && -n "$COALESCED" ]] || { log "no successful runs"; exit 1; }

u_dps=$(kv dps "$UNARY") c_dps=$(kv dps "$COALESCED")
ratio=$(awk -v c="$c_dps" -v u="$u_dps" 'BEGIN { if (u > 0) printf "%.2f", c / u; else print "-" }')
row() {  # $1 = label, $2 = key=value line
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(kv dps "$2")" \
    "$(kv p50_us "$2")" "$(kv p99_us "$2")" "$(kv server_cpu_us "$2")" \
    "$(kv client_cpu_us "$2")" "$(kv rpcs "$2")" "$(kv coalesced "$2")" "$(errors_of "$2")"
}
errors_of() {  # "0", or e.g. "3 (DEADLINE_EXCEEDED:3)"
  local n codes
  n=$(kv errors "$1") codes=$(kv error_codes "$1")
  if [[ -n $codes && $codes != - ]]; then echo "$n ($codes)"; else echo "$n"; fi
}
met() { if awk -v x="$1" 'BEGIN { exit !(x) }'; then echo "met"; else echo "not met"; fi; }
u_p99=$(kv p99_us "$UNARY") c_p99=$(kv p99_us "$COALESCED")

echo "## Client coalescing: $CALLERS concurrent callers through the client library"
echo
echo "Command: \`DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS CALLERS=$CALLERS KEYS=$KEYS" \
  "MAX_DELAY_US=$MAX_DELAY_US MAX_BATCH=$MAX_BATCH bash bench/run_client_bench.sh $BUILD_DIR\`"
echo
echo "traffikd (memory backend) on 127.0.0.1; $CALLERS threads, each a closed loop of"
echo "\`Client::Check\` over $KEYS identifiers; unary and coalesced runs alternate, $ROUNDS"
echo "round(s) of ${DURATION}s (after ${WARMUP}s warm-up); the median round (by decisions/s) of"
echo "each mode is shown. Load average at the start: $LOAD_START (2 shared cores: noisy)."
echo "CPU per decision: traffikd's utime+stime (/proc) and the client process' (getrusage)"
echo "over the measured window, divided by the decisions."
echo
echo "| mode | decisions/s | p50 µs | p99 µs | traffikd CPU µs/decision | client CPU µs/decision | RPCs | coalesced checks | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
row "unary" "$UNARY"
row "coalesced (max_delay ${MAX_DELAY_US} µs, max_batch $MAX_BATCH)" "$COALESCED"
echo
echo "| target | measured | status |"
echo "| --- | --- | --- |"
echo "| coalesced ≥ 3× unary decisions/s | ${ratio}× | $(met "$ratio >= 3") |"
echo "| coalesced p99 ≤ unary p99 | $c_p99 µs vs $u_p99 µs | $(met "$c_p99 <= $u_p99") |"

if [[ -n "$RESULTS_KV" ]]; then
  {
    echo "client_unary_dps=$u_dps"
    echo "client_coalesced_dps=$c_dps"
    echo "client_coalesce_ratio=$ratio"
    echo "client_unary_p99_us=$u_p99"
    echo "client_coalesced_p99_us=$c_p99"
    echo "client_unary_cpu_us=$(kv server_cpu_us "$UNARY")"
    echo "client_coalesced_cpu_us=$(kv server_cpu_us "$COALESCED")"
  } >>"$RESULTS_KV"
fi
