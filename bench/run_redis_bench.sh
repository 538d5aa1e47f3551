#!/usr/bin/env bash
# Measures traffikd's decision throughput and latency against its ceiling.
#
#   bash bench/run_redis_bench.sh [BUILD_DIR]        (default: build)
#
# Starts, on 127.0.0.1 only and on free ports: its own redis-server, the
# traffik_noop_server (same gRPC stack, zero work: the ceiling) and traffikd
# with two tenants (`default` on that Redis, `mem` on the memory backend). Then
# runs traffik_loadgen (ShouldThrottle, closed loop) at each concurrency against
# noop, memory and redis, and redis-benchmark on the same EVALSHA traffikd sends.
# Prints a Markdown report on stdout (progress on stderr); everything it started
# is stopped on exit. Needs: BUILD_DIR/{bench/traffik_loadgen,
# bench/traffik_noop_server, bench/traffik_print_script, server/traffikd},
# redis-server, redis-cli, redis-benchmark.
#
# Environment (defaults): DURATION=10s WARMUP=1s CONCURRENCIES="1 16 64 256"
# ROUNDS=3 (runs per target and concurrency, interleaved; the median is reported)
# TARGETS="noop memory redis batch10 batch100" (batchN: ShouldThrottleBatch of N
# items on the memory tenant; its ratio is decisions/s over the single-call
# memory figure) DATA_FILE= (if set, one TSV row per run is appended:
# target concurrency calls_per_s decisions_per_s p50_us p99_us)
# CHANNELS=1 THREADS=1 KEYS=1000 (distinct identifiers; 1 = one hot key)
# RB_REQUESTS=200000 (redis-benchmark -n).
set -euo pipefail

BUILD_DIR=${1:-build}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCIES=${CONCURRENCIES:-"1 16 64 256"}
CHANNELS=${CHANNELS:-1}
THREADS=${THREADS:-1}
KEYS=${KEYS:-1000}
RB_REQUESTS=${RB_REQUESTS:-200000}
TARGETS=${TARGETS:-"noop memory redis batch10 batch100"}
ROUNDS=${ROUNDS:-3}
DATA_FILE=${DATA_FILE:-}

LOADGEN="$BUILD_DIR/bench/traffik_loadgen"
NOOP="$BUILD_DIR/bench/traffik_noop_server"
PRINT_SCRIPT="$BUILD_DIR/bench/traffik_print_script"
TRAFFIKD="$BUILD_DIR/server/traffikd"
for bin in "$LOADGEN" "$NOOP" "$PRINT_SCRIPT" "$TRAFFIKD"; do
  [[ -x "$bin" ]] || { echo "run_redis_bench: missing $bin (build it first)" >&2; exit 1; }
done
for tool in redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "run_redis_bench: $tool not found" >&2; exit 1; }
done

log() { echo "run_redis_bench: $*" >&2; }

