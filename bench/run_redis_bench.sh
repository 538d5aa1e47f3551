#!/usr/bin/env bash
# Measures traffikd's decision throughput, latency and CPU per decision against
# its ceiling, the no-op server.
#
#   bash bench/run_redis_bench.sh [BUILD_DIR]        (default: build)
#
# Starts, on 127.0.0.1 only and on free ports: its own redis-server, the
# traffik_noop_server (same gRPC stack, zero work: the ceiling) and traffikd
# with two tenants (`default` on that Redis, `mem` on the memory backend). Then
# runs traffik_loadgen (ShouldThrottle, closed loop) at each concurrency against
# noop, memory and redis, and redis-benchmark on the same EVALSHA traffikd sends.
# Prints a Markdown report on stdout (progress on stderr); everything it started
# is stopped on exit; any failed run makes it exit non-zero. Needs:
# BUILD_DIR/{bench/traffik_loadgen, bench/traffik_noop_server,
# bench/traffik_print_script, server/traffikd}, redis-server, redis-cli,
# redis-benchmark (and taskset with PIN=1).
#
# Per run, over the measured window: the server's CPU (user + system of the
# no-op server or traffikd, /proc/PID/stat, read by the load generator at the
# window's edges) divided by the decisions in it, and the load generator's own
# CPU. For Redis rows, around the whole run: redis-server's `INFO cpu`
# (used_cpu_user + used_cpu_sys) delta and its `INFO commandstats` script time
# (cmdstat_eval*/fcall* usec) delta, each divided by every decision of the run
# (warmup and drain included), and the script calls per decision.
#
# Environment (defaults): DURATION=10s WARMUP=1s CONCURRENCIES="1 16 64 256"
# ROUNDS=3 (runs per target and concurrency, interleaved; every column is the
# median over the rounds) TARGETS="noop memory redis redis_hot batch10 batch100"
# (redis_hot: the Redis tenant with every call on one identifier, a hot key
# such as a global limit; batchN: ShouldThrottleBatch of N items on the memory
# tenant; its ratio is decisions/s over the single-call memory figure) CHANNELS=4 THREADS=2 (load generator
# connections and completion-queue threads; run_all.sh picks them from its
# scaling table) KEYS=1000 (distinct identifiers; 1 = one hot key)
# RB_REQUESTS=200000 (redis-benchmark -n) POOL_SIZE= (if set, the Redis
# tenant's `redis: pool_size`; traffikd's default, 2, otherwise) PIN=0 (1: the load generator and
# redis-benchmark on CPU LOADGEN_CPU=0, every server and Redis on SERVER_CPU=1)
# DATA_FILE= (if set, one TSV row per target and concurrency is appended:
# target concurrency calls_per_s decisions_per_s p50_us p99_us
# server_cpu_us_per_decision redis_cpu_us_per_decision)
# RESULTS_KV= (if set, name=value lines are appended to it; PREFIX= is put
# before each name, e.g. PREFIX=pinned_) RUNS_FILE= (if set, every single run is
# appended as "target concurrency round" and the FIELDS below) RB=1 (0 skips
# redis-benchmark).
set -euo pipefail

BUILD_DIR=${1:-build}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCIES=${CONCURRENCIES:-"1 16 64 256"}
CHANNELS=${CHANNELS:-4}
THREADS=${THREADS:-2}
KEYS=${KEYS:-1000}
RB_REQUESTS=${RB_REQUESTS:-200000}
TARGETS=${TARGETS:-"noop memory redis redis_hot batch10 batch100"}
ROUNDS=${ROUNDS:-3}
DATA_FILE=${DATA_FILE:-}
RESULTS_KV=${RESULTS_KV:-}
PREFIX=${PREFIX:-}
RUNS_FILE=${RUNS_FILE:-}
RB=${RB:-1}
PIN=${PIN:-0}
LOADGEN_CPU=${LOADGEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}

LOADGEN="$BUILD_DIR/bench/traffik_loadgen"
NOOP="$BUILD_DIR/bench/traffik_noop_server"
PRINT_SCRIPT="$BUILD_DIR/bench/traffik_print_script"
TRAFFIKD="$BUILD_DIR/server/traffikd"
log() { echo "run_redis_bench: $*" >&2; }
die() { log "$*"; exit 1; }
for bin in "$LOADGEN" "$NOOP" "$PRINT_SCRIPT" "$TRAFFIKD"; do
  [[ -x "$bin" ]] || die "missing $bin (build it first)"
done
for tool in redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
SRV=() CLI=()
if [[ $PIN == 1 ]]; then
  command -v taskset >/dev/null || die "PIN=1 needs taskset (util-linux)"
  SRV=(taskset -c "$SERVER_CPU") CLI=(taskset -c "$LOADGEN_CPU")
  PLACEMENT="pinned: load generator and redis-benchmark on CPU $LOADGEN_CPU; no-op server, traffikd and redis-server on CPU $SERVER_CPU"
