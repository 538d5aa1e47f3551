#!/usr/bin/env bash
# End to end over HTTP: an app (bench/http_app.cc) served unthrottled, and
# throttled through traffik::client + traffikd on the memory and on the Redis
# backend, driven by wrk; on cpp-httplib (a thread per connection, blocking
# checks) and on Boost.Beast (event loops, asynchronous checks).
#
#   bash bench/run_http_bench.sh [BUILD_DIR]          (default: build)
#
# Builds traffikd and traffik_http_app in BUILD_DIR (BUILD=0: use them as they
# are), installs wrk and GNU time if missing (apt-get), then starts on
# 127.0.0.1 only, on free ports: its own redis-server, traffikd (tenant `mem`
# on the memory backend, `default` on that Redis) and one app per
# configuration:
#   unthrottled       the same server and route without the limiter
#   memory, redis     throttled: 1,000,000/s per client address (never refuses),
#                     one decision per request
#   memory_coalesce,  the same with client-side coalescing (ClientOptions::
#   redis_coalesce    coalesce, COALESCE_DELAY_US / COALESCE_BATCH); skipped,
#                     and said so, when the client library has no coalescing
#   memory_raw_grpc   diagnostic, not in the default CONFIGS: the same decision
#                     through a blocking gRPC stub in the handler, without
#                     traffik::client (what the library adds on top of gRPC)
#   beast_<any of the above but memory_raw_grpc>
#                     the same on the Beast app (--server beast, BEAST_THREADS
#                     event loops; throttled through beast_adapter::Throttled);
#                     its ratios are against beast_unthrottled
# Each configuration is measured ROUNDS times, the configurations alternating
# within a round (wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency,
# after a WARMUP run); the report gives medians. CPU per request: the app's
# and traffikd's /proc/<pid>/stat utime+stime deltas, Redis' INFO cpu delta,
# wrk's own (GNU time) over the measured run, divided by its requests. wrk's
# CPU share is printed to show it is not the bottleneck; the ratio by CPU per
# request (what a CPU-bound machine running only this benchmark would show) is
# printed next to the measured one.
#
# Prints a Markdown report on stdout (progress on stderr). If RESULTS_KV names
# a file, appends name=value lines: http_unthrottled_rps, http_memory_rps,
# http_redis_rps, http_memory_ratio, http_redis_ratio (the best configuration
# of each backend: http_memory_best_coalesced / http_redis_best_coalesced say
# whether it coalesces, 1, or not, 0), http_memory_cpu_us_app,
# http_memory_cpu_us_traffikd, http_redis_cpu_us_app, http_redis_cpu_us_traffikd,
# http_redis_cpu_us_redis (per request, of that best configuration), and the
# same for the Beast app with the prefix http_beast_ (http_beast_unthrottled_rps,
# http_beast_memory_ratio, ...).
# Everything it started is stopped on exit.
#
# Environment (defaults): DURATION=5s WARMUP=1s ROUNDS=5 CONNECTIONS=64
# WRK_THREADS=2 APP_THREADS=64 (the httplib app's worker threads: one per
# keep-alive connection) BEAST_THREADS=nproc (the Beast app's event loops)
# CONFIGS="unthrottled memory redis memory_coalesce redis_coalesce
# beast_unthrottled beast_memory beast_redis beast_memory_coalesce
# beast_redis_coalesce"
# COALESCE_DELAY_US=500 COALESCE_BATCH=64 PIN=0 (1: wrk on CPU 1, everything
# else on CPU 0 - needs 2 CPUs; shows whether sharing the cores with wrk
# changes the ratio) BUILD=1 JOBS=2 TRAFFIKD=BUILD_DIR/server/traffikd (another
# traffikd binary, e.g. one built from another branch).
# Default run: 10 configurations x 5 rounds x 6 s = 5 min, plus the build.
set -euo pipefail

BUILD_DIR=${1:-build}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
APP_THREADS=${APP_THREADS:-64}
BEAST_THREADS=${BEAST_THREADS:-$(nproc)}
CONFIGS=${CONFIGS:-"unthrottled memory redis memory_coalesce redis_coalesce beast_unthrottled beast_memory beast_redis beast_memory_coalesce beast_redis_coalesce"}
COALESCE_DELAY_US=${COALESCE_DELAY_US:-500}
COALESCE_BATCH=${COALESCE_BATCH:-64}
PIN=${PIN:-0}
BUILD=${BUILD:-1}
JOBS=${JOBS:-2}
RESULTS_KV=${RESULTS_KV:-}