WORK=$(mktemp -d /tmp/traffik-bench.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    # Bounded wait: SIGKILL whatever is still alive after ~5 s.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Redis on a free loopback port ------------------------------------------
REDIS_PORT=
for _ in $(seq 20); do
  port=$((20000 + RANDOM % 40000))
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$WORK/redis.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    # Make sure the Redis answering is ours, not another one on that port.
    if [[ "$(redis-cli -h 127.0.0.1 -p "$port" INFO server 2>/dev/null |
      sed -n 's/^process_id:\([0-9]*\).*/\1/p')" == "$pid" ]]; then
      REDIS_PORT=$port
      break
    fi
    sleep 0.1
  done
  [[ -n "$REDIS_PORT" ]] && break
  kill "$pid" 2>/dev/null || true
done
[[ -n "$REDIS_PORT" ]] || { log "cannot start redis-server"; exit 1; }
log "redis-server on 127.0.0.1:$REDIS_PORT"

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
"$NOOP" --listen 127.0.0.1:0 2>"$WORK/noop.err" &
PIDS+=($!)
NOOP_ADDR=$(wait_listening "$WORK/noop.err" $!)

cat >"$WORK/traffik.yaml" <<YAML
listen: "127.0.0.1:0"
metrics_listen: ""
throttles:
  - uid: bench
    limit: 1000000
    period: 1s
tenants:
  - name: default
    backend: redis://127.0.0.1:$REDIS_PORT/0
  - name: mem
    backend: memory
default_tenant: default
YAML
"$TRAFFIKD" --config "$WORK/traffik.yaml" 2>"$WORK/traffikd.err" &
PIDS+=($!)
TRAFFIKD_ADDR=$(wait_listening "$WORK/traffikd.err" $!)
log "noop on $NOOP_ADDR, traffikd on $TRAFFIKD_ADDR"

# --- loadgen runs --------------------------------------------------------------
json_num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }
json_errors() { sed -n 's/.*"errors":{\([^}]*\)}.*/\1/p' <<<"$1" | tr -d '"'; }

declare -A NOOP_RATE MEMORY_RATE RUNS
ROWS=()
run_one() {  # $1 = target, $2 = concurrency; prints "decisions calls p50 p99 p999 errs allowed throttled"
  local target=$1 c=$2 rpc=should_throttle batch=1 addr tenant out
  case $target in
    noop) addr=$NOOP_ADDR tenant= ;;
    memory) addr=$TRAFFIKD_ADDR tenant=mem ;;
    redis) addr=$TRAFFIKD_ADDR tenant=default ;;
    batch*) addr=$TRAFFIKD_ADDR tenant=mem rpc=batch batch=${target#batch} ;;
    *) log "unknown target $target"; exit 1 ;;
  esac
  out=$("$LOADGEN" --target "$addr" --concurrency "$c" --channels "$CHANNELS" \
    --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" \
    --rpc "$rpc" --batch-size "$batch" --tenant "$tenant" --uid bench --limit 0 \
    --keys "$KEYS" --json) || true
  if [[ -z "$out" ]]; then
    echo "0 0 0 0 0 failed 0 0"
    return
  fi
  local errs
  errs=$(json_errors "$out")
  echo "$(json_num decisions_per_s "$out") $(json_num calls_per_s "$out") $(json_num p50 "$out")" \
    "$(json_num p99 "$out") $(json_num p999 "$out") ${errs:-0} $(json_num allowed "$out")" \
    "$(json_num throttled "$out")"
}
label_of() {
  case $1 in
    noop) echo "noop server (ceiling)" ;;
    memory) echo "traffikd memory" ;;
    redis) echo "traffikd redis" ;;
    batch*) echo "traffikd memory, batch of ${1#batch}" ;;
  esac
}
for c in $CONCURRENCIES; do
  # Interleave the targets and repeat: each figure is the median of ROUNDS runs,
  # so a burst of noise on the shared machine moves one run, not the result.
  for round in $(seq "$ROUNDS"); do
    for target in $TARGETS; do
      log "loadgen $target concurrency=$c round $round/$ROUNDS ($WARMUP + $DURATION)"
      RUNS[$target]+="$(run_one "$target" "$c")"$'\n'
    done
  done
  for target in $TARGETS; do
    # The run with the median decisions/s.
    read -r decisions rate p50 p99 p999 errs allowed throttled < <(
      printf '%s' "${RUNS[$target]}" | sed '/^$/d' | sort -n -k1,1 |
        awk '{ line[NR] = $0 } END { print line[int((NR + 1) / 2)] }')
    RUNS[$target]=""
    [[ $target == noop ]] && NOOP_RATE[$c]=$rate
    [[ $target == memory ]] && MEMORY_RATE[$c]=$decisions
    if [[ $target == batch* ]]; then
      base=${MEMORY_RATE[$c]:-0} unit="x memory single"
    else
      base=${NOOP_RATE[$c]:-0} unit=""
    fi
    ratio=$(awk -v r="$decisions" -v n="$base" \
      'BEGIN { if (n > 0) printf "%.2f", r / n; else print "-" }')
    [[ -n $unit && $ratio != - ]] && ratio="$ratio $unit"
    [[ $target == noop ]] && allowed="-" throttled="-"
    ROWS+=("| $(label_of "$target") | $c | $(printf '%.0f' "$rate") | $(printf '%.0f' "$decisions") | $p50 | $p99 | $p999 | $errs | $allowed / $throttled | $ratio |")
    if [[ -n $DATA_FILE ]]; then
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$c" "$rate" "$decisions" "$p50" "$p99" \
        >>"$DATA_FILE"
    fi
  done
done

# --- redis-benchmark on the same script ---------------------------------------
SHA=$("$PRINT_SCRIPT" | redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -x SCRIPT LOAD)
[[ "$SHA" =~ ^[0-9a-f]{40}$ ]] || { log "SCRIPT LOAD failed: $SHA"; exit 1; }
RB_ROWS=()
rb() {  # $1 = clients, $2 = requests, $3 = pipeline
  local line rps p50 p99
  log "redis-benchmark -c $1 -n $2 -P $3 EVALSHA"
  line=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$1" -n "$2" -P "$3" --csv \
    EVALSHA "$SHA" 1 key 100000 1000 1 | tail -n1 | tr -d '"')
  # "test,rps,avg_latency_ms,min_latency_ms,p50_latency_ms,p95_latency_ms,p99_latency_ms,max"
  IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
  RB_ROWS+=("| redis-benchmark EVALSHA -P $3 | $1 | $(printf '%.0f' "$rps") | $(awk -v v="$p50" 'BEGIN{printf "%.0f", v*1000}') | $(awk -v v="$p99" 'BEGIN{printf "%.0f", v*1000}') |")
}
rb 1 $((RB_REQUESTS / 4)) 1
rb 64 "$RB_REQUESTS" 1
rb 64 "$RB_REQUESTS" 16

# --- report ---------------------------------------------------------------------
cat <<MD
# Traffik benchmark

$(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores ($(uname -m)), load average at end: $(cut -d' ' -f1-3 /proc/loadavg).
Client, server and Redis share this machine, so every number here is noisy.

Loadgen: closed loop, ShouldThrottle on the configured throttle \`bench\` (1000000 per 1s, never
throttles), $KEYS distinct identifiers round robin, $CHANNELS channel(s), $THREADS completion-queue
thread(s), warmup $WARMUP, measured $DURATION, deadline 1 s; each row is the median of $ROUNDS
interleaved runs. Latency in microseconds (OK calls).
Ratio = decisions/s divided by the noop server's calls/s at the same concurrency (batch
rows: divided by the single-call memory decisions/s at the same concurrency).

| target | concurrency | calls/s | decisions/s | p50 us | p99 us | p99.9 us | errors | allowed / throttled | ratio |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |
$(printf '%s\n' "${ROWS[@]}")

Redis alone (\`redis-benchmark -c C -n N -P P EVALSHA <sha> 1 key 100000 1000 1\`, the script
traffikd sends, one hot key; latency from its percentiles, ms rounded to us):

| target | clients | calls/s | p50 us | p99 us |
| --- | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${RB_ROWS[@]}")
MD