else
  PLACEMENT="shared: no pinning, the scheduler places every process"
fi

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup bench

# --- Redis on a free loopback port ------------------------------------------
bench_start_redis "${SRV[@]}" || die "cannot start redis-server"
log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
rcli() { timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# Waits for "listening grpc=HOST:PORT" in $1 (stderr of pid $2); prints HOST:PORT.
wait_listening() {
  local file=$1 pid=$2 addr=
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*listening grpc=\([^ ]*\).*/\1/p' "$file" | head -n1)
    [[ -n "$addr" ]] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "server did not start:"
  cat "$file" >&2
  return 1
}

# --- noop server and traffikd -------------------------------------------------
"${SRV[@]}" "$NOOP" --listen 127.0.0.1:0 2>"$WORK/noop.err" &
NOOP_PID=$!
PIDS+=("$NOOP_PID")
NOOP_ADDR=$(wait_listening "$WORK/noop.err" "$NOOP_PID")

bench_write_config "redis://127.0.0.1:$REDIS_PORT/0" mem=memory
"${SRV[@]}" "$TRAFFIKD" --config "$WORK/traffik.yaml" 2>"$WORK/traffikd.err" &
TRAFFIKD_PID=$!
PIDS+=("$TRAFFIKD_PID")
TRAFFIKD_ADDR=$(wait_listening "$WORK/traffikd.err" "$TRAFFIKD_PID")
log "noop on $NOOP_ADDR, traffikd on $TRAFFIKD_ADDR ($PLACEMENT)"

# --- loadgen runs --------------------------------------------------------------
json_num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2" | head -n1; }
json_errors() { sed -n 's/.*"errors":{\([^}]*\)}.*/\1/p' <<<"$1" | tr -d '"'; }
# "cpu_seconds script_usec script_calls" of redis-server, from INFO.
redis_counters() {
  rcli INFO all | tr -d '\r' | awk -F'[:,=]' '
    $1 == "used_cpu_sys" || $1 == "used_cpu_user" { cpu += $2 }
    $1 ~ /^cmdstat_(eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro)$/ {
      for (i = 2; i < NF; i++) {
        if ($i == "calls") calls += $(i + 1)
        if ($i == "usec") usec += $(i + 1)
      }
    }
    END { printf "%.6f %d %d\n", cpu, usec, calls }'
}

declare -A RUNS MED
ROWS=()
# $1 = target, $2 = concurrency; prints one line of numbers (see FIELDS).
FIELDS="decisions calls p50 p99 p999 errors server_us redis_cpu_us script_us script_calls loadgen_cores others_cores"
run_one() {
  local target=$1 c=$2 rpc=should_throttle batch=1 keys=$KEYS addr tenant pid out
  case $target in
    noop) addr=$NOOP_ADDR tenant='' pid=$NOOP_PID ;;
    memory) addr=$TRAFFIKD_ADDR tenant=mem pid=$TRAFFIKD_PID ;;
    redis) addr=$TRAFFIKD_ADDR tenant=default pid=$TRAFFIKD_PID ;;
    redis_hot) addr=$TRAFFIKD_ADDR tenant=default pid=$TRAFFIKD_PID keys=1 ;;
    batch*) addr=$TRAFFIKD_ADDR tenant=mem rpc=batch batch=${target#batch} pid=$TRAFFIKD_PID ;;
    *) die "unknown target $target" ;;
  esac
  local before after
  before=$(redis_counters)
  if ! out=$("${CLI[@]}" "$LOADGEN" --target "$addr" --concurrency "$c" --channels "$CHANNELS" \
    --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" \
    --rpc "$rpc" --batch-size "$batch" --tenant "$tenant" --uid bench --limit 0 \
    --keys "$keys" --watch-pid "server=$pid" --watch-pid "redis=$REDIS_PID" --json 2>"$WORK/loadgen.err"); then
    log "loadgen failed against $target at $c in flight:"
    cat "$WORK/loadgen.err" >&2
    echo "$out" >&2
    return 1
  fi
  after=$(redis_counters)
  local errs
  errs=$(json_errors "$out")
  [[ -n $errs ]] && log "errors against $target at $c in flight: $errs"
  awk -v d="$(json_num decisions_per_s "$out")" -v calls="$(json_num calls_per_s "$out")" \
    -v p50="$(json_num p50 "$out")" -v p99="$(json_num p99 "$out")" \
    -v p999="$(json_num p999 "$out")" -v errs="$(json_num calls "$out") $(json_num ok_calls "$out")" \
    -v dur="$(json_num duration_s "$out")" -v win="$(json_num window_s "$out")" \
    -v server="$(json_num server "$out")" -v lg="$(json_num loadgen "$out")" \
    -v machine="$(json_num machine "$out")" -v rwin="$(json_num redis "$out")" \
    -v all="$(json_num all_decisions "$out")" -v before="$before" -v after="$after" \
    -v redis="$([[ $target == redis* ]] && echo 1 || echo 0)" 'BEGIN {
      split(errs, e, " "); split(before, b, " "); split(after, a, " ")
      decided = d * dur
      server_us = decided > 0 ? server * 1e6 / decided : 0
      rc = "-"; rs = "-"; rn = "-"
      if (redis && all > 0) {
        rc = sprintf("%.2f", (a[1] - b[1]) * 1e6 / all)
        rs = sprintf("%.2f", (a[2] - b[2]) / all)
        rn = sprintf("%.3f", (a[3] - b[3]) / all)
      }
      others = win > 0 ? (machine - server - lg - rwin) / win : 0
      printf "%.1f %.1f %d %d %d %d %.2f %s %s %s %.2f %.2f\n", d, calls, p50, p99, p999,
        e[1] - e[2], server_us, rc, rs, rn, (win > 0 ? lg / win : 0), (others < 0 ? 0 : others) }'
}
# Median of column $1 (1-based) over the lines on stdin ("-" when none is numeric).
median_col() {
  awk -v k="$1" '$k != "-" { v[++n] = $k } END {
    if (n == 0) { print "-"; exit }
    for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > x + 0; j--) v[j + 1] = v[j]; v[j + 1] = x }
    print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'
}
label_of() {
  case $1 in
    noop) echo "no-op server (ceiling)" ;;
    memory) echo "traffikd memory" ;;
    redis) echo "traffikd Redis" ;;
    redis_hot) echo "traffikd Redis, one hot key" ;;
    batch*) echo "traffikd memory, batch of ${1#batch}" ;;
  esac
}
kv() { [[ -z $RESULTS_KV ]] || echo "$PREFIX$1=$2" >>"$RESULTS_KV"; }
fmt0() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.0f", v }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "nan" }'; }

