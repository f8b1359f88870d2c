#!/usr/bin/env bash
# UDP echo comparison: ferropoll's udp-echo-server (recvmmsg/sendmmsg
# batches of 32 with GSO replies, the same without GSO, and batches of 1
# without GSO to show what batching buys) against a
# plain tokio UdpSocket echo server (recv_from then send_to per datagram).
# Same load for each (udp-bench: FLOWS sockets x WINDOW datagrams of SIZE
# bytes in flight, every echo checked, losses counted), alternating
# contenders, medians reported.
#
# Server pinned to CPU 0 with one loop/thread, load pinned to CPU 1. Server
# CPU per datagram = (utime+stime from /proc/PID/stat across the run) /
# echoes received by the load (warm-up included). "per core" = datagrams
# per second of server CPU = 1e6 / cpu_us_per_dgram: what one fully busy
# server core would sustain; the goal compares that with tokio's.
#
# AWAKE=1 (the default) runs a nice-19 busy loop on CPU 0 beside the server.
# On this VM a vCPU with nothing to run halts, and waking it again for the
# next datagram costs tens of microseconds of host latency: a closed-loop
# UDP load then measures the hypervisor's wake-up path, and the server that
# sleeps most (the cheaper one) looks slowest. The spinner keeps CPU 0 from
# halting for both contenders alike; at nice 19 it gets ~1.5 % of the CPU
# while the server is runnable, and server CPU is measured per process.
# AWAKE=0 measures without it.
#
# Usage: examples/bench/udp-compare.sh
# Env:   ROUNDS=3 SECS=5 WARMUP=1 SIZE=64 FLOWS=8 WINDOW=16 AWAKE=1
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
. examples/bench/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
SIZE=${SIZE:-64}
FLOWS=${FLOWS:-8}
WINDOW=${WINDOW:-16}
AWAKE=${AWAKE:-1}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -q -p ferropoll-examples --bin udp-echo-server --bin udp-bench
cargo build --release -q -p ferropoll-baselines --bin tokio-udp-echo
BIN="$TARGET/release"
bench_init
SPINNER=""
stop_spinner() {
    if [ -n "$SPINNER" ]; then kill "$SPINNER" 2>/dev/null || true; wait "$SPINNER" 2>/dev/null || true; SPINNER=""; fi
}
trap 'stop_server; stop_spinner; rm -rf "$WORK"' EXIT
if [ "$AWAKE" = 1 ]; then
    taskset -c 0 nice -n 19 bash -c 'while :; do :; done' &
    SPINNER=$!
fi

CONTENDERS="ferropoll-b32 ferropoll-b32-nogso ferropoll-b1 tokio"
port_of() {
    case $1 in ferropoll-b32) echo 9211 ;; ferropoll-b1) echo 9212 ;; tokio) echo 9213 ;; ferropoll-b32-nogso) echo 9214 ;; esac
}

start_udp() { # name -> sets SERVER_PID once the server says it listens
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        ferropoll-b32) taskset -c 0 "$BIN/udp-echo-server" --addr "127.0.0.1:$port" --loops 1 --batch 32 >"$WORK/server.log" 2>&1 & ;;
        ferropoll-b32-nogso) taskset -c 0 "$BIN/udp-echo-server" --addr "127.0.0.1:$port" --loops 1 --batch 32 --no-gso >"$WORK/server.log" 2>&1 & ;;
        ferropoll-b1) taskset -c 0 "$BIN/udp-echo-server" --addr "127.0.0.1:$port" --loops 1 --batch 1 --no-gso >"$WORK/server.log" 2>&1 & ;;
        tokio) taskset -c 0 "$BIN/tokio-udp-echo" --addr "127.0.0.1:$port" --threads 1 >"$WORK/server.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        grep -q listening "$WORK/server.log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server $name did not start" >&2
    cat "$WORK/server.log" >&2
    exit 1
}

RESULTS="$WORK/results"
: >"$RESULTS"
csv_init udp-compare "UDP echo, ${SIZE} B datagrams; server pinned to CPU 0, load to CPU 1; secs=$SECS"
echo "# udp-compare: size=$SIZE flows=$FLOWS window=$WINDOW awake=$AWAKE rounds=$ROUNDS secs=$SECS warmup=$WARMUP  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for name in $CONTENDERS; do
        start_udp "$name"
        t0=$(cpu_ticks "$SERVER_PID")
        line=$(taskset -c 1 "$BIN/udp-bench" --addr "127.0.0.1:$(port_of "$name")" --flows "$FLOWS" \
            --window "$WINDOW" --size "$SIZE" --secs "$SECS" --warmup "$WARMUP" --quiet | tail -n 1)
        t1=$(cpu_ticks "$SERVER_PID")
        stop_server
        total=$(echo "$line" | kv total_replies)
        cpu_us=$(cpu_us_per "$t0" "$t1" "$total")
        echo "$name $round $line cpu_us_per_dgram=$cpu_us" >>"$RESULTS"
        v() { echo "$line" | kv "$1"; }
        csv_row udp "${SIZE}B" flows "$FLOWS" "$name" "$round" "$(v dgrams_per_s)" dgrams/s \
            "" "" "" "$cpu_us" "$(v errors)"
        echo "  round $round $name: $line cpu_us_per_dgram=$cpu_us" >&2
    done
done

echo
printf '%-15s %12s %8s %16s %18s %14s\n' server dgrams/s lost cpu_us/dgram dgrams/s/core "per-core/tokio"
get() { awk -v n="$1" '$1 == n' "$RESULTS" | kv "$2" | median; }
tokio_cpu=$(get tokio cpu_us_per_dgram)
tokio_core=$(awk -v c="$tokio_cpu" 'BEGIN {if (c + 0 > 0) printf "%.0f", 1e6 / c; else print 0}')
for name in $CONTENDERS; do
    cpu=$(get "$name" cpu_us_per_dgram)
    core=$(awk -v c="$cpu" 'BEGIN {if (c + 0 > 0) printf "%.0f", 1e6 / c; else print 0}')
    printf '%-15s %12.0f %8s %16s %18s %14s\n' "$name" "$(get "$name" dgrams_per_s)" "$(get "$name" lost)" \
        "$cpu" "$core" "$(ratio "$core" "$tokio_core")"
done
csv_done
