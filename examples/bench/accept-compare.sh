#!/usr/bin/env bash
# Accept throughput: codec-server with one listening socket (one loop
# accepts, connections are handed to the loops round robin) against
# per-loop SO_REUSEPORT listeners (each loop accepts its own; no hand-off),
# and a one-loop server as the reference. Load: codec-client --churn
# (CONCURRENCY connections at a time, each connect, one framed ping and its
# echo, close). Alternating contenders, medians reported.
#
# Server pinned to CPU 0 (its LOOPS loops share it), load pinned to CPU 1:
# on this 2-core box the comparison shows the cost of the cross-loop
# hand-off (task queue + eventfd wake) that per-loop listeners avoid, not
# multi-core accept scaling. Server CPU per connection from /proc/PID/stat.
#
# Usage: examples/bench/accept-compare.sh
# Env:   ROUNDS=3 SECS=5 WARMUP=1 LOOPS=2 CONCURRENCY=64
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
. examples/bench/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
LOOPS=${LOOPS:-2}
CONCURRENCY=${CONCURRENCY:-64}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -q -p ferropoll-examples --bin codec-server --bin codec-client
BIN="$TARGET/release"
bench_init

CONTENDERS="single-1loop single-${LOOPS}loops reuseport-${LOOPS}loops"
port_of() {
    case $1 in single-1loop) echo 9221 ;; single-*) echo 9222 ;; reuseport-*) echo 9223 ;; esac
}
start() {
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        single-1loop) start_pinned "$port" "$BIN/codec-server" --addr "127.0.0.1:$port" --loops 1 ;;
        single-*) start_pinned "$port" "$BIN/codec-server" --addr "127.0.0.1:$port" --loops "$LOOPS" ;;
        reuseport-*) start_pinned "$port" "$BIN/codec-server" --addr "127.0.0.1:$port" --loops "$LOOPS" --reuseport ;;
    esac
}

RESULTS="$WORK/results"
: >"$RESULTS"
csv_init accept-compare "connection churn; server pinned to CPU 0, load to CPU 1; secs=$SECS"
echo "# accept-compare: loops=$LOOPS concurrency=$CONCURRENCY rounds=$ROUNDS secs=$SECS warmup=$WARMUP  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for name in $CONTENDERS; do
        start "$name"
        t0=$(cpu_ticks "$SERVER_PID")
        line=$(taskset -c 1 "$BIN/codec-client" --addr "127.0.0.1:$(port_of "$name")" --churn \
            --concurrency "$CONCURRENCY" --secs "$SECS" --warmup "$WARMUP" | tail -n 1)
        t1=$(cpu_ticks "$SERVER_PID")
        stop_server
        total=$(echo "$line" | kv total_conns)
        cpu_us=$(cpu_us_per "$t0" "$t1" "$total")
        echo "$name $round $line cpu_us_per_conn=$cpu_us" >>"$RESULTS"
        v() { echo "$line" | kv "$1"; }
        csv_row accept churn concurrency "$CONCURRENCY" "$name" "$round" "$(v conns_per_s)" conns/s \
            "" "" "" "$cpu_us" "$(v errors)"
        echo "  round $round $name: $line cpu_us_per_conn=$cpu_us" >&2
    done
done

echo
printf '%-20s %12s %8s %14s %12s\n' server conns/s errors cpu_us/conn "rate/single"
get() { awk -v n="$1" '$1 == n' "$RESULTS" | kv "$2" | median; }
base=$(get "single-${LOOPS}loops" conns_per_s)
for name in $CONTENDERS; do
    rate=$(get "$name" conns_per_s)
    printf '%-20s %12.0f %8s %14s %12s\n' "$name" "$rate" "$(get "$name" errors)" \
        "$(get "$name" cpu_us_per_conn)" "$(ratio "$rate" "$base")"
done
csv_done