log() { echo "run_http_bench: $*" >&2; }
die() { log "$*"; exit 1; }

APP="$BUILD_DIR/bench/traffik_http_app"
TRAFFIKD=${TRAFFIKD:-"$BUILD_DIR/server/traffikd"}
if [[ "$BUILD" == 1 ]]; then
  log "building traffikd and traffik_http_app in $BUILD_DIR"
  cmake --build "$BUILD_DIR" -j"$JOBS" --target traffikd traffik_http_app >&2 ||
    die "build failed"
fi
for bin in "$APP" "$TRAFFIKD"; do
  [[ -x "$bin" ]] || die "missing $bin (build it first, or BUILD=1)"
done
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
    die "cannot install wrk"
fi
for tool in wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [[ ! -x /usr/bin/time ]]; then  # GNU time: wrk's own CPU
  log "installing time"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null ||
    die "cannot install GNU time (Debian: time)"
fi

SERVER_PIN=() WRK_PIN=()
if [[ "$PIN" == 1 ]]; then
  (($(nproc) >= 2)) || die "PIN=1 needs 2 CPUs"
  SERVER_PIN=(taskset -c 0) WRK_PIN=(taskset -c 1)
fi

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup http-bench

# --- Redis on a free loopback port -------------------------------------------
bench_start_redis "${SERVER_PIN[@]}" || die "cannot start redis-server"
log "redis-server on 127.0.0.1:$REDIS_PORT"

# Waits for "listening $2=HOST:PORT" in file $1 (stderr of pid $3); prints
# HOST:PORT. Fails if the process exits first (its stderr is shown).
wait_listening() {
  local file=$1 what=$2 pid=$3 addr=
  for _ in $(seq 100); do
    addr=$(sed -n "s/.*listening $what=\\([^ ]*\\).*/\\1/p" "$file" | head -n1)
    [[ -n "$addr" ]] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "$file: did not start:"
  cat "$file" >&2
  return 1
}

# --- traffikd ----------------------------------------------------------------
cat >"$WORK/traffik.yaml" <<YAML
listen: "127.0.0.1:0"
metrics_listen: ""
tenants:
  - name: default
    backend: redis://127.0.0.1:$REDIS_PORT/0
  - name: mem
    backend: memory
default_tenant: default
YAML
"${SERVER_PIN[@]}" "$TRAFFIKD" --config "$WORK/traffik.yaml" 2>"$WORK/traffikd.err" &
TRAFFIKD_PID=$!
PIDS+=("$TRAFFIKD_PID")
TRAFFIKD_ADDR=$(wait_listening "$WORK/traffikd.err" grpc "$TRAFFIKD_PID")
log "traffikd on $TRAFFIKD_ADDR"

# --- one app per configuration -------------------------------------------------
declare -A APP_ADDR APP_PID APP_ARGS
ACTIVE=() SKIPPED=()
for config in $CONFIGS; do
  coalesce=()
  case ${config#beast_} in
    unthrottled) args=(--mode unthrottled) ;;
    memory | memory_coalesce) args=(--mode throttled --target "$TRAFFIKD_ADDR" --tenant mem) ;;
    redis | redis_coalesce) args=(--mode throttled --target "$TRAFFIKD_ADDR" --tenant default) ;;
    memory_raw_grpc) args=(--mode raw-grpc --target "$TRAFFIKD_ADDR" --tenant mem) ;;
    *) die "unknown configuration $config" ;;
  esac
  if [[ $config == *_coalesce ]]; then
    coalesce=(--coalesce-max-delay-us "$COALESCE_DELAY_US" --coalesce-max-batch "$COALESCE_BATCH")
  fi
  if [[ $config == beast_* ]]; then
    [[ $config != *raw_grpc ]] || die "raw-grpc is httplib only"
    args+=(--server beast "${coalesce[@]}" --threads "$BEAST_THREADS" --listen 127.0.0.1:0)
  else
    args+=("${coalesce[@]}" --threads "$APP_THREADS" --listen 127.0.0.1:0)
  fi
  "${SERVER_PIN[@]}" "$APP" "${args[@]}" 2>"$WORK/app-$config.err" &
  pid=$!
  PIDS+=("$pid")
  if ! addr=$(wait_listening "$WORK/app-$config.err" http "$pid" 2>/dev/null); then
    wait "$pid" 2>/dev/null && rc=0 || rc=$?
    if [[ $rc == 3 ]]; then  # no ClientOptions::coalesce in this build
      log "skipping $config: $(cat "$WORK/app-$config.err")"
      SKIPPED+=("$config")
      continue
    fi
    cat "$WORK/app-$config.err" >&2
    die "app $config did not start"
  fi
  APP_ADDR[$config]=$addr APP_PID[$config]=$pid APP_ARGS[$config]="${args[*]}"
  ACTIVE+=("$config")
  log "app $config on $addr (pid $pid)"
