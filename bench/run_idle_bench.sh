#!/usr/bin/env bash
# ShouldThrottle throughput on traffikd (memory) with and without 10,000 idle
# gRPC client connections held open, and traffikd's RSS per idle connection.
#
#   bash bench/run_idle_bench.sh BUILD_DIR
#
# Each round runs traffik_loadgen once without idle connections ("base") and
# once while traffik_idle_conns holds CONNECTIONS connections ("loaded": each a
# gRPC channel over its own TCP connection that made one health check and went
# quiet, from 127.0.0.2, 127.0.0.3, ... one per 5000); odd rounds measure base
# first, even rounds loaded first. Figures are medians over ROUNDS (the ratio: the median
# of the rounds' own ratios). The idle
# connections are checked to answer one more call each after the loaded run.
# RSS per idle connection = (traffikd VmRSS with them held - VmRSS just before)
# / CONNECTIONS, from round 1 (later rounds reuse memory freed by the previous
# round's connections, so they read lower). The idle-connection holder's own
# CPU over each loaded run is shown too (it shares the machine with the load
# generator, so its time would be load lost; measured: ~0.02 s per 5 s run).
#
# traffikd is started with a soft open-file limit of TRAFFIKD_SOFT_NOFILE (1024,
# what systemd gives a service) to show that it raises its own soft limit to the
# hard one; the hard limit of this shell is raised to CONNECTIONS + 1024 when it
# is lower (needs root with CAP_SYS_RESOURCE).
#
# Environment (defaults): CONNECTIONS=10000 ROUNDS=5 DURATION=5s WARMUP=1s
# CONCURRENCY=64 CHANNELS=4 THREADS=2 KEYS=1000 TRAFFIKD_SOFT_NOFILE=1024.
# If RESULTS_KV names a file, appends idle_base_cps, idle_loaded_cps, idle_ratio,
# idle_rss_per_conn_bytes (key=value lines). Markdown on stdout, progress on
# stderr. Everything runs on 127.0.0.x and is stopped on exit (about 2 min).
set -euo pipefail
BUILD_DIR=${1:?usage: run_idle_bench.sh BUILD_DIR}
CONNECTIONS=${CONNECTIONS:-10000}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-64}
CHANNELS=${CHANNELS:-4}
THREADS=${THREADS:-2}
KEYS=${KEYS:-1000}
TRAFFIKD_SOFT_NOFILE=${TRAFFIKD_SOFT_NOFILE:-1024}
LOADGEN="$BUILD_DIR/bench/traffik_loadgen"
IDLE="$BUILD_DIR/bench/traffik_idle_conns"
TRAFFIKD="$BUILD_DIR/server/traffikd"
for bin in "$LOADGEN" "$IDLE" "$TRAFFIKD"; do
  [[ -x "$bin" ]] || { echo "run_idle_bench: missing $bin (build it first)" >&2; exit 1; }
done
log() { echo "run_idle_bench: $*" >&2; }

needed=$((CONNECTIONS + 1024))
hard=$(ulimit -Hn)
if [[ "$hard" != unlimited && "$hard" -lt "$needed" ]]; then
  if ! ulimit -Hn "$needed" 2>/dev/null; then
    log "the hard open-file limit is $hard, $needed needed, and raising it failed (needs root with CAP_SYS_RESOURCE): raise it first or set CONNECTIONS lower"
    exit 1
  fi
  log "raised the hard open-file limit from $hard to $needed"
fi
ulimit -Sn "$(ulimit -Hn)"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup idle-bench
BENCH_KILL_TENTHS=100  # 10,000 connections take a while to close
IDLE_PID=              # the idle-connection holder while it runs
idle_cleanup() {
  [[ -z "$IDLE_PID" ]] || PIDS+=("$IDLE_PID")
  bench_cleanup
}
trap idle_cleanup EXIT

cat >"$WORK/traffik.yaml" <<YAML
listen: "127.0.0.1:0"
metrics_listen: ""
tenants:
  - name: default
YAML
(ulimit -Sn "$TRAFFIKD_SOFT_NOFILE" && exec "$TRAFFIKD" --config "$WORK/traffik.yaml") \
  2>"$WORK/traffikd.err" &
TRAFFIKD_PID=$!
PIDS+=("$TRAFFIKD_PID")
bench_wait_listening "$TRAFFIKD_PID" "$WORK/traffikd.err" ||
  { log "traffikd did not start:"; cat "$WORK/traffikd.err" >&2; exit 1; }
