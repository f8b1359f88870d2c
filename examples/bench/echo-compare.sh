#!/usr/bin/env bash
# Echo comparison: ferropoll (inline and pool dispatch), a plain tokio echo
# server and, when its source is there, the minimal C epoll server (the
# practical ceiling). Same load for each, one after the other, alternating
# contenders (A B C D A B C D ...), medians reported.
#
# Server pinned to CPU 0 with one loop/thread, load pinned to CPU 1. Server
# CPU per message = (utime+stime from /proc/PID/stat across the run) / the
# messages echoed (warm-up included on both sides).
#
# Usage: examples/bench/echo-compare.sh
# Env:   ROUNDS=3 SECS=5 WARMUP=1 IDLE=10000
#        EPOLL_ECHO_C=/work/shared/bench/epoll_echo.c (skipped if missing)
#        WORKLOADS="1024x50 1024x1000 64x100" (SIZExCONNS)
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
. examples/bench/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
IDLE=${IDLE:-10000}
EPOLL_ECHO_C=${EPOLL_ECHO_C:-/work/shared/bench/epoll_echo.c}
WORKLOADS=${WORKLOADS:-"1024x50 1024x1000 64x100"}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ferropoll-examples --bin echo-server --bin echo-bench
cargo build --release -q -p ferropoll-baselines --bin tokio-echo
BIN="$TARGET/release"
bench_init

CONTENDERS="ferropoll-inline ferropoll-pool tokio"
if [ -f "$EPOLL_ECHO_C" ]; then
    cc -O2 -pthread -o "$WORK/epoll_echo" "$EPOLL_ECHO_C"
    CONTENDERS="$CONTENDERS c-epoll"
else
    echo "note: $EPOLL_ECHO_C not found; C ceiling skipped" >&2
fi

port_of() {
    case $1 in
        ferropoll-inline) echo 9101 ;; ferropoll-pool) echo 9102 ;; tokio) echo 9103 ;; c-epoll) echo 9104 ;;
    esac
}

start_server() { # name -> sets SERVER_PID
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        ferropoll-inline) start_pinned "$port" "$BIN/echo-server" --addr "127.0.0.1:$port" --loops 1 --dispatch inline ;;
        ferropoll-pool) start_pinned "$port" "$BIN/echo-server" --addr "127.0.0.1:$port" --loops 1 --dispatch pool ;;
        tokio) start_pinned "$port" "$BIN/tokio-echo" --addr "127.0.0.1:$port" --threads 1 ;;
        c-epoll) start_pinned "$port" "$WORK/epoll_echo" "$port" 1 ;;
    esac
}

RESULTS="$WORK/results"
: >"$RESULTS"
csv_init echo-compare "TCP echo; server pinned to CPU 0, load to CPU 1; secs=$SECS warmup=$WARMUP"
echo "# echo-compare: rounds=$ROUNDS secs=$SECS warmup=$WARMUP  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for wl in $WORKLOADS; do
    size=${wl%x*}
    conns=${wl#*x}
    for round in $(seq 1 "$ROUNDS"); do
        for name in $CONTENDERS; do
            start_server "$name"
            t0=$(cpu_ticks "$SERVER_PID")
            line=$(taskset -c 1 "$BIN/echo-bench" --addr "127.0.0.1:$(port_of "$name")" --conns "$conns" \
                --size "$size" --secs "$SECS" --warmup "$WARMUP" 2>/dev/null | tail -n 1)
            t1=$(cpu_ticks "$SERVER_PID")
            stop_server
            total=$(echo "$line" | kv total_msgs)
            cpu_us=$(cpu_us_per "$t0" "$t1" "$total")
            echo "$wl $name $round $line cpu_us_per_msg=$cpu_us" >>"$RESULTS"
            v() { echo "$line" | kv "$1"; }
            csv_row echo "${size}B" connections "$conns" "$name" "$round" "$(v msgs_per_s)" msgs/s \
                "$(v p50_us)" "$(v p99_us)" "$(v p999_us)" "$cpu_us" "$(v errors)"
            echo "  $wl round $round $name: $line cpu_us_per_msg=$cpu_us" >&2
        done
    done
done

echo
printf '%-10s %-17s %10s %8s %8s %9s %12s %9s %9s\n' workload server msgs/s p50_us p99_us p999_us cpu_us/msg "cpu/C" "rate/tokio"
for wl in $WORKLOADS; do
    get() { awk -v w="$wl" -v n="$1" '$1 == w && $2 == n' "$RESULTS" | kv "$2" | median; }
    c_cpu=$(get c-epoll cpu_us_per_msg)
    tokio_rate=$(get tokio msgs_per_s)
    for name in $CONTENDERS; do
        rate=$(get "$name" msgs_per_s)
        cpu=$(get "$name" cpu_us_per_msg)
        printf '%-10s %-17s %10.0f %8s %8s %9s %12s %9s %9s\n' "$wl" "$name" "$rate" \
            "$(get "$name" p50_us)" "$(get "$name" p99_us)" "$(get "$name" p999_us)" "$cpu" \
            "$(ratio "$cpu" "$c_cpu")" \
            "$(ratio "$rate" "$tokio_rate")"
    done
done

echo
echo "# idle connections: $IDLE opened in one burst, pinged once, held idle"
printf '%-17s %12s %14s %10s\n' server burst_ms rss_growth_kib bytes/conn
for name in $CONTENDERS; do
    [ "$name" = ferropoll-pool ] && continue
    start_server "$name"
    sleep 0.2
    base=$(rss_kib "$SERVER_PID")
    taskset -c 1 "$BIN/echo-bench" --addr "127.0.0.1:$(port_of "$name")" --idle "$IDLE" --secs 4 >"$WORK/idle.out" 2>/dev/null &
    bench=$!
    for _ in $(seq 1 300); do grep -q '^ready' "$WORK/idle.out" && break; sleep 0.1; done
    sleep 0.5
    held=$(rss_kib "$SERVER_PID")
    wait "$bench" || true
    stop_server
    burst=$(head -n 1 "$WORK/idle.out" | kv burst_ms)
    conns=$(head -n 1 "$WORK/idle.out" | kv idle_conns)
    printf '%-17s %12s %14s %10s\n' "$name" "$burst" "$((held - base))" \
        "$(awk -v g="$((held - base))" -v n="${conns:-0}" 'BEGIN {if (n > 0) printf "%.0f", g * 1024 / n; else print "-"}')"
done
csv_done