done
# The configuration a throttled one is compared with: the same app unthrottled.
base_of() { [[ $1 == beast_* ]] && echo beast_unthrottled || echo unthrottled; }
for config in "${ACTIVE[@]}"; do
  [[ " ${ACTIVE[*]} " == *" $(base_of "$config") "* ]] ||
    die "CONFIGS has $config but not $(base_of "$config")"
done

# Every throttled app answers 200 before measuring (traffikd reachable).
for config in "${ACTIVE[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://${APP_ADDR[$config]}/" || true)
  [[ "$code" == 200 ]] || die "app $config answers $code to GET /"
done

# --- measurement -----------------------------------------------------------------
proc_ticks() {  # utime+stime of process $1 in clock ticks (all threads)
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }  # past "pid (comm) ": comm may hold spaces
  awk '{print $12 + $13}' <<<"$stat"
}
redis_cpu_s() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO cpu |
    awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f\n", s}'
}
to_us() {  # wrk's "1.23ms" / "456.00us" / "1.20s" -> microseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
    printf "%.0f\n", n * m }'
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# Runs wrk against configuration $1; appends one row to $WORK/runs.tsv:
# config round rps p50_us p99_us requests errors app_us traffikd_us redis_us wrk_us wrk_cpu_pct
run_one() {
  local config=$1 round=$2 url="http://${APP_ADDR[$1]}/" out
  "${WRK_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >/dev/null 2>&1 || true
  local app_pid=${APP_PID[$config]}
  local a0 t0 r0 a1 t1 r1
  a0=$(proc_ticks "$app_pid") t0=$(proc_ticks "$TRAFFIKD_PID") r0=$(redis_cpu_s)
  "${WRK_PIN[@]}" /usr/bin/time -f '%e %U %S' -o "$WORK/wrk.time" \
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$WORK/wrk.out" 2>&1 ||
    { cat "$WORK/wrk.out" >&2; die "wrk failed against $config"; }
  a1=$(proc_ticks "$app_pid") t1=$(proc_ticks "$TRAFFIKD_PID") r1=$(redis_cpu_s)
  out=$(<"$WORK/wrk.out")
  local rps requests p50 p99 non2xx sockerr
  rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
  requests=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")
  sockerr=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' <<<"$out" |
    awk '{print $1 + $2 + $3 + $4}')
  [[ -n "$rps" && -n "$requests" && "$requests" -gt 0 ]] ||
    { cat "$WORK/wrk.out" >&2; die "cannot parse wrk's output ($config)"; }
  read -r wall wuser wsys <"$WORK/wrk.time"
  awk -v c="$config" -v rd="$round" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
    -v n="$requests" -v err=$((${non2xx:-0} + ${sockerr:-0})) -v tick="$TICK_US" \
    -v a=$((a1 - a0)) -v t=$((t1 - t0)) -v r0="$r0" -v r1="$r1" \
    -v wall="$wall" -v wu="$wuser" -v ws="$wsys" 'BEGIN {
      printf "%s\t%d\t%.0f\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\n", c, rd, rps, p50, p99,
        n, err, a * tick / n, t * tick / n, (r1 - r0) * 1e6 / n, (wu + ws) * 1e6 / n,
        100 * (wu + ws) / wall }' >>"$WORK/runs.tsv"
  log "round $round $config: $(tail -n1 "$WORK/runs.tsv" | cut -f3-)"
}

: >"$WORK/runs.tsv"
for round in $(seq "$ROUNDS"); do
  for config in "${ACTIVE[@]}"; do run_one "$config" "$round"; done
done