for c in $CONCURRENCIES; do
  # Interleave the targets and repeat: each figure is the median of ROUNDS runs,
  # so a burst of noise on the shared machine moves one run, not the result.
  for round in $(seq "$ROUNDS"); do
    for target in $TARGETS; do
      log "loadgen $target concurrency=$c round $round/$ROUNDS ($WARMUP + $DURATION)"
      line=$(run_one "$target" "$c") || exit 1
      RUNS[$target]+="$line"$'\n'
      [[ -z $RUNS_FILE ]] || echo "$target $c $round $line" >>"$RUNS_FILE"
    done
  done
  for target in $TARGETS; do
    i=0
    for f in $FIELDS; do
      i=$((i + 1))
      MED[$target,$c,$f]=$(printf '%s' "${RUNS[$target]}" | median_col "$i")
    done
    RUNS[$target]=""
  done
  for target in $TARGETS; do
    m() { echo "${MED[$target,$c,$1]}"; }
    n=$target$c
    [[ $target == batch* ]] && n=${target}_$c
    if [[ $target == batch* ]]; then
      ratio=$(div "$(m decisions)" "${MED[memory,$c,decisions]:--}")
      [[ $ratio != nan ]] && ratio="$ratio x memory single"
    else
      ratio=$(div "$(m decisions)" "${MED[noop,$c,calls]:--}")
    fi
    ROWS+=("| $(label_of "$target") | $c | $(fmt0 "$(m calls)") | $(fmt0 "$(m decisions)") | $(m p50) | $(m p99) | $(m p999) | $(m errors) | $(m server_us) | $(m redis_cpu_us) | $(m script_us) | $(m script_calls) | $(m loadgen_cores) | $(m others_cores) | $ratio |")
    if [[ -n $DATA_FILE ]]; then
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$c" "$(m calls)" "$(m decisions)" \
        "$(m p50)" "$(m p99)" "$(m server_us)" "$(m redis_cpu_us)" >>"$DATA_FILE"
    fi
    kv "${n}_calls_per_s" "$(m calls)"
    kv "${n}_decisions_per_s" "$(m decisions)"
    kv "${n}_p50_us" "$(m p50)"
    kv "${n}_p99_us" "$(m p99)"
    kv "${n}_server_cpu_us" "$(m server_us)"
    kv "${n}_loadgen_cores" "$(m loadgen_cores)"
    kv "${n}_others_cores" "$(m others_cores)"
    if [[ $target == redis* ]]; then
      kv "${target}${c}_redis_cpu_us" "$(m redis_cpu_us)"
      kv "${target}${c}_script_us" "$(m script_us)"
      kv "${target}${c}_script_calls_per_decision" "$(m script_calls)"
    fi
    if [[ $target != noop && $target != batch* ]]; then
      kv "${target}${c}_ratio" "$(div "$(m decisions)" "${MED[noop,$c,calls]:--}")"
      kv "traffikd_${target}${c}_cpu_ratio" \
        "$(div "$(m server_us)" "${MED[noop,$c,server_us]:--}")"
    fi
  done
