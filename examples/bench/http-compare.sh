#!/usr/bin/env bash
# HTTP comparison: http-server (ferropoll, one loop) against hyper-hello
# (hyper 1.x on tokio's current-thread runtime), driven by wrk on /plaintext,
# plain and with a pipeline of 16 requests (examples/bench/pipeline.lua).
#
# Each server pinned to CPU 0, wrk (one thread) to CPU 1. Server CPU per
# request = (utime+stime from /proc/PID/stat around the wrk run) / requests
# wrk completed. Contenders alternate (A B A B ...); medians.
#
# Usage: examples/bench/http-compare.sh
# Env:   SECS=10 CONNS=256 ROUNDS=3 DEPTHS="1 16"
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
source examples/bench/lib.sh

SECS=${SECS:-10}
CONNS=${CONNS:-256}
ROUNDS=${ROUNDS:-3}
DEPTHS=${DEPTHS:-"1 16"}
TARGET=${CARGO_TARGET_DIR:-target}
FERRO_PORT=9301
HYPER_PORT=9302
LUA=examples/bench/pipeline.lua

need_tool wrk wrk
bench_init
cargo build --release -q -p ferropoll-examples --bin http-server
cargo build --release -q -p ferropoll-baselines --bin hyper-hello
BIN="$TARGET/release"

port_of() { case $1 in ferropoll) echo $FERRO_PORT ;; hyper) echo $HYPER_PORT ;; esac; }

start() {
    local port
    port=$(port_of "$1")
    case $1 in
        ferropoll) start_pinned "$port" "$BIN/http-server" --addr "127.0.0.1:$port" --loops 1 ;;
        hyper) start_pinned "$port" "$BIN/hyper-hello" --addr "127.0.0.1:$port" --threads 1 ;;
    esac
}

# wrk's latency text (e.g. 812.00us, 1.20ms, 2.00s) -> microseconds
to_us() {
    awk '{v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
          m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : 1;
          printf "%.0f", v * m}'
}

RESULTS="$WORK/results"
: >"$RESULTS"
csv_init http-compare "GET /plaintext with wrk -t1 -c$CONNS; server pinned to CPU 0, load to CPU 1; secs=$SECS"
echo "# http-compare: secs=$SECS conns=$CONNS rounds=$ROUNDS depths=($DEPTHS)  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for d in $DEPTHS; do
        for name in ferropoll hyper; do
            start "$name"
            url="http://127.0.0.1:$(port_of "$name")/plaintext"
            script=()
            if [ "$d" -gt 1 ]; then script=(-s "$LUA"); fi
            t0=$(cpu_ticks "$SERVER_PID")
            taskset -c 1 wrk -t1 -c "$CONNS" -d "${SECS}s" --latency "${script[@]}" "$url" -- "$d" >"$WORK/wrk.out"
            t1=$(cpu_ticks "$SERVER_PID")
            stop_server
            reqs=$(awk '/ requests in / {print $1}' "$WORK/wrk.out")
            rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.out")
            p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.out" | to_us)
            p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out" | to_us)
            errs=$(grep -cE 'Non-2xx|Socket errors' "$WORK/wrk.out" || true)
            cpu=$(cpu_us_per "$t0" "$t1" "$reqs")
            echo "depth=$d server=$name round=$round rps=$rps p99_us=$p99 cpu_us=$cpu errors=$errs" >>"$RESULTS"
            # wrk's latency figures mean nothing under the pipelining script.
            if [ "$d" -gt 1 ]; then p50="" p99=""; fi
            csv_row http plaintext "pipeline depth" "$d" "$name" "$round" "$rps" req/s \
                "$p50" "$p99" "" "$cpu" "$errs"
            echo "  round $round depth $d $name: rps=$rps p99_us=$p99 cpu_us/req=$cpu errors=$errs" >&2
            if [ "$errs" != 0 ]; then grep -E 'Non-2xx|Socket errors' "$WORK/wrk.out" >&2; fi
        done
    done
done

get() { grep "^depth=$1 server=$2 " "$RESULTS" | kv "$3" | median; }
echo
printf '%-6s %-10s %12s %10s %12s %9s %9s\n' depth server req/s p99_us cpu_us/req "rps/hyper" "cpu/hyper"
for d in $DEPTHS; do
    hr=$(get "$d" hyper rps)
    hc=$(get "$d" hyper cpu_us)
    for name in ferropoll hyper; do
        r=$(get "$d" "$name" rps)
        c=$(get "$d" "$name" cpu_us)
        printf '%-6s %-10s %12.0f %10s %12s %9s %9s\n' "$d" "$name" "$r" "$(get "$d" "$name" p99_us)" "$c" \
            "$(ratio "$r" "$hr")" "$(ratio "$c" "$hc")"
    done
done
csv_done
