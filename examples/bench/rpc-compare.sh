#!/usr/bin/env bash
# Unary RPC comparison: ferropoll (rpc-server, one event loop) against tonic
# (tonic-echo, one current-thread tokio runtime), echo of SIZE-byte payloads
# with CONC calls in flight, each driven by its own client through the same
# load driver (rpc-bench / tonic-bench: one thread, one connection). Contenders alternate (A B A B ...), medians
# are reported.
#
# Server pinned to CPU 0, load pinned to CPU 1. Server CPU per call =
# (utime+stime from /proc/PID/stat across the run, warm-up included) /
# (calls measured × (secs+warmup)/secs): the warm-up's calls are estimated
# at the measured rate.
#
# MODE=stream runs bidi streaming instead (EchoStream: CONC streams on one
# connection, one message in flight each; "calls" are messages).
# Contenders: NAMES (default "ferropoll tonic"); "ferropoll-async" is
# rpc-server with async handlers; "ferropoll-intercepted" is rpc-server with
# the three interceptors on (--metrics-addr, --trace, --method-limit);
# "ferropoll-grpc" and "ferropoll-grpc-async" are rpc-server (sync / async
# handlers) driven over gRPC by tonic-bench, the client tonic is measured
# with (the same client for both servers). Ratios are against BASELINE (default tonic).
#
# Usage: examples/bench/rpc-compare.sh
# Env:   ROUNDS=3 SECS=5 WARMUP=1 SIZES="128 4096" CONCS="1 50 500"
#        MODE=unary|stream NAMES="ferropoll ferropoll-async tonic" BASELINE=tonic
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
. examples/bench/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
SIZES=${SIZES:-"128 4096"}
CONCS=${CONCS:-"1 50 500"}
MODE=${MODE:-unary}
NAMES=${NAMES:-"ferropoll tonic"}
BASELINE=${BASELINE:-tonic}
STREAM_FLAG=""
[ "$MODE" = stream ] && STREAM_FLAG="--stream"
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ferropoll-examples --bin rpc-server --bin rpc-bench
cargo build --release -q -p ferropoll-baselines --bin tonic-echo --bin tonic-bench
BIN="$TARGET/release"
bench_init

port_of() { case $1 in ferropoll) echo 9251 ;; tonic) echo 9252 ;; ferropoll-async) echo 9253 ;; ferropoll-intercepted) echo 9254 ;;
    ferropoll-grpc) echo 9255 ;; ferropoll-grpc-async) echo 9256 ;; esac; }

start_server() { # name -> sets SERVER_PID
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        ferropoll | ferropoll-grpc) start_pinned "$port" "$BIN/rpc-server" --addr "127.0.0.1:$port" --loops 1 ;;
        ferropoll-async | ferropoll-grpc-async) start_pinned "$port" "$BIN/rpc-server" --addr "127.0.0.1:$port" --loops 1 --handlers async ;;
        ferropoll-intercepted) start_pinned "$port" "$BIN/rpc-server" --addr "127.0.0.1:$port" --loops 1 \
            --metrics-addr 127.0.0.1:0 --trace --method-limit 100000 ;;
        tonic) start_pinned "$port" "$BIN/tonic-echo" --addr "127.0.0.1:$port" --threads 1 ;;
    esac
}

RESULTS="$WORK/results"
: >"$RESULTS"
csv_init rpc-compare "$MODE echo; server pinned to CPU 0, load to CPU 1; secs=$SECS warmup=$WARMUP"
echo "# rpc-compare: mode=$MODE rounds=$ROUNDS secs=$SECS warmup=$WARMUP  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in $SIZES; do
    for conc in $CONCS; do
        wl="${size}Bx${conc}"
        for round in $(seq 1 "$ROUNDS"); do
            for name in $NAMES; do
                start_server "$name"
                client=rpc-bench
                case $name in tonic | ferropoll-grpc*) client=tonic-bench ;; esac
                t0=$(cpu_ticks "$SERVER_PID")
                # shellcheck disable=SC2086 # STREAM_FLAG is empty or one word
                line=$(taskset -c 1 "$BIN/$client" --addr "127.0.0.1:$(port_of "$name")" $STREAM_FLAG \
                    --concurrency "$conc" --size "$size" --secs "$SECS" --warmup "$WARMUP" 2>"$WORK/bench.log" | tail -n 1)
                t1=$(cpu_ticks "$SERVER_PID")
                stop_server
                total=$(echo "$line" | kv total)
                cpu_us=$(awk -v a="$t0" -v b="$t1" -v n="$total" -v t="$TCK" -v s="$SECS" -v w="$WARMUP" \
                    'BEGIN {n = n * (s + w) / s; printf "%.2f", (b - a) * 1e6 / t / (n > 0 ? n : 1)}')
                echo "$wl $name $round $line cpu_us_per_call=$cpu_us" >>"$RESULTS"
                v() { echo "$line" | kv "$1"; }
                csv_row "rpc-$MODE" "${size}B" concurrency "$conc" "$name" "$round" "$(v qps)" calls/s \
                    "$(v p50_us)" "$(v p99_us)" "$(v p999_us)" "$cpu_us" "$(v errors)"
                echo "  $wl round $round $name: $line cpu_us_per_call=$cpu_us" >&2
            done
        done
    done
done

echo
printf '%-11s %-15s %10s %8s %8s %9s %7s %12s %10s %9s %9s\n' workload server calls/s p50_us p99_us p999_us errors cpu_us/call "qps/base" "p99/base" "cpu/base"
for size in $SIZES; do
    for conc in $CONCS; do
        wl="${size}Bx${conc}"
        get() { awk -v w="$wl" -v n="$1" '$1 == w && $2 == n' "$RESULTS" | kv "$2" | median; }
        t_qps=$(get "$BASELINE" qps)
        t_p99=$(get "$BASELINE" p99_us)
        t_cpu=$(get "$BASELINE" cpu_us_per_call)
        for name in $NAMES; do
            qps=$(get "$name" qps)
            p99=$(get "$name" p99_us)
            cpu=$(get "$name" cpu_us_per_call)
            printf '%-11s %-15s %10.0f %8s %8s %9s %7s %12s %10s %9s %9s\n' "$wl" "$name" "$qps" \
                "$(get "$name" p50_us)" "$p99" "$(get "$name" p999_us)" "$(get "$name" errors)" "$cpu" \
                "$(ratio "$qps" "$t_qps")" "$(ratio "$p99" "$t_p99")" "$(ratio "$cpu" "$t_cpu")"
        done
    done
done
csv_done
