#!/usr/bin/env bash
# Soak: DURATION seconds (default 600) of mixed RPC, RESP and echo load, with
# connections churning, against one rpc-server, one resp-server and one
# echo-server (two loops each). Not part of CI.
#
# The load runs in rounds of ROUND seconds (default 10). Each round starts
# fresh load generators, so every round opens and closes its connections:
#   rpc-bench       50 calls in flight over 2 connections, 256-byte payloads
#   echo-bench      50 connections, 4 messages of 512 bytes in flight each
#   redis-benchmark 50 connections: SET, GET, INCR, LPUSH, LRANGE_100
#   redis-benchmark 20 connections with -k 0: a new connection per request
# Every response is checked by the generators (redis-benchmark: exit status
# and error lines). The RESP store is emptied (FLUSHALL) after each round so
# that its data set does not grow.
#
# Reported: requests per generator, errors, and for each server its RSS and
# open descriptors idle before the load, after the first round (the
# baseline: allocator caches warm) and idle after the last round. The goal
# is RSS growth (end vs. first round) <= 5 % and zero errors. The highest
# RSS seen after any round is reported beside it.
#
# GLIBC_TRIM=1 (the default) starts the servers with MALLOC_TRIM_THRESHOLD_=0,
# so that glibc's malloc gives freed memory back to the system at once. The
# RESP store's data set is allocated and freed (FLUSHALL) every round; with
# glibc's default threshold the freed pages are partly kept and the RSS
# wanders in a band (6-15 MiB here) in which a real leak would be hard to
# see. GLIBC_TRIM=0 measures with glibc's defaults.
#
# Usage: DURATION=600 examples/bench/soak.sh   (CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
source examples/bench/lib.sh

DURATION=${DURATION:-600}
ROUND=${ROUND:-10}
GLIBC_TRIM=${GLIBC_TRIM:-1}
TARGET=${CARGO_TARGET_DIR:-target}
need_tool redis-benchmark redis-tools
need_tool redis-cli redis-tools
cargo build --release -q -p ferropoll-examples \
    --bin rpc-server --bin rpc-bench --bin resp-server --bin echo-server --bin echo-bench
BIN="$TARGET/release"
bench_init

RPC_PORT=9271 RESP_PORT=9272 ECHO_PORT=9273
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap stop_all EXIT