# Median of column $2 over the rows of configuration $1.
median() {
  awk -F'\t' -v c="$1" -v k="$2" '$1 == c {print $k}' "$WORK/runs.tsv" | sort -g |
    awk '{v[NR] = $1} END {
      if (NR == 0) { print "nan"; exit }
      if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
declare -A RPS P50 P99 ERR APPCPU TDCPU RCPU WRKCPU WRKPCT
for config in "${ACTIVE[@]}"; do
  RPS[$config]=$(median "$config" 3) P50[$config]=$(median "$config" 4)
  P99[$config]=$(median "$config" 5) ERR[$config]=$(median "$config" 7)
  APPCPU[$config]=$(median "$config" 8) TDCPU[$config]=$(median "$config" 9)
  RCPU[$config]=$(median "$config" 10) WRKCPU[$config]=$(median "$config" 11)
  WRKPCT[$config]=$(median "$config" 12)
done
# CPU µs per request of configuration $1, every process together.
cpu_total() {
  awk -v a="${APPCPU[$1]}" -v t="${TDCPU[$1]}" -v r="${RCPU[$1]}" -v w="${WRKCPU[$1]}" \
    'BEGIN { printf "%.2f\n", a + t + r + w }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", (b > 0 ? a / b : 0) }'; }
# Requests/s of configuration $1 over its app's unthrottled figure.
rps_ratio() { ratio "${RPS[$1]}" "${RPS[$(base_of "$1")]}"; }

# The best configuration (highest median req/s) among $@ that ran.
best_of() {
  local best='' c
  for c in "$@"; do
    [[ -n "${RPS[$c]:-}" ]] || continue
    if [[ -z "$best" ]] || awk -v a="${RPS[$c]}" -v b="${RPS[$best]}" 'BEGIN {exit !(a > b)}'; then
      best=$c
    fi
  done
  echo "$best"
}
BEST_MEMORY=$(best_of memory memory_coalesce)
BEST_REDIS=$(best_of redis redis_coalesce)
BEST_BEAST_MEMORY=$(best_of beast_memory beast_memory_coalesce)
BEST_BEAST_REDIS=$(best_of beast_redis beast_redis_coalesce)

# --- report ------------------------------------------------------------------------
describe() {
  if [[ $1 == beast_* ]]; then
    echo "Beast: $(describe "${1#beast_}")"
    return
  fi
  case $1 in
    unthrottled) echo "unthrottled (no limiter)" ;;
    memory) echo "throttled, memory" ;;
    redis) echo "throttled, Redis" ;;
    memory_coalesce) echo "throttled, memory, coalescing" ;;
    redis_coalesce) echo "throttled, Redis, coalescing" ;;
    memory_raw_grpc) echo "memory, blocking gRPC stub, no traffik::client (diagnostic)" ;;
  esac
}
echo "## End to end over HTTP (cpp-httplib and Beast apps, wrk)"
echo
echo "Command: \`$(printf '%q ' env DURATION="$DURATION" WARMUP="$WARMUP" ROUNDS="$ROUNDS" \
  CONNECTIONS="$CONNECTIONS" WRK_THREADS="$WRK_THREADS" APP_THREADS="$APP_THREADS" \
  BEAST_THREADS="$BEAST_THREADS" \
  COALESCE_DELAY_US="$COALESCE_DELAY_US" COALESCE_BATCH="$COALESCE_BATCH" PIN="$PIN" \
  bash bench/run_http_bench.sh "$BUILD_DIR")\`"
echo
echo "\`wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency\` (keep-alive) against one"
echo "route \`/\` of \`traffik_http_app\`: on cpp-httplib (traffik::httplib_adapter::Server,"
echo "$APP_THREADS worker threads, each blocked in its check), and, rows \"Beast:\", on"
echo "Boost.Beast ($BEAST_THREADS event-loop threads; traffik::beast_adapter::Throttled, the"
echo "check asynchronous, no thread waits for it), each throttled row against its own"
echo "app's unthrottled row; throttled: 1,000,000/s per client address, so every request is"
echo "allowed after one decision by traffikd ($(nproc) CPUs, $(if [[ $PIN == 1 ]]; then
  echo "wrk pinned to CPU 1, the servers to CPU 0"; else echo "all processes sharing them"; fi))."
