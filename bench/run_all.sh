#!/usr/bin/env bash
# Runs every Traffik benchmark and writes BENCHMARKS.md at the repository root,
# with the plot in bench/results/throughput.png and the raw outputs beside it.
#
#   bash bench/run_all.sh [BUILD_DIR]     (default: build-bench, a Release build)
#
# 1. Engine micro-benchmarks (Google Benchmark, no gRPC).
# 2. Memory backend RSS per bucket at 1M buckets.
# 3. The load generator's scaling table: no-op server calls/s at 64 in flight for
#    channels x threads in {1,2,4,8} x {1,2,4}; the smallest setting within 5%
#    of the best becomes CHANNELS x THREADS for everything below (unless set).
# 4. gRPC: no-op server vs traffikd (memory, Redis, batch of 10 and 100) at 1, 16,
#    64, 256 calls in flight with CPU per decision, and redis-benchmark on the
#    same script (bench/run_redis_bench.sh); then, pinned (load generator on one
#    CPU, servers and Redis on the other), no-op / memory / Redis at 1 and 64.
# 5. Envoy RLS (bench/run_envoy_bench.sh).
# 6. When present: bench/run_client_bench.sh, bench/run_http_bench.sh,
#    bench/run_idle_bench.sh (each: `bash script BUILD_DIR`, Markdown on stdout,
#    name=value lines appended to $RESULTS_KV).
# 7. The targets of issue 14, each measured and marked met / not met / not
#    measured, from the name=value lines in bench/results/results.kv.
# Everything runs on 127.0.0.1, is bounded in time and stops what it started;
# any failing step stops the run with a non-zero status. About 15 minutes with
# the defaults (plus the optional scripts); shorter with, e.g.,
# DURATION=1s ROUNDS=1 (quick check).
#
# Environment (defaults): DURATION=5s WARMUP=1s ROUNDS=3 (passed on to the
# scripts), CHANNELS / THREADS (default: chosen by the scaling table),
# SCALE_DURATION=2s SCALE_ROUNDS=2 (1s and 1 when ROUNDS=1), PINNED=1 (0 skips
# the pinned passes; skipped anyway on one core), STABILITY_ROUNDS=8 (2 when
# ROUNDS=1: alternating no-op / memory runs at 64 in flight, each run shown,
# shared and pinned), OPTIONAL=1 (0 skips step 6).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-bench}"
results="$root/bench/results"
mkdir -p "$results"
log() { echo "run_all: $(date -u +%T) $*" >&2; }
die() { log "$*"; exit 1; }

# What the caller set (passed on to the other helpers' scripts, which have
# their own defaults otherwise).
USER_DURATION=${DURATION:-} USER_WARMUP=${WARMUP:-} USER_ROUNDS=${ROUNDS:-}
export DURATION="${DURATION:-5s}" WARMUP="${WARMUP:-1s}" ROUNDS="${ROUNDS:-3}"
# "5s", "500ms", "2m" or a bare number of seconds, rounded up to whole seconds (at least 1).
whole_seconds() {
  awk -v d="$1" 'BEGIN {
    v = d + 0
    if (d ~ /ms$/) v /= 1000; else if (d ~ /m$/) v *= 60
    s = int(v); if (s < v) s++; if (s < 1) s = 1; print s }'
}
if [[ $ROUNDS -le 1 ]]; then
  SCALE_DURATION=${SCALE_DURATION:-1s} SCALE_ROUNDS=${SCALE_ROUNDS:-1}
else
  SCALE_DURATION=${SCALE_DURATION:-2s} SCALE_ROUNDS=${SCALE_ROUNDS:-2}
fi
PINNED=${PINNED:-1}
if [[ $ROUNDS -le 1 ]]; then STABILITY_ROUNDS=${STABILITY_ROUNDS:-2}; else STABILITY_ROUNDS=${STABILITY_ROUNDS:-8}; fi
OPTIONAL=${OPTIONAL:-1}
export RESULTS_KV="$results/results.kv"
: >"$RESULTS_KV"
kv() { echo "$1=$2" >>"$RESULTS_KV"; }
# The last value recorded for name $1 ("" when none).
get() { awk -F= -v k="$1" '$1 == k { v = substr($0, length(k) + 2) } END { print v }' "$RESULTS_KV"; }