start() { # name port cmd...
    local name=$1 port=$2
    shift 2
    if [ "$GLIBC_TRIM" = 1 ]; then
        MALLOC_TRIM_THRESHOLD_=0 "$@" >"$WORK/$name.log" 2>&1 &
    else
        "$@" >"$WORK/$name.log" 2>&1 &
    fi
    PIDS+=("$!")
    eval "PID_$name=$!"
    wait_port "$port" || { echo "$name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1; }
}
start rpc "$RPC_PORT" "$BIN/rpc-server" --addr "127.0.0.1:$RPC_PORT" --loops 2
start resp "$RESP_PORT" "$BIN/resp-server" --addr "127.0.0.1:$RESP_PORT" --loops 2
start echo "$ECHO_PORT" "$BIN/echo-server" --addr "127.0.0.1:$ECHO_PORT" --loops 2

fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
pid_of() { eval "echo \$PID_$1"; }
snapshot() { # label -> "<name>_rss_<label>=KiB <name>_fds_<label>=N ..." into $WORK/snap.<label>
    local label=$1 n p
    : >"$WORK/snap.$label"
    for n in rpc resp echo; do
        p=$(pid_of "$n")
        kill -0 "$p" 2>/dev/null || { echo "server $n died" >&2; cat "$WORK/$n.log" >&2; exit 1; }
        echo "$n $(rss_kib "$p") $(fds "$p")" >>"$WORK/snap.$label"
    done
}
# Waits (bounded) until every server is back to `want` descriptors or fewer.
settle_fds() { # snapshot-label-of-idle
    local n p want
    for _ in $(seq 1 100); do
        local ok=1
        while read -r n _ want; do
            p=$(pid_of "$n")
            [ "$(fds "$p")" -le "$want" ] || ok=0
        done <"$WORK/snap.$1"
        [ "$ok" = 1 ] && return 0
        sleep 0.1
    done
}

snapshot idle0
rpc_calls=0 echo_msgs=0 resp_reqs=0 errors=0 rounds=0
began=$(date +%s)
while :; do
    now=$(date +%s)
    [ $((now - began)) -lt "$DURATION" ] || break
    r=$rounds
    "$BIN/rpc-bench" --addr "127.0.0.1:$RPC_PORT" --concurrency 50 --connections 2 --size 256 \
        --secs "$ROUND" --warmup 0 >"$WORK/rpc.$r" 2>/dev/null &
    a=$!
    "$BIN/echo-bench" --addr "127.0.0.1:$ECHO_PORT" --conns 50 --size 512 --pipeline 4 \
        --secs "$ROUND" --warmup 0 >"$WORK/echo.$r" 2>/dev/null &
    b=$!
    timeout $((ROUND * 3)) redis-benchmark -h 127.0.0.1 -p "$RESP_PORT" -c 50 -n 20000 -r 10000 \
        -t set,get,incr,lpush,lrange_100 -q >"$WORK/resp.$r" 2>&1 &
    c=$!
    timeout $((ROUND * 3)) redis-benchmark -h 127.0.0.1 -p "$RESP_PORT" -c 20 -n 3000 -k 0 \
        -t ping,get -q >"$WORK/churn.$r" 2>&1 &
    d=$!
    wait "$a" || { echo "round $r: rpc-bench failed" >&2; errors=$((errors + 1)); }
    wait "$b" || { echo "round $r: echo-bench failed" >&2; errors=$((errors + 1)); }
    wait "$c" || { echo "round $r: redis-benchmark failed" >&2; errors=$((errors + 1)); }
    wait "$d" || { echo "round $r: redis-benchmark -k 0 failed" >&2; errors=$((errors + 1)); }
    line=$(tail -n 1 "$WORK/rpc.$r")
    rpc_calls=$((rpc_calls + $(echo "$line" | kv total)))
    errors=$((errors + $(echo "$line" | kv errors)))
    line=$(tail -n 1 "$WORK/echo.$r")
    echo_msgs=$((echo_msgs + $(echo "$line" | kv total_msgs)))
    errors=$((errors + $(echo "$line" | kv errors)))
    bad=$(cat "$WORK/resp.$r" "$WORK/churn.$r" | grep -ci "error" || true)
    errors=$((errors + bad))
    resp_reqs=$((resp_reqs + 5 * 20000 + 2 * 3000))
    # LPUSH grows one list every round: empty the store so that RSS measures
    # the server, not the data set.
    redis-cli -p "$RESP_PORT" FLUSHALL >/dev/null || errors=$((errors + 1))
    rounds=$((rounds + 1))
    if [ "$rounds" = 1 ]; then
        settle_fds idle0
        snapshot first
    fi
    for n in rpc resp echo; do
        echo "$n $(rss_kib "$(pid_of "$n")")" >>"$WORK/rss.rounds"
    done
    printf '\rsoak: %ds, %d rounds, errors %d ' "$(($(date +%s) - began))" "$rounds" "$errors" >&2
done
echo >&2
settle_fds idle0
snapshot end

echo "soak duration_s=$(($(date +%s) - began)) rounds=$rounds round_s=$ROUND glibc_trim=$GLIBC_TRIM rpc_calls=$rpc_calls echo_msgs=$echo_msgs resp_requests=$resp_reqs errors=$errors"
while read -r n rss0 fd0; do
    read -r _ rss1 fd1 < <(grep "^$n " "$WORK/snap.first")
    read -r _ rss2 fd2 < <(grep "^$n " "$WORK/snap.end")
    growth=$(awk -v a="$rss1" -v b="$rss2" 'BEGIN {printf "%.1f", (b - a) * 100 / a}')
    max=$(awk -v n="$n" '$1 == n && $2 > m {m = $2} END {print m + 0}' "$WORK/rss.rounds")
    echo "server=$n rss_idle_kib=$rss0 rss_after_round1_kib=$rss1 rss_end_kib=$rss2 rss_growth_pct=$growth rss_max_kib=$max fds_idle=$fd0 fds_after_round1=$fd1 fds_end=$fd2"
done <"$WORK/snap.idle0"
