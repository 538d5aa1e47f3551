#!/usr/bin/env bash
# ShouldRateLimit (Envoy RLS) decisions/s on traffikd against the no-op
# server's ShouldRateLimit in the same run: one descriptor, memory tenant,
# closed loop (traffik_loadgen --rpc envoy). Prints a Markdown section; the
# last line is "ratio=<traffikd decisions/s / no-op calls/s at the last
# concurrency>".
#
#   bash bench/run_envoy_bench.sh BUILD_DIR
#
# Environment (defaults): DURATION=5s WARMUP=1s ROUNDS=3 CONCURRENCIES="64"
# CHANNELS=4 THREADS=2 KEYS=1000 (where the no-op figure stops rising on 2
# cores; run_all.sh passes the ones its scaling table picked) RESULTS_KV= (if
# set, envoy<C>_ratio and CPU per call lines are appended to it). Both servers run on 127.0.0.1 and are stopped on exit; each figure is the median of ROUNDS interleaved runs.
set -euo pipefail
BUILD_DIR=${1:?usage: run_envoy_bench.sh BUILD_DIR}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-3}
CONCURRENCIES=${CONCURRENCIES:-64}
CHANNELS=${CHANNELS:-4}
THREADS=${THREADS:-2}
KEYS=${KEYS:-1000}
LOADGEN="$BUILD_DIR/bench/traffik_loadgen"
NOOP="$BUILD_DIR/bench/traffik_noop_server"
TRAFFIKD="$BUILD_DIR/server/traffikd"
for bin in "$LOADGEN" "$NOOP" "$TRAFFIKD"; do
  [[ -x "$bin" ]] || { echo "run_envoy_bench: missing $bin (build it first)" >&2; exit 1; }
done
log() { echo "run_envoy_bench: $*" >&2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup envoy-bench

wait_listening() {  # $1 stderr file, $2 pid; prints HOST:PORT
  local addr=
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*listening grpc=\([^ ]*\).*/\1/p' "$1" | head -n1)
    [[ -n "$addr" ]] && { echo "$addr"; return 0; }
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  log "server did not start:"; cat "$1" >&2; return 1
}

mkdir -p "$WORK/ratelimit"
cat >"$WORK/ratelimit/bench.yaml" <<YAML
domain: bench
descriptors:
  - key: user
    rate_limit:
      unit: second
      requests_per_unit: 1000000000
YAML
cat >"$WORK/traffik.yaml" <<YAML
listen: "127.0.0.1:0"
metrics_listen: ""
tenants:
  - name: default
envoy:
  config_dirs: [$WORK/ratelimit]
YAML
"$NOOP" --listen 127.0.0.1:0 2>"$WORK/noop.err" &
NOOP_PID=$!
PIDS+=("$NOOP_PID")
NOOP_ADDR=$(wait_listening "$WORK/noop.err" $NOOP_PID)
"$TRAFFIKD" --config "$WORK/traffik.yaml" 2>"$WORK/traffikd.err" &
TRAFFIKD_PID=$!
PIDS+=("$TRAFFIKD_PID")
TRAFFIKD_ADDR=$(wait_listening "$WORK/traffikd.err" $TRAFFIKD_PID)
TICK=$(getconf CLK_TCK)
log "noop on $NOOP_ADDR, traffikd on $TRAFFIKD_ADDR"

json_num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }
# The server's CPU time (user + system), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run_one() {  # $1 address, $2 concurrency, $3 server pid; prints
             # "decisions/s calls/s p99 errors server-CPU-us-per-call"
  local out before after
  before=$(cpu_ticks "$3")
  out=$("$LOADGEN" --target "$1" --rpc envoy --domain bench --uid user --cost 0 \
    --concurrency "$2" --channels "$CHANNELS" --threads "$THREADS" --keys "$KEYS" \
    --duration "$DURATION" --warmup "$WARMUP" --json) || true
  after=$(cpu_ticks "$3")
  [[ -z "$out" ]] && { echo "0 0 0 failed 0"; return; }
  # CPU over warmup + duration, calls over the duration: scale by the ratio.
  local cpu_us
  cpu_us=$(awk -v t=$((after - before)) -v hz="$TICK" -v c="$(json_num calls "$out")" \
    -v d="$DURATION" -v w="$WARMUP" 'function s(x) { return x ~ /ms$/ ? x / 1000 : x + 0 }
    BEGIN { if (c > 0) printf "%.1f", t / hz * 1e6 * s(d) / (s(d) + s(w)) / c; else print 0 }')
  echo "$(json_num decisions_per_s "$out") $(json_num calls_per_s "$out")" \
    "$(json_num p99 "$out") $(( $(json_num calls "$out" | cut -d. -f1) - $(json_num ok_calls "$out" | cut -d. -f1) ))" \
    "$cpu_us"
}
median() { sed '/^$/d' | sort -n -k1,1 | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }

echo "## Envoy RLS (ShouldRateLimit)"
echo
echo "One descriptor per call on a memory tenant (a 10^9/s limit, $KEYS distinct values),"
echo "against the no-op server's ShouldRateLimit (an empty RateLimitResponse) in the"
echo "same run: medians of $ROUNDS interleaved ${DURATION} runs, $CHANNELS channel(s),"
echo "$THREADS load generator thread(s)."
echo
echo "| server | in flight | calls/s | decisions/s | p99 (us) | errors | server CPU per call (us) | ratio to no-op |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
ratio=nan
for c in $CONCURRENCIES; do
  noop_runs="" rls_runs=""
  for round in $(seq "$ROUNDS"); do
    log "concurrency=$c round $round/$ROUNDS"
    noop_runs+="$(run_one "$NOOP_ADDR" "$c" "$NOOP_PID")"$'\n'
    rls_runs+="$(run_one "$TRAFFIKD_ADDR" "$c" "$TRAFFIKD_PID")"$'\n'
  done
  read -r _ nc np ne ncpu < <(printf '%s' "$noop_runs" | median)
  read -r td tc tp te tcpu < <(printf '%s' "$rls_runs" | median)
  ratio=$(awk -v a="$td" -v b="$nc" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
  echo "| no-op server | $c | $(printf '%.0f' "$nc") | - | $np | $ne | $ncpu | - |"
  echo "| traffikd memory | $c | $(printf '%.0f' "$tc") | $(printf '%.0f' "$td") | $tp | $te | $tcpu | $ratio |"
  if [[ -n ${RESULTS_KV:-} ]]; then
    {
      echo "envoy${c}_ratio=$ratio"
      echo "envoy${c}_noop_cpu_us=$ncpu"
      echo "envoy${c}_traffikd_cpu_us=$tcpu"
      echo "envoy${c}_cpu_ratio=$(awk -v a="$tcpu" -v b="$ncpu" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')"
    } >>"$RESULTS_KV"
  fi
done
echo
echo "The load generator shares the machine; \"server CPU per call\" (the server's"
echo "user + system time over the run divided by its calls) does not depend on how"
echo "fast the load generator is, and compares the two servers' own cost."
echo
echo "ratio=$ratio"