echo "Medians of $ROUNDS alternating rounds. CPU columns: µs of CPU per request (process"
echo "utime+stime; Redis: INFO cpu); wrk CPU: its share of one CPU, out of $((WRK_THREADS * 100))%."
echo
echo "| configuration | req/s | ÷ unthrottled | ÷ unthrottled by CPU | p50 µs | p99 µs | app CPU µs/req | traffikd CPU µs/req | Redis CPU µs/req | wrk CPU µs/req | wrk CPU | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for config in "${ACTIVE[@]}"; do
  printf '| %s | %.0f | %s | %s | %.0f | %.0f | %.1f | %.1f | %.1f | %.1f | %.0f%% | %s |\n' \
    "$(describe "$config")" "${RPS[$config]}" "$(rps_ratio "$config")" \
    "$(ratio "$(cpu_total "$(base_of "$config")")" "$(cpu_total "$config")")" \
    "${P50[$config]}" "${P99[$config]}" "${APPCPU[$config]}" "${TDCPU[$config]}" \
    "${RCPU[$config]}" "${WRKCPU[$config]}" "${WRKPCT[$config]}" "${ERR[$config]}"
done
echo
echo "÷ unthrottled by CPU: the same app's unthrottled CPU per request (app + wrk) over"
echo "this one's (app + traffikd + Redis + wrk): the ratio a machine running only this"
echo "benchmark, CPU-bound, would show. It moves less than req/s when other work shares"
echo "the machine, but not nothing (contention adds context switches per request)."
echo
for config in "${SKIPPED[@]}"; do
  echo "Not measured: $(describe "$config") (this build's client library has no"
  echo "\`ClientOptions::coalesce\`)."
done
[[ ${#SKIPPED[@]} -gt 0 ]] && echo
echo "App command lines (TRAFFIKD: traffikd with tenant \`mem\` = memory, \`default\` = Redis):"
echo
for config in "${ACTIVE[@]}"; do
  echo "- $config: \`traffik_http_app ${APP_ARGS[$config]//$TRAFFIKD_ADDR/TRAFFIKD}\`"
done
echo
targets() {
  local name=$1 best=$2 goal=$3 r
  [[ -n "$best" ]] || { echo "- $name: not measured"; return; }
  r=$(rps_ratio "$best")
  echo "- $name: best configuration \`$best\`, ratio $r (target ≥ $goal:" \
    "$(awk -v r="$r" -v g="$goal" 'BEGIN {print (r >= g ? "met" : "not met")}'))"
}
targets "Memory" "$BEST_MEMORY" 0.6
targets "Redis" "$BEST_REDIS" 0.45
targets "Beast, memory" "$BEST_BEAST_MEMORY" 0.6
targets "Beast, Redis" "$BEST_BEAST_REDIS" 0.45
echo
echo "<details><summary>Every run</summary>"
echo
echo "| round | configuration | req/s | p50 µs | p99 µs | requests | errors | app | traffikd | Redis | wrk | wrk CPU |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%% |\n",
  $2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12}' "$WORK/runs.tsv"
echo
echo "</details>"

# name=value lines for the best configurations of one app; $1: name prefix
# (http_ or http_beast_), $2: its unthrottled configuration, $3 / $4: its
# best memory / Redis configuration.
kv_of() {
  local p=$1 base=$2 mem=$3 red=$4
  [[ -n "${RPS[$base]:-}" ]] || return 0
  echo "${p}unthrottled_rps=${RPS[$base]}"
  if [[ -n "$mem" ]]; then
    echo "${p}memory_rps=${RPS[$mem]}"
    echo "${p}memory_ratio=$(rps_ratio "$mem")"
    echo "${p}memory_best_coalesced=$([[ $mem == *_coalesce ]] && echo 1 || echo 0)"
    echo "${p}memory_cpu_us_app=${APPCPU[$mem]}"
    echo "${p}memory_cpu_us_traffikd=${TDCPU[$mem]}"
  fi
  if [[ -n "$red" ]]; then
    echo "${p}redis_rps=${RPS[$red]}"
    echo "${p}redis_ratio=$(rps_ratio "$red")"
    echo "${p}redis_best_coalesced=$([[ $red == *_coalesce ]] && echo 1 || echo 0)"
    echo "${p}redis_cpu_us_app=${APPCPU[$red]}"
    echo "${p}redis_cpu_us_traffikd=${TDCPU[$red]}"
    echo "${p}redis_cpu_us_redis=${RCPU[$red]}"
  fi
}
if [[ -n "$RESULTS_KV" ]]; then
  {
    kv_of http_ unthrottled "$BEST_MEMORY" "$BEST_REDIS"
    kv_of http_beast_ beast_unthrottled "$BEST_BEAST_MEMORY" "$BEST_BEAST_REDIS"
  } >>"$RESULTS_KV"
fi
