#!/usr/bin/env bash
# gRPC unary echo under h2load (nghttp2's load generator, C): the same
# client, with a fixed gRPC request body (an `echo.EchoRequest` of SIZE
# bytes), drives rpc-server (ferropoll, one event loop; gRPC on its native
# port) and tonic-echo (one current-thread tokio runtime). One connection,
# CONC streams in flight (`h2load -c 1 -m CONC`), N requests per round.
# Contenders alternate (A B A B ...), medians are reported.
#
# Server pinned to CPU 0, h2load to CPU 1. Server CPU per call = utime +
# stime (/proc/PID/stat) across exactly the N requests / N. h2load counts
# 2xx answers; every answer's grpc-status is not checked here (the interop
# tests do that), so a run with `failed` or `errored` requests is reported.
#
# Usage: examples/bench/grpc-h2load.sh
# Env:   ROUNDS=3 N=200000 SIZE=128 CONCS="50 500"
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
. examples/bench/lib.sh

ROUNDS=${ROUNDS:-3}
N=${N:-200000}
SIZE=${SIZE:-128}
CONCS=${CONCS:-"50 500"}
need_tool h2load nghttp2-client
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ferropoll-examples --bin rpc-server
cargo build --release -q -p ferropoll-baselines --bin tonic-echo
BIN="$TARGET/release"
bench_init

# The request: gRPC prefix (uncompressed, length) + EchoRequest{payload}.
python3 - "$SIZE" "$WORK/request.grpc" <<'PY'
import struct, sys
size, path = int(sys.argv[1]), sys.argv[2]
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
msg = b"\x0a" + varint(size) + b"x" * size
open(path, "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY

port_of() { case $1 in ferropoll-grpc) echo 9261 ;; tonic) echo 9262 ;; esac; }
start_server() {
    local port
    port=$(port_of "$1")
    case $1 in
        ferropoll-grpc) start_pinned "$port" "$BIN/rpc-server" --addr "127.0.0.1:$port" --loops 1 ;;
        tonic) start_pinned "$port" "$BIN/tonic-echo" --addr "127.0.0.1:$port" --threads 1 ;;
    esac
}

RESULTS="$WORK/results"
: >"$RESULTS"
echo "# grpc-h2load: rounds=$ROUNDS n=$N size=$SIZE  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for conc in $CONCS; do
    for round in $(seq 1 "$ROUNDS"); do
        for name in ferropoll-grpc tonic; do
            start_server "$name"
            t0=$(cpu_ticks "$SERVER_PID")
            out=$(taskset -c 1 h2load -n "$N" -c 1 -m "$conc" -H 'content-type: application/grpc' \
                -H 'te: trailers' -d "$WORK/request.grpc" \
                "http://127.0.0.1:$(port_of "$name")/echo.Echo/Echo" 2>&1)
            t1=$(cpu_ticks "$SERVER_PID")
            stop_server
            qps=$(echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}')
            ok=$(echo "$out" | awk '/^requests:/ {print $8}')
            bad=$(echo "$out" | awk '/^requests:/ {print $10 + $12 + $14}')
            cpu=$(cpu_us_per "$t0" "$t1" "$N")
            echo "c$conc $name $round qps=$qps succeeded=$ok errors=$bad cpu_us_per_call=$cpu" >>"$RESULTS"
            echo "  c=$conc round $round $name: qps=$qps succeeded=$ok errors=$bad cpu_us_per_call=$cpu" >&2
        done
    done
done

echo
printf '%-8s %-15s %10s %7s %12s %10s %9s\n' conc server calls/s errors cpu_us/call "qps/tonic" "cpu/tonic"
summary=""
for conc in $CONCS; do
    get() { awk -v w="c$conc" -v n="$1" '$1 == w && $2 == n' "$RESULTS" | kv "$2" | median; }
    t_qps=$(get tonic qps)
    t_cpu=$(get tonic cpu_us_per_call)
    for name in ferropoll-grpc tonic; do
        qps=$(get "$name" qps)
        cpu=$(get "$name" cpu_us_per_call)
        printf '%-8s %-15s %10.0f %7s %12s %10s %9s\n' "$conc" "$name" "$qps" "$(get "$name" errors)" "$cpu" \
            "$(ratio "$qps" "$t_qps")" "$(ratio "$cpu" "$t_cpu")"
    done
    summary="$summary qps_ratio_c$conc=$(ratio "$(get ferropoll-grpc qps)" "$t_qps") cpu_ratio_c$conc=$(ratio "$(get ferropoll-grpc cpu_us_per_call)" "$t_cpu")"
done
echo "${summary# }"