bash "$root/.ci/deps"
if ! command -v gnuplot >/dev/null; then
  log "installing gnuplot-nox"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi
# A new tree is a Release build; an existing one keeps its build type.
build_type=()
[[ -f $build/CMakeCache.txt ]] || build_type=(-DCMAKE_BUILD_TYPE=Release)
log "building into $build"
cmake -S "$root" -B "$build" "${build_type[@]}" -DTRAFFIK_BUILD_TESTS=OFF >/dev/null
targets=(traffikd traffik_loadgen traffik_noop_server traffik_print_script
  traffik_engine_bench traffik_bucket_memory)
# The optional scripts' programs, when this tree has them.
available=$(cmake --build "$build" --target help | sed -n 's/^\.\.\. \([a-z_]*\).*/\1/p')
for t in traffik_client_bench traffik_http_app traffik_idle_conns; do
  grep -qx "$t" <<<"$available" && targets+=("$t")
done
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null
build_type_used=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")

# Processes this script starts itself (the scaling table's no-op server).
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup run-all

log "engine micro-benchmarks"
"$build/bench/traffik_engine_bench" --benchmark_min_time=0.5 2>/dev/null |
  grep '^BM_' >"$results/engine.txt"
ns_of() {  # the real time of benchmark $1, in ns
  awk -v name="$1" '$1 == name {
    t = $2; u = $3
    if (u == "us") t *= 1000; else if (u == "ms") t *= 1000000
    printf "%.1f", t }' "$results/engine.txt"
}

log "RSS per bucket at 1M buckets"
"$build/bench/traffik_bucket_memory" 1000000 >"$results/memory.txt"
bytes_per_bucket=$(sed -n 's/.*bytes_per_bucket=\([0-9.]*\).*/\1/p' "$results/memory.txt")

# --- 3. scaling table -------------------------------------------------------------
log "load generator scaling table (no-op server, 64 in flight)"
"$build/bench/traffik_noop_server" --listen 127.0.0.1:0 2>"$WORK/noop.err" &
NOOP_PID=$!
PIDS+=("$NOOP_PID")
NOOP_ADDR=
for _ in $(seq 100); do
  NOOP_ADDR=$(sed -n 's/.*listening grpc=\([^ ]*\).*/\1/p' "$WORK/noop.err" | head -n1)
  [[ -n $NOOP_ADDR ]] && break
  kill -0 "$NOOP_PID" 2>/dev/null || break
  sleep 0.1
