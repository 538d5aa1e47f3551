#!/usr/bin/env bash
# Runs every Traffik benchmark and writes BENCHMARKS.md at the repository root,
# with the plot in bench/results/throughput.png and the raw outputs beside it.
#
#   bash bench/run_all.sh [BUILD_DIR]     (default: build-bench, a Release build)
#
# 1. Engine micro-benchmarks (Google Benchmark, no gRPC).
# 2. Memory backend RSS per bucket at 1M buckets.
# 3. gRPC: no-op baseline server vs traffikd (memory, Redis, batch of 10 and 100)
#    at 1, 16, 64, 256 calls in flight, and redis-benchmark on the same script
#    (bench/run_redis_bench.sh).
# 4. The targets of the benchmark issue, each as a measured ratio.
# Everything runs on 127.0.0.1 and is bounded in time (about 8 minutes with the
# defaults: 3 interleaved 5 s runs per target and concurrency, medians reported;
# DURATION / WARMUP / ROUNDS / CONCURRENCIES are passed to run_redis_bench.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-bench}"
results="$root/bench/results"
mkdir -p "$results"
log() { echo "run_all: $*" >&2; }

bash "$root/.ci/deps"
if ! command -v gnuplot >/dev/null; then
  log "installing gnuplot-nox"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi
log "building (Release) into $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTRAFFIK_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target traffikd traffik_loadgen traffik_noop_server \
  traffik_print_script traffik_engine_bench traffik_bucket_memory >/dev/null

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

export DURATION="${DURATION:-5s}" ROUNDS="${ROUNDS:-3}"
log "gRPC load (this takes about 7 minutes)"
: >"$results/throughput.tsv"
DATA_FILE="$results/throughput.tsv" bash "$root/bench/run_redis_bench.sh" "$build" \
  >"$results/grpc.md"

log "Envoy RLS (ShouldRateLimit) against the no-op server"
bash "$root/bench/run_envoy_bench.sh" "$build" >"$results/envoy.md"
envoy_ratio=$(sed -n 's/^ratio=//p' "$results/envoy.md")

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

# --- targets ---------------------------------------------------------------------
val() {  # target concurrency column(3 calls, 4 decisions, 6 p99)
  awk -v t="$1" -v c="$2" -v col="$3" -F'\t' '$1 == t && $2 == c { print $col }' \
    "$results/throughput.tsv"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
row() {  # name measured target comparison(ge|le)
  local ok
  ok=$(awk -v m="$2" -v t="$3" -v op="$4" 'BEGIN {
    if (m == "nan" || m == "") { print "no data"; exit }
    if ((op == "ge" && m + 0 >= t + 0) || (op == "le" && m + 0 <= t + 0)) print "yes"; else print "**no**" }')
  local sign="≥"
  [[ $4 == le ]] && sign="≤"
  echo "| $1 | $2 | $sign $3 | $ok |"
}
TARGET_ROWS=(
  "$(row "memory / no-op calls/s, 64 in flight" "$(ratio "$(val memory 64 4)" "$(val noop 64 3)")" 0.90 ge)"
  "$(row "memory / no-op calls/s, 256 in flight" "$(ratio "$(val memory 256 4)" "$(val noop 256 3)")" 0.90 ge)"
  "$(row "memory / no-op p99, 64 in flight" "$(ratio "$(val memory 64 6)" "$(val noop 64 6)")" 1.2 le)"
  "$(row "memory / no-op p99, 256 in flight" "$(ratio "$(val memory 256 6)" "$(val noop 256 6)")" 1.2 le)"
  "$(row "Envoy ShouldRateLimit memory / no-op ShouldRateLimit calls/s, 64 in flight" "$envoy_ratio" 0.90 ge)"
  "$(row "Redis / no-op calls/s, 64 in flight" "$(ratio "$(val redis 64 4)" "$(val noop 64 3)")" 0.80 ge)"
  "$(row "batch of 100 / single decisions/s, 64 in flight" "$(ratio "$(val batch100 64 4)" "$(val memory 64 4)")" 20 ge)"
  "$(row "engine: hot-key decision (ns)" "$(ns_of 'BM_MemoryHotKey/real_time/threads:1')" 100 le)"
  "$(row "engine: 1M random keys, 1 thread (ns)" "$(ns_of 'BM_MemoryRandomKeys/1000000/real_time/threads:1')" 400 le)"
  "$(row "memory per bucket at 1M buckets (bytes RSS)" "$bytes_per_bucket" 200 le)"
)

cpu=$(sed -n 's/^model name\s*:\s*//p' /proc/cpuinfo | head -n1)
cat >"$root/BENCHMARKS.md" <<MD
# Benchmarks

Command: \`bash bench/run_all.sh\` (builds a Release tree in \`build-bench/\`, runs
everything on 127.0.0.1, rewrites this file; raw outputs in \`bench/results/\`).

Machine: $(nproc) cores ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
RAM, $(. /etc/os-release && echo "$PRETTY_NAME"); load generator, servers and Redis share
it, so the gRPC figures are ratios measured in the same run. Run on
$(date -u '+%Y-%m-%d %H:%M UTC').

## Targets

| measure | measured | target | met |
| --- | ---: | ---: | --- |
$(printf '%s\n' "${TARGET_ROWS[@]}")

![throughput and p99 against calls in flight](bench/results/throughput.png)

$(tail -n +2 "$results/grpc.md")

$(sed '/^ratio=/d' "$results/envoy.md" | sed 's/^## /### /')

## Engine (Google Benchmark, one process, no gRPC)

| benchmark | real time | CPU time | iterations |
| --- | ---: | ---: | ---: |
$(awk '{ printf "| %s | %s %s | %s %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$results/engine.txt")

Memory backend: $(cat "$results/memory.txt").

$(cat "$root/bench/analysis.md")
MD
log "wrote $root/BENCHMARKS.md"