TRAFFIKD_NOFILE=$(awk '/^Max open files/ { print $4 " (hard " $5 ")" }' "/proc/$TRAFFIKD_PID/limits")
log "traffikd on $ADDR, open-file limit $TRAFFIKD_NOFILE"

TICK=$(getconf CLK_TCK)
json_num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
LOADGEN_ARGS=(--rpc should_throttle --concurrency "$CONCURRENCY" --channels "$CHANNELS"
  --threads "$THREADS" --keys "$KEYS" --duration "$DURATION" --warmup "$WARMUP" --json)
run_load() {  # prints "calls/s p99 errors server-CPU-us-per-call holder-CPU-s"
  local out before after cpu_us watch=()
  # The idle-connection holder's CPU over the measured window: it shares the
  # machine with the load generator, so time it spent would be load lost.
  [[ -z "$IDLE_PID" ]] || watch=(--watch-pid "holder=$IDLE_PID")
  before=$(cpu_ticks $TRAFFIKD_PID)
  out=$("$LOADGEN" --target "$ADDR" "${LOADGEN_ARGS[@]}" "${watch[@]}") || true
  after=$(cpu_ticks $TRAFFIKD_PID)
  [[ -z "$out" ]] && { echo "0 0 failed 0 0"; return; }
  # CPU over warmup + duration, calls over the duration: scale by the ratio.
  cpu_us=$(awk -v t=$((after - before)) -v hz="$TICK" -v c="$(json_num calls "$out")" \
    -v d="$DURATION" -v w="$WARMUP" 'function s(x) { return x ~ /ms$/ ? x / 1000 : x + 0 }
    BEGIN { if (c > 0) printf "%.1f", t / hz * 1e6 * s(d) / (s(d) + s(w)) / c; else print 0 }')
  echo "$(json_num calls_per_s "$out") $(json_num p99 "$out")" \
    "$(( $(json_num calls "$out" | cut -d. -f1) - $(json_num ok_calls "$out" | cut -d. -f1) ))" \
    "$cpu_us" "$(json_num holder "$out" | grep . || echo 0)"
}
open_idle() {  # starts the holder, waits for "ready"; sets IDLE_PID, OPEN_MS
  "$IDLE" --target "$ADDR" --connections "$CONNECTIONS" >"$WORK/idle.out" 2>"$WORK/idle.err" &
  IDLE_PID=$!
  for _ in $(seq 1200); do
    grep -q 'ready' "$WORK/idle.out" 2>/dev/null && break
    kill -0 $IDLE_PID 2>/dev/null || break
    sleep 0.1
  done
  grep -q 'ready' "$WORK/idle.out" || {
    log "the idle connections did not open:"; cat "$WORK/idle.err" >&2; exit 1; }
  OPEN_MS=$(sed -n 's/.*open_ms=\([0-9]*\).*/\1/p' "$WORK/idle.out")
}
close_idle() {  # stops the holder; sets ANSWERED (held connections still answering)
  kill -TERM $IDLE_PID
  wait $IDLE_PID || true
  IDLE_PID=
  ANSWERED=$(sed -n 's/.*verified answered=\([0-9]*\).*/\1/p' "$WORK/idle.out")
}
median() { sed '/^$/d' | sort -n -k1,1 | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }

# The first run against a fresh traffikd is slow (measured here: ~13k calls/s,
# then 30-40k): one unmeasured run first, so no round's figure is the cold one.
log "warm-up run (not measured)"
run_load >/dev/null
base_runs="" loaded_runs="" round_rows="" round_ratios="" rss_per_conn=0 lost=0
for round in $(seq "$ROUNDS"); do
  if (( round % 2 == 1 )); then
    log "round $round/$ROUNDS: base"
    base=$(run_load)
  fi
  log "round $round/$ROUNDS: opening $CONNECTIONS idle connections"
  rss_before=$(rss_bytes $TRAFFIKD_PID)
  open_idle
  rss_held=$(rss_bytes $TRAFFIKD_PID)
  log "round $round/$ROUNDS: loaded (opened in ${OPEN_MS} ms)"
  loaded=$(run_load)
  close_idle
  [[ "$ANSWERED" == "$CONNECTIONS" ]] || lost=$((lost + CONNECTIONS - ${ANSWERED:-0}))
  if (( round % 2 == 0 )); then
    log "round $round/$ROUNDS: base"
    base=$(run_load)
  fi
  per_conn=$(( (rss_held - rss_before) / CONNECTIONS ))
  (( round == 1 )) && rss_per_conn=$per_conn
  base_runs+="$base"$'\n'
  loaded_runs+="$loaded"$'\n'
  round_ratio=$(awk -v a="${loaded%% *}" -v b="${base%% *}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
  round_ratios+="$round_ratio"$'\n'
  read -r _ _ _ base_cpu _ <<<"$base"
  read -r _ _ _ loaded_cpu _ <<<"$loaded"
  round_rows+="| $round | $(printf '%.0f' "${base%% *}") | $(printf '%.0f' "${loaded%% *}") | $round_ratio |"
  round_rows+=" $base_cpu | $loaded_cpu |"
  round_rows+=" $((rss_before / 1024)) | $((rss_held / 1024)) | $per_conn | $OPEN_MS | ${ANSWERED:-0} |"$'\n'
done
rss_end=$(rss_bytes $TRAFFIKD_PID)
read -r bc bp be bcpu _ < <(printf '%s' "$base_runs" | median)
read -r lc lp le lcpu lholder < <(printf '%s' "$loaded_runs" | median)
# The ratio is the median of the rounds' own ratios: a round's base and loaded
# runs are back to back, so a change in the machine's speed between rounds (a
# shared host) cancels out; the ratio of the two medians is shown beside it.
ratio=$(printf '%s' "$round_ratios" | median)
ratio_of_medians=$(awk -v a="$lc" -v b="$bc" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
cpu_ratio=$(awk -v a="$lcpu" -v b="$bcpu" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
met=$(awk -v r="$ratio" 'BEGIN { print (r + 0 >= 0.9) ? "met" : "not met" }')

echo "## Idle connections"
echo
echo "ShouldThrottle on a memory tenant ($KEYS identifiers, $CONCURRENCY in flight over"
echo "$CHANNELS channels, $THREADS load generator threads, ${DURATION} runs), without and with"
echo "$CONNECTIONS idle gRPC connections held open (each its own TCP connection from"
echo "127.0.0.2+ that made one call, then went quiet); medians of $ROUNDS alternating rounds."
echo "traffikd was started with a soft open-file limit of $TRAFFIKD_SOFT_NOFILE and runs with"
echo "$TRAFFIKD_NOFILE (it raises the soft limit to the hard one at startup)."
echo
echo '```'
echo "bash bench/run_idle_bench.sh $BUILD_DIR   # CONNECTIONS=$CONNECTIONS ROUNDS=$ROUNDS"
echo "$(basename "$LOADGEN") --target ADDR ${LOADGEN_ARGS[*]}"
echo "$(basename "$IDLE") --target ADDR --connections $CONNECTIONS"
echo '```'
echo
echo "| case | calls/s | p99 (us) | errors | traffikd CPU per call (us) | idle holder CPU (s per run) | ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| no idle connections | $(printf '%.0f' "$bc") | $bp | $be | $bcpu | - | - |"
echo "| $CONNECTIONS idle connections held | $(printf '%.0f' "$lc") | $lp | $le | $lcpu | $lholder | $ratio ($met: target >= 0.9) |"
echo
echo "Ratio: the median of the rounds' ratios (each round's two runs are back to back,"
echo "so a change in the machine's speed between rounds cancels out); the medians of the"
echo "two columns above give $ratio_of_medians."
echo
echo "traffikd CPU per call with the idle connections held ÷ without: $cpu_ratio (the"
echo "server's user + system time over each run ÷ its calls; unlike calls/s it does not"
echo "move with the load on a shared machine)."
echo
echo "| round | base calls/s | loaded calls/s | ratio | base CPU/call (us) | loaded CPU/call (us) | RSS before (KiB) | RSS held (KiB) | RSS per idle connection (bytes) | open time (ms) | idle connections still answering |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s' "$round_rows"
echo
echo "traffikd RSS per idle connection (round 1): **$rss_per_conn bytes**; RSS at the end,"
echo "all idle connections closed: $((rss_end / 1024)) KiB."
if (( lost > 0 )); then
  echo
  echo "**$lost held connections did not answer their second call.**"
fi
if [[ -n "${RESULTS_KV:-}" ]]; then
  {
    echo "idle_base_cps=$(printf '%.0f' "$bc")"
    echo "idle_loaded_cps=$(printf '%.0f' "$lc")"
    echo "idle_ratio=$ratio"
    echo "idle_rss_per_conn_bytes=$rss_per_conn"
  } >>"$RESULTS_KV"
fi
(( lost == 0 ))
