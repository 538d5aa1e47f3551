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

# Starts redis-server on a free 127.0.0.1 port (logging to $WORK/redis.log), with
# any arguments as a command prefix (e.g. taskset -c 1); sets REDIS_PORT and
# REDIS_PID, adds it to PIDS. Checks that the Redis answering on the port is the
# one it started. Returns 1 if none started after 20 ports.
bench_start_redis() {  # [PREFIX...]
  local port pid
  REDIS_PORT='' REDIS_PID=''
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    "$@" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no --logfile "$WORK/redis.log" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      if [[ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" INFO server 2>/dev/null |
        sed -n 's/^process_id:\([0-9]*\).*/\1/p')" == "$pid" ]]; then
        REDIS_PORT=$port REDIS_PID=$pid
        return 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
  done
  return 1
}

# Writes $WORK/traffik.yaml for the load generator: 127.0.0.1 on a free port,
# no metrics listener, the throttle `bench` (1,000,000 per 1s: never throttles),
# the default tenant `default` on BACKEND (with `redis: pool_size: $POOL_SIZE`
# when POOL_SIZE is set) and one more tenant per NAME=BACKEND.
bench_write_config() {  # BACKEND [NAME=BACKEND...]
  local more="" pool="" t
  if [[ -n ${POOL_SIZE:-} ]]; then
    pool=$'\n'"    redis:"$'\n'"      pool_size: $POOL_SIZE"
  fi
  for t in "${@:2}"; do more+=$'\n'"  - name: ${t%%=*}"$'\n'"    backend: ${t#*=}"; done
  cat >"$WORK/traffik.yaml" <<YAML
listen: "127.0.0.1:0"
metrics_listen: ""
throttles:
  - uid: bench
    limit: 1000000
    period: 1s
tenants:
  - name: default
    backend: $1$pool$more
default_tenant: default
YAML
}

# Starts $TRAFFIKD on $WORK/traffik.yaml (stderr: $WORK/traffikd.err) and waits
# for its address: sets TRAFFIKD_PID and ADDR; non-zero when it did not start.
bench_start_traffikd() {
  "$TRAFFIKD" --config "$WORK/traffik.yaml" 2>"$WORK/traffikd.err" &
  TRAFFIKD_PID=$!
  PIDS+=("$TRAFFIKD_PID")
  bench_wait_listening "$TRAFFIKD_PID" "$WORK/traffikd.err"
}

# Waits up to 10 s for traffikd (pid PID, stderr in FILE) to log its gRPC
# address; sets ADDR to it ("" if it exited or never said it).
bench_wait_listening() {  # PID FILE
  ADDR=
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/.*listening grpc=\([^ ]*\).*/\1/p' "$2" | head -n1)
    [[ -n "$ADDR" ]] && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