done

# --- redis-benchmark on the same script ---------------------------------------
SHA=$("$PRINT_SCRIPT" | rcli -x SCRIPT LOAD)
[[ "$SHA" =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD failed: $SHA"
RB_ROWS=()
rb() {  # $1 = clients, $2 = requests, $3 = pipeline
  local line rps p50 p99 before after cpu_us
  log "redis-benchmark -c $1 -n $2 -P $3 EVALSHA"
  before=$(redis_counters)
  line=$(timeout 120 "${CLI[@]}" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$1" -n "$2" \
    -P "$3" --csv EVALSHA "$SHA" 1 key 100000 1000 1 | tail -n1 | tr -d '"') ||
    die "redis-benchmark failed"
  after=$(redis_counters)
  cpu_us=$(awk -v b="$before" -v a="$after" -v n="$2" \
    'BEGIN { split(b, x, " "); split(a, y, " "); printf "%.2f", (y[1] - x[1]) * 1e6 / n }')
  # "test,rps,avg_latency_ms,min_latency_ms,p50_latency_ms,p95_latency_ms,p99_latency_ms,max"
  IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
  [[ -n $rps ]] || die "redis-benchmark printed nothing"
  p50=$(awk -v v="$p50" 'BEGIN { printf "%.0f", v * 1000 }')
  p99=$(awk -v v="$p99" 'BEGIN { printf "%.0f", v * 1000 }')
  RB_ROWS+=("| redis-benchmark EVALSHA -P $3 | $1 | $(printf '%.0f' "$rps") | $p50 | $p99 | $cpu_us |")
  if [[ $1 == 1 && $3 == 1 ]]; then kv rb_evalsha_p50_us "$p50"; fi
  if [[ $1 == 64 && $3 == 1 ]]; then kv rb_evalsha64_cpu_us "$cpu_us"; fi
}
if [[ $RB == 1 ]]; then
  rb 1 $((RB_REQUESTS / 4)) 1
  rb 64 "$RB_REQUESTS" 1
  rb 64 "$RB_REQUESTS" 16
fi

RB_SECTION=
if [[ $RB == 1 ]]; then
  RB_SECTION=$(cat <<RBMD
Redis alone (\`redis-benchmark -c C -n N -P P EVALSHA <sha> 1 key 100000 1000 1\`, the script
traffikd sends for one decision, one hot key; latency from its percentiles, ms rounded to µs;
Redis CPU = \`INFO cpu\` delta ÷ N):

| target | clients | calls/s | p50 us | p99 us | Redis CPU µs/call |
| --- | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${RB_ROWS[@]}")
RBMD
)
fi

# --- report ---------------------------------------------------------------------
cat <<MD
Run at $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores ($(uname -m)), load average at end: $(cut -d' ' -f1-3 /proc/loadavg).
Placement: $PLACEMENT.

Load generator: closed loop, ShouldThrottle on the configured throttle \`bench\` (1000000 per
1s, never throttles), $KEYS distinct identifiers round robin (the "one hot key" row: 1), $CHANNELS channel(s), $THREADS
completion-queue thread(s), warmup $WARMUP, measured $DURATION, deadline 1 s. Every column is the
median over $ROUNDS interleaved runs (no-op and traffikd alternate). Latency in microseconds (OK
calls). Ratio = decisions/s divided by the no-op server's calls/s at the same concurrency
(batch rows: divided by the single-call memory decisions/s at the same concurrency).
CPU columns, in µs per decision: *server* = the no-op server's or traffikd's user + system
time over the measured window ÷ its decisions; *Redis* = redis-server's \`INFO cpu\`
(used_cpu_user + used_cpu_sys) delta over the run ÷ every decision of the run; *script* =
\`INFO commandstats\` script time (cmdstat_evalsha usec) on the same basis, with script
calls per decision beside it (below 1 when decisions are coalesced). *loadgen cores* = the
load generator's CPU over the window ÷ the window: below its $THREADS thread(s) and the
machine's cores, it is not what limits the figure. *other processes* = the whole machine's
busy CPU (/proc/stat) over the window minus the server's, Redis' and the load generator's,
÷ the window: well above 0, something else on the machine took CPU from the run.

| target | in flight | calls/s | decisions/s | p50 us | p99 us | p99.9 us | errors | server CPU µs/decision | Redis CPU µs/decision | script µs/decision | script calls/decision | loadgen cores | other processes, cores | ratio |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${ROWS[@]}")

$RB_SECTION
MD
