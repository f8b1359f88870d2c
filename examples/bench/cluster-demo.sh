#!/usr/bin/env bash
# Cluster demo: etcd discovery, round-robin balancing, failover, recovery.
#
# Starts etcd on loopback and three cluster-server instances, each of which
# registers itself in etcd under a prefix with a TTL-second lease. Runs
# cluster-load: two cluster clients over etcd discovery, one treating
# echo.Echo as idempotent (retried elsewhere within the retry budget), one
# not, with a progress line per second showing calls/s per server. After
# BEFORE seconds one server is killed with SIGKILL (it stays registered until
# its lease expires, so clients must cope on their own), DOWN seconds later
# it is restarted (it registers again), then the load runs AFTER more
# seconds. Prints calls/s before, during and after the failure and the
# failed calls of each client; the servers then stop gracefully (their keys
# are revoked) and etcd is stopped by its PID.
#
# Not pinned: five processes share the machine's cores.
#
# Usage: examples/bench/cluster-demo.sh
# Env:   BEFORE=8 DOWN=8 AFTER=8 TTL=3 THREADS=2 PORT0=9261 ETCD_PORT=9271
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=lib.sh
. examples/bench/lib.sh

BEFORE=${BEFORE:-8}
DOWN=${DOWN:-8}
AFTER=${AFTER:-8}
TTL=${TTL:-3}
THREADS=${THREADS:-2}
PORT0=${PORT0:-9261}
ETCD_PORT=${ETCD_PORT:-9271}
TARGET=${CARGO_TARGET_DIR:-target}
EP="http://127.0.0.1:$ETCD_PORT"
PREFIX="/ferropoll/demo/echo-$$"

need_tool etcd etcd-server
need_tool protoc protobuf-compiler
need_tool curl curl
cargo build --release -q -p ferropoll-examples --features ferropoll-rpc/etcd \
    --bin cluster-server --bin cluster-load
BIN="$TARGET/release"

bench_init
ETCD_PID=""
LOAD_PID=""
NODE_PID=("" "" "")
stop_pid() { # pid [signal]
    if [ -n "$1" ]; then
        kill "-${2:-TERM}" "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$LOAD_PID"
    for p in "${NODE_PID[@]}"; do stop_pid "$p"; done
    stop_pid "$ETCD_PID"
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- etcd on loopback -----------------------------------------------------
etcd --name ferropoll-demo --data-dir "$WORK/etcd" \
    --listen-client-urls "$EP" --advertise-client-urls "$EP" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "ferropoll-demo=http://127.0.0.1:$((ETCD_PORT + 1))" \
    >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
ready=""
if wait_port "$ETCD_PORT"; then
    for _ in $(seq 1 100); do # 10 s
        if curl -sf "$EP/health" >/dev/null; then ready=1; break; fi
        sleep 0.1
    done
fi
if [ -z "$ready" ]; then
    echo "etcd did not start" >&2
    cat "$WORK/etcd.log" >&2
    exit 1
fi

# --- three servers, registered under $PREFIX ------------------------------
start_node() { # index
    local i=$1 port=$((PORT0 + $1))
    "$BIN/cluster-server" --addr "127.0.0.1:$port" --etcd "$EP" --prefix "$PREFIX" \
        --ttl "$TTL" >>"$WORK/server$i.log" 2>&1 &
    NODE_PID[i]=$!
    if ! wait_port "$port"; then
        echo "cluster-server $i did not start" >&2
        cat "$WORK/server$i.log" >&2
        exit 1
    fi
}
registered() { # -> number of keys under $PREFIX/ (etcd's JSON gateway)
    local from to
    from=$(printf '%s/' "$PREFIX" | base64 -w0)
    to=$(printf '%s0' "$PREFIX" | base64 -w0) # '/' + 1
    curl -sf -X POST "$EP/v3/kv/range" -d "{\"key\":\"$from\",\"range_end\":\"$to\",\"count_only\":true}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))'
}
for i in 0 1 2; do start_node "$i"; done
echo "etcd at $EP; servers on 127.0.0.1:$PORT0..$((PORT0 + 2)); registered under $PREFIX: $(registered)"

# --- the load, the failure, the recovery ----------------------------------
: >"$WORK/phases"
"$BIN/cluster-load" --etcd "$EP" --prefix "$PREFIX" --threads "$THREADS" \
    --secs $((BEFORE + DOWN + AFTER)) --phase-file "$WORK/phases" \
    > >(tee "$WORK/load.log") 2>"$WORK/load.err" &
LOAD_PID=$!
sleep "$BEFORE"
victim="127.0.0.1:$((PORT0 + 1))"
kill -KILL "${NODE_PID[1]}"
wait "${NODE_PID[1]}" 2>/dev/null || true
NODE_PID[1]=""
echo "during" >>"$WORK/phases"
echo ">>> killed $victim with SIGKILL; still registered: $(registered) keys (lease TTL ${TTL}s)"
sleep "$DOWN"
echo ">>> registered before the restart: $(registered) keys"
start_node 1
echo "after" >>"$WORK/phases"
echo ">>> restarted $victim; registered: $(registered) keys"
wait "$LOAD_PID"
LOAD_PID=""

# --- graceful stop: every key is revoked ----------------------------------
for i in 0 1 2; do
    stop_pid "${NODE_PID[i]}"
    NODE_PID[i]=""
done
echo "servers stopped gracefully; registered: $(registered) keys"