done
[[ -n $NOOP_ADDR ]] || { cat "$WORK/noop.err" >&2; die "the no-op server did not start"; }
json_num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2" | head -n1; }
declare -A SCALE
settings=()
for ch in 1 2 4 8; do for th in 1 2 4; do settings+=("$ch:$th"); done; done
for _ in $(seq "$SCALE_ROUNDS"); do
  for s in "${settings[@]}"; do
    ch=${s%:*} th=${s#*:}
    # One retry: a run on a busy machine can time every call out.
    for attempt in 1 2; do
      if out=$("$build/bench/traffik_loadgen" --target "$NOOP_ADDR" --concurrency 64 \
        --channels "$ch" --threads "$th" --keys 1000 --duration "$SCALE_DURATION" \
        --warmup 500ms --watch-pid "server=$NOOP_PID" --json 2>"$WORK/loadgen.err"); then
        break
      fi
      log "loadgen failed at $ch channels x $th threads (attempt $attempt): $(cat "$WORK/loadgen.err") $out"
      kill -0 "$NOOP_PID" 2>/dev/null || die "the no-op server died: $(cat "$WORK/noop.err")"
      [[ $attempt == 2 ]] && die "loadgen failed twice at $ch channels x $th threads"
    done
    SCALE[$s]+="$(json_num calls_per_s "$out") $(json_num p50 "$out") $(json_num p99 "$out")"
    SCALE[$s]+=" $(awk -v c="$(json_num server "$out")" -v n="$(json_num calls "$out")" \
      'BEGIN { printf "%.2f", (n > 0 ? c * 1e6 / n : 0) }')"
    SCALE[$s]+=" $(awk -v c="$(json_num loadgen "$out")" -v w="$(json_num window_s "$out")" \
      'BEGIN { printf "%.2f", (w > 0 ? c / w : 0) }')"$'\n'
  done
done
kill "$NOOP_PID" 2>/dev/null || true
wait "$NOOP_PID" 2>/dev/null || true
median_col() {  # median of column $1 over the lines on stdin
  sed '/^$/d' | sort -g -k"$1,$1" | awk -v k="$1" '{ v[NR] = $k } END {
    print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
best=0
declare -A SCALE_MED
for s in "${settings[@]}"; do
  for k in 1 2 3 4 5; do SCALE_MED[$s,$k]=$(printf '%s' "${SCALE[$s]}" | median_col "$k"); done
  best=$(awk -v a="$best" -v b="${SCALE_MED[$s,1]}" 'BEGIN { print (b > a) ? b : a }')
done
# The cheapest setting (fewest channels x threads, then fewest threads) within 5%
# of the best: beyond it, more load generator does not raise the figure.
chosen=$(for s in "${settings[@]}"; do
  ch=${s%:*} th=${s#*:}
  awk -v r="${SCALE_MED[$s,1]}" -v b="$best" -v ch="$ch" -v th="$th" \
    'BEGIN { if (r >= 0.95 * b) print ch * th, th, ch ":" th }'
done | sort -n -k1,1 -k2,2 | head -n1 | cut -d' ' -f3)
CHOSEN_CH=${chosen%:*} CHOSEN_TH=${chosen#*:}
export CHANNELS="${CHANNELS:-$CHOSEN_CH}" THREADS="${THREADS:-$CHOSEN_TH}"
best_setting=$(for s in "${settings[@]}"; do echo "${SCALE_MED[$s,1]} $s"; done | sort -g | tail -n1 | cut -d' ' -f2)
kv scale_best_calls_per_s "$best"
kv scale_chosen "$CHOSEN_CH"x"$CHOSEN_TH"
{
  echo "| channels × threads | no-op calls/s | p50 us | p99 us | no-op CPU µs/call | loadgen cores |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for s in "${settings[@]}"; do
    ch=${s%:*} th=${s#*:} mark=""
    [[ $s == "$chosen" ]] && mark="**"
    printf '| %s | %.0f | %.0f | %.0f | %.1f | %.2f |\n' "$mark$ch × $th$mark" "${SCALE_MED[$s,1]}" \
      "${SCALE_MED[$s,2]}" "${SCALE_MED[$s,3]}" "${SCALE_MED[$s,4]}" "${SCALE_MED[$s,5]}"
  done
} >"$results/scaling.md"
if [[ $best_setting == "8:4" ]]; then
  scale_note="The best figure is at the largest setting (8 × 4): the no-op figure may still be rising, so the load generator could still be the limit on this run."
else
  scale_note="The best figure is at ${best_setting/:/ × }; the smallest setting within 5% of it is **${CHOSEN_CH} × ${CHOSEN_TH}**: in this run, more channels or threads did not raise the no-op figure by more than 5%."
fi
log "scaling: best $(printf '%.0f' "$best") calls/s at $best_setting; using $CHANNELS channels x $THREADS threads"

# --- 4. gRPC ----------------------------------------------------------------------
log "gRPC load, shared placement (about 8 minutes with the defaults)"
: >"$results/throughput.tsv"
DATA_FILE="$results/throughput.tsv" bash "$root/bench/run_redis_bench.sh" "$build" \
  >"$results/grpc.md"
pinned_md=""
if [[ $PINNED == 1 && $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
  log "gRPC load, pinned placement"
  PIN=1 PREFIX=pinned_ CONCURRENCIES="1 64" TARGETS="noop memory redis" RB_REQUESTS=50000 \
    bash "$root/bench/run_redis_bench.sh" "$build" >"$results/grpc-pinned.md"
  pinned_md="### Pinned

Command: \`PIN=1 CONCURRENCIES=\"1 64\" TARGETS=\"noop memory redis\" CHANNELS=$CHANNELS THREADS=$THREADS DURATION=$DURATION ROUNDS=$ROUNDS bash bench/run_redis_bench.sh BUILD_DIR\`

$(cat "$results/grpc-pinned.md")"
else
  log "skipping the pinned pass (PINNED=$PINNED, $(nproc) CPU(s))"
fi

# --- run-to-run stability: every run of no-op / memory at 64 in flight ------------
stability_pass() {  # $1 = shared|pinned
  local pin=0
  [[ $1 == pinned ]] && pin=1
  log "stability ($1): $STABILITY_ROUNDS alternating no-op / memory runs at 64 in flight"
  PIN=$pin RB=0 PREFIX="stability_$1_" RUNS_FILE="$results/stability-$1.runs" TARGETS="noop memory" \
    CONCURRENCIES=64 ROUNDS="$STABILITY_ROUNDS" DURATION="$SCALE_DURATION" WARMUP=500ms \
    bash "$root/bench/run_redis_bench.sh" "$build" >/dev/null
}
# One summary row per target: calls/s and server CPU per call, min / median /
# max, and how calls/s follows the CPU other processes took (Pearson r).
stability_rows() {  # $1 = shared|pinned
  local t
  for t in noop memory; do
    awk -v t="$t" -v place="$1" '$1 == t { n++; c[n] = $5; u[n] = $10; o[n] = $15 }
      function sort(a, m,   i, j, x) { for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x } }
      function med(a, m) { return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
      END {
        if (n == 0) exit
        for (i = 1; i <= n; i++) { sc += c[i]; so += o[i] }
        mc = sc / n; mo = so / n
        for (i = 1; i <= n; i++) { cov += (c[i] - mc) * (o[i] - mo); vc += (c[i] - mc) ^ 2; vo += (o[i] - mo) ^ 2 }
        r = (vc > 0 && vo > 0) ? sprintf("%.2f", cov / sqrt(vc * vo)) : "-"
        for (i = 1; i <= n; i++) { cs[i] = c[i]; us[i] = u[i]; os[i] = o[i] }
        sort(cs, n); sort(us, n); sort(os, n)
        printf "| %s | %s | %d | %.0f / %.0f / %.0f | %.2f | %.1f / %.1f / %.1f | %.2f | %.2f / %.2f | %s |\n",
          place, (t == "noop" ? "no-op" : "traffikd memory"), n, cs[1], med(cs, n), cs[n],
          (cs[1] > 0 ? cs[n] / cs[1] : 0), us[1], med(us, n), us[n], (us[1] > 0 ? us[n] / us[1] : 0),
          med(os, n), os[n], r }' "$results/stability-$1.runs"
  done
}
: >"$results/stability-shared.runs"
: >"$results/stability-pinned.runs"
stability_pass shared
STABILITY_ROWS=("$(stability_rows shared)")
if [[ $PINNED == 1 && $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
  stability_pass pinned
  STABILITY_ROWS+=("$(stability_rows pinned)")
fi

log "Envoy RLS (ShouldRateLimit) against the no-op server"
bash "$root/bench/run_envoy_bench.sh" "$build" >"$results/envoy.md"
envoy_ratio=$(sed -n 's/^ratio=//p' "$results/envoy.md")

# --- 6. the other helpers' benchmarks -----------------------------------------------
optional_md=""
for name in client http idle; do
  script="$root/bench/run_${name}_bench.sh"
  if [[ $OPTIONAL != 1 || ! -f $script ]]; then
    log "not running bench/run_${name}_bench.sh ($([[ -f $script ]] && echo OPTIONAL=0 || echo absent))"
    continue
  fi
  # Each script keeps its own defaults unless DURATION / WARMUP / ROUNDS were set
  # for this run (the client benchmark takes whole seconds).
  script_env=(-u DURATION -u WARMUP -u ROUNDS)
  if [[ -n $USER_DURATION ]]; then
    if [[ $name == client ]]; then
      script_env+=(DURATION="$(whole_seconds "$USER_DURATION")")
    else
      script_env+=(DURATION="$USER_DURATION")
    fi
  fi
  if [[ -n $USER_WARMUP ]]; then
    if [[ $name == client ]]; then
      script_env+=(WARMUP="$(whole_seconds "$USER_WARMUP")")
    else
      script_env+=(WARMUP="$USER_WARMUP")
    fi
  fi
  [[ -n $USER_ROUNDS ]] && script_env+=(ROUNDS="$USER_ROUNDS")
  log "bench/run_${name}_bench.sh (${script_env[*]})"
  env "${script_env[@]}" bash "$script" "$build" >"$results/$name.md" ||
    die "bench/run_${name}_bench.sh failed"
  optional_md+="
Command: \`bash bench/run_${name}_bench.sh BUILD_DIR\`

$(sed 's/^# /### /; s/^## /### /' "$results/$name.md")
"
done

# --- plot -----------------------------------------------------------------------
for t in noop memory redis batch10 batch100; do
  awk -v t="$t" -F'\t' '$1 == t { print $2, $4, $6 }' "$results/throughput.tsv" \
    >"$results/$t.dat"
done
cat >"$results/plot.gp" <<GP
set terminal pngcairo size 1200,480 font ",10"
set output "throughput.png"
set multiplot layout 1,2 title "Traffik on $(nproc) cores (client, server and Redis on one machine)"
set logscale x 2
set xrange [0.8:330]
set xtics (1, 16, 64, 256)
set xlabel "calls in flight"
set key left top
set grid
set logscale y 10
set ylabel "decisions/s"
set title "Throughput"
plot "noop.dat" using 1:2 with linespoints title "no-op server (calls/s)", \
     "memory.dat" using 1:2 with linespoints title "traffikd memory", \
     "redis.dat" using 1:2 with linespoints title "traffikd Redis", \
     "batch10.dat" using 1:2 with linespoints title "batch of 10 (memory)", \
     "batch100.dat" using 1:2 with linespoints title "batch of 100 (memory)"
set title "p99 latency per call"
set ylabel "p99 (us)"
plot "noop.dat" using 1:3 with linespoints title "no-op server", \
     "memory.dat" using 1:3 with linespoints title "traffikd memory", \
     "redis.dat" using 1:3 with linespoints title "traffikd Redis", \
     "batch10.dat" using 1:3 with linespoints title "batch of 10", \
     "batch100.dat" using 1:3 with linespoints title "batch of 100"
unset multiplot
GP
(cd "$results" && gnuplot plot.gp)

# --- 7. targets ---------------------------------------------------------------------
# row NAME MEASURED OP TARGET: OP is ge or le; an empty or non-numeric
# measurement is "not measured".
row() {
  local verdict sign="≥"
  [[ $3 == le ]] && sign="≤"
  verdict=$(awk -v m="$2" -v t="$4" -v op="$3" 'BEGIN {
    if (m !~ /^-?[0-9.]+$/ || t !~ /^-?[0-9.]+$/) { print "not measured"; exit }
    if ((op == "ge" && m + 0 >= t + 0) || (op == "le" && m + 0 <= t + 0)) print "met"
    else print "**not met**" }')
  echo "| $1 | ${2:--} | $sign ${4:-?} | $verdict |"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "" }'; }
sum() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/) printf "%.0f", a + b + c; else print "" }'; }
redis1_bound=$(sum "$(get noop1_p50_us)" "$(get rb_evalsha_p50_us)" 20)
kv redis1_p50_bound_us "$redis1_bound"
pinned_redis1_bound=$(sum "$(get pinned_noop1_p50_us)" "$(get pinned_rb_evalsha_p50_us)" 20)
kv pinned_redis1_p50_bound_us "$pinned_redis1_bound"
kv redis_cpu_us_per_decision "$(get redis64_redis_cpu_us)"
kv redis_script_us_per_decision "$(get redis64_script_us)"
kv traffikd_memory_cpu_ratio "$(get traffikd_memory64_cpu_ratio)"
kv traffikd_redis_cpu_ratio "$(get traffikd_redis64_cpu_ratio)"
client_p99_ratio=$(ratio "$(get client_coalesced_p99_us)" "$(get client_unary_p99_us)")
TARGET_ROWS=(
  "$(row "Redis / no-op calls/s, 64 in flight" "$(get redis64_ratio)" ge 0.80)"
  "$(row "Redis p50 at 1 in flight (µs) ≤ no-op p50 $(get noop1_p50_us) + redis-benchmark EVALSHA p50 $(get rb_evalsha_p50_us) + 20" "$(get redis1_p50_us)" le "$redis1_bound")"
  "$(row "Redis server CPU per decision, 64 in flight (µs, INFO cpu)" "$(get redis64_redis_cpu_us)" le 3)"
  "$(row "traffikd CPU per decision, memory ÷ no-op CPU per call, 64 in flight" "$(get traffikd_memory64_cpu_ratio)" le 1.10)"
  "$(row "traffikd CPU per decision, Redis ÷ no-op CPU per call, 64 in flight" "$(get traffikd_redis64_cpu_ratio)" le 1.5)"
  "$(row "client library, coalesced ÷ unary decisions/s, 256 callers" "$(get client_coalesce_ratio)" ge 3)"
  "$(row "client library, coalesced p99 ÷ unary p99, 256 callers" "$client_p99_ratio" le 1.0)"
  "$(row "HTTP on cpp-httplib (a thread blocked per check), throttled (memory) ÷ unthrottled requests/s" "$(get http_memory_ratio)" ge 0.6)"
  "$(row "HTTP on cpp-httplib (a thread blocked per check), throttled (Redis) ÷ unthrottled requests/s" "$(get http_redis_ratio)" ge 0.45)"
  "$(row "HTTP on Beast (asynchronous checks), throttled (memory) ÷ unthrottled requests/s" "$(get http_beast_memory_ratio)" ge 0.6)"
  "$(row "HTTP on Beast (asynchronous checks), throttled (Redis) ÷ unthrottled requests/s" "$(get http_beast_redis_ratio)" ge 0.45)"
  "$(row "10,000 idle connections: calls/s with ÷ without" "$(get idle_ratio)" ge 0.9)"
  "$(row "pinned: Redis / no-op calls/s, 64 in flight" "$(get pinned_redis64_ratio)" ge 0.80)"
  "$(row "pinned: Redis p50 at 1 in flight (µs) ≤ no-op p50 $(get pinned_noop1_p50_us) + redis-benchmark EVALSHA p50 $(get pinned_rb_evalsha_p50_us) + 20" "$(get pinned_redis1_p50_us)" le "$pinned_redis1_bound")"
  "$(row "pinned: Redis server CPU per decision, 64 in flight (µs, INFO cpu)" "$(get pinned_redis64_redis_cpu_us)" le 3)"
  "$(row "pinned: traffikd CPU per decision, Redis ÷ no-op CPU per call, 64 in flight" "$(get pinned_traffikd_redis64_cpu_ratio)" le 1.5)"
)
# What the CPU allows: with the load generator, the server and Redis on the same
# cores, calls/s at 64 in flight is about cores ÷ (CPU per call of everything the
# call runs through). The ratio of those sums is the ratio the CPU permits; it shows
# whether a throughput ratio is missed for CPU or for something else (waiting).
budget=$(awk -v nc="$(get noop64_calls_per_s)" -v nl="$(get noop64_loadgen_cores)" \
  -v ns="$(get noop64_server_cpu_us)" -v rc="$(get redis64_calls_per_s)" \
  -v rl="$(get redis64_loadgen_cores)" -v rs="$(get redis64_server_cpu_us)" \
  -v rr="$(get redis64_redis_cpu_us)" 'BEGIN {
    if (nc + 0 <= 0 || rc + 0 <= 0 || ns == "" || rs == "" || rr == "") exit
    lgn = nl / nc * 1e6; lgr = rl / rc * 1e6
    cn = ns + lgn; cr = rs + rr + lgr
    at_targets = ns + lgn; at_targets_r = 1.5 * ns + 3 + lgn
    printf "%.1f %.1f %.1f %.1f %.2f %.1f %.2f\n", lgn, cn, lgr, cr, cn / cr, cn / 0.8 - lgn, at_targets / at_targets_r }')
if [[ -n $budget ]]; then
  read -r b_lgn b_cn b_lgr b_cr b_ratio b_need b_at_targets <<<"$budget"
  kv cpu_budget_ratio "$b_ratio"
  BUDGET_MD="### What the CPU allows

Load generator, server and Redis share $(nproc) cores, so at 64 in flight calls/s is
about cores ÷ the CPU every process spends per call. No-op: server $(get noop64_server_cpu_us) +
load generator $b_lgn = **$b_cn µs per call**. Redis: traffikd $(get redis64_server_cpu_us) +
redis-server $(get redis64_redis_cpu_us) + load generator $b_lgr = **$b_cr µs per decision**.
The ratio the CPU permits is $b_cn ÷ $b_cr = **$b_ratio** (measured: $(get redis64_ratio)).
For 0.80, traffikd + Redis together must cost at most $b_cn ÷ 0.8 − $b_lgn = **$b_need µs**
per decision; at exactly the two CPU targets (traffikd 1.5 × $(get noop64_server_cpu_us),
Redis 3 µs) the CPU would permit $b_at_targets."
else
  BUDGET_MD=""
fi
val() {  # target concurrency column(3 calls, 4 decisions, 6 p99)
  awk -v t="$1" -v c="$2" -v col="$3" -F'\t' '$1 == t && $2 == c { print $col }' \
    "$results/throughput.tsv"
}
EARLIER_ROWS=(
  "$(row "memory / no-op calls/s, 64 in flight" "$(get memory64_ratio)" ge 0.90)"
  "$(row "memory / no-op calls/s, 256 in flight" "$(get memory256_ratio)" ge 0.90)"
  "$(row "memory / no-op p99, 64 in flight" "$(ratio "$(val memory 64 6)" "$(val noop 64 6)")" le 1.2)"
  "$(row "memory / no-op p99, 256 in flight" "$(ratio "$(val memory 256 6)" "$(val noop 256 6)")" le 1.2)"
  "$(row "Envoy ShouldRateLimit memory / no-op ShouldRateLimit calls/s, 64 in flight" "$envoy_ratio" ge 0.90)"
  "$(row "batch of 100 / single decisions/s, 64 in flight" "$(ratio "$(val batch100 64 4)" "$(val memory 64 4)")" ge 20)"
  "$(row "engine: hot-key decision (ns)" "$(ns_of 'BM_MemoryHotKey/real_time/threads:1')" le 100)"
  "$(row "engine: 1M random keys, 1 thread (ns)" "$(ns_of 'BM_MemoryRandomKeys/1000000/real_time/threads:1')" le 400)"
  "$(row "memory per bucket at 1M buckets (bytes RSS)" "$bytes_per_bucket" le 200)"
)

cpu=$(sed -n 's/^model name\s*:\s*//p' /proc/cpuinfo | head -n1)
cat >"$root/BENCHMARKS.md" <<MD
# Benchmarks

Command: \`bash bench/run_all.sh\` (builds a Release tree in \`build-bench/\`, runs
everything on 127.0.0.1, rewrites this file; raw outputs and every figure as
\`name=value\` in \`bench/results/\`, \`results.kv\`). This run: build type ${build_type_used:-unset} ($build),
DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS, load generator $CHANNELS channel(s) × $THREADS
thread(s).

Machine: $(nproc) cores ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
RAM, $(. /etc/os-release && echo "$PRETTY_NAME"); load generator, servers and Redis share
it, so the throughput figures are ratios measured in the same run, and CPU per decision
(which does not depend on how fast the load generator is) is given beside them. Run on
$(date -u '+%Y-%m-%d %H:%M UTC'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg).

## Targets (issue 14)

| measure | measured | target | verdict |
| --- | ---: | ---: | --- |
$(printf '%s\n' "${TARGET_ROWS[@]}")

"not measured": the script that measures it (bench/run_client_bench.sh,
bench/run_http_bench.sh, bench/run_idle_bench.sh) is absent from this tree or printed no
figure. Rows without a prefix are the shared placement (the scheduler places every
process); "pinned:" rows repeat the gRPC targets with the load generator and
redis-benchmark on CPU 0 and the servers and Redis on CPU 1 (section "Pinned" below), as
the issue asks for both.

$BUDGET_MD

### Earlier targets

| measure | measured | target | verdict |
| --- | ---: | ---: | --- |
$(printf '%s\n' "${EARLIER_ROWS[@]}")

## Where the load generator stops being the limit

No-op server, 64 calls in flight, 1000 identifiers, medians of $SCALE_ROUNDS interleaved
$SCALE_DURATION runs per setting (shared placement); *no-op CPU µs/call* is the no-op
server's user + system time over the window ÷ its calls, *loadgen cores* the load
generator's CPU ÷ the window.

$(cat "$results/scaling.md")

$scale_note Every gRPC figure below uses $CHANNELS channel(s) × $THREADS thread(s).

## gRPC: no-op server, traffikd memory and Redis

![throughput and p99 against calls in flight](bench/results/throughput.png)

### Shared

Command: \`CHANNELS=$CHANNELS THREADS=$THREADS DURATION=$DURATION ROUNDS=$ROUNDS bash bench/run_redis_bench.sh BUILD_DIR\`

$(cat "$results/grpc.md")

$pinned_md

## Run-to-run stability (no-op and memory, 64 in flight)

Command: \`RUNS_FILE=FILE RB=0 TARGETS="noop memory" CONCURRENCIES=64 ROUNDS=$STABILITY_ROUNDS DURATION=$SCALE_DURATION WARMUP=500ms CHANNELS=$CHANNELS THREADS=$THREADS [PIN=1] bash bench/run_redis_bench.sh BUILD_DIR\`
(each run in \`bench/results/stability-{shared,pinned}.runs\`). *other processes* = the
machine's busy CPU over the window not used by the server or the load generator;
*r* = correlation between a run's calls/s and that CPU taken by other processes.

| placement | server | runs | calls/s min / median / max | max ÷ min | server CPU µs/call min / median / max | max ÷ min | other processes, cores median / max | r(calls/s, other) |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${STABILITY_ROWS[@]}")

$(sed '/^ratio=/d' "$results/envoy.md")

Command: \`CHANNELS=$CHANNELS THREADS=$THREADS DURATION=$DURATION ROUNDS=$ROUNDS bash bench/run_envoy_bench.sh BUILD_DIR\`
$([[ -n $optional_md ]] && printf '\n## Client library, HTTP and idle connections\n%s' "$optional_md")

## Engine (Google Benchmark, one process, no gRPC)

Command: \`traffik_engine_bench --benchmark_min_time=0.5\`

| benchmark | real time | CPU time | iterations |
| --- | ---: | ---: | ---: |
$(awk '{ printf "| %s | %s %s | %s %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$results/engine.txt")

Memory backend (\`traffik_bucket_memory 1000000\`): $(cat "$results/memory.txt").

$(cat "$root/bench/analysis.md")
MD
log "wrote $root/BENCHMARKS.md"
