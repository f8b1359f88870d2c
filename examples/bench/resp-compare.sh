#!/usr/bin/env bash
# RESP comparison: resp-server (ferropoll, one loop) against a real
# redis-server (no persistence, one I/O thread), driven by redis-benchmark.
#
# Each server pinned to CPU 0, redis-benchmark to CPU 1. Every test runs as
# its own redis-benchmark invocation so that server CPU per request
# (utime+stime from /proc/PID/stat around that invocation / requests) is
# per command. Contenders alternate (A B A B ...) per round; medians.
# LRANGE_100/600 run as custom commands on a 600-element list (filled
# before them), so the fill is not counted.
#
# Usage: examples/bench/resp-compare.sh
# Env:   N=500000 (requests per test)  CLIENTS=50  ROUNDS=3  PIPELINES="1 16"
#        TESTS="ping,set,get,incr,lpush,rpush,lpop,rpop,lrange,mset"
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
source examples/bench/lib.sh

N=${N:-500000}
CLIENTS=${CLIENTS:-50}
ROUNDS=${ROUNDS:-3}
PIPELINES=${PIPELINES:-"1 16"}
TESTS=${TESTS:-"ping,set,get,incr,lpush,rpush,lpop,rpop,lrange,mset"}
TARGET=${CARGO_TARGET_DIR:-target}
FERRO_PORT=9201
REDIS_PORT=9202

need_tool redis-benchmark redis-tools
need_tool redis-cli redis-tools
need_tool redis-server redis-server
bench_init
cargo build --release -q -p ferropoll-examples --bin resp-server
BIN="$TARGET/release"

# Test list with ping and lrange split into what redis-benchmark reports.
CASES=()
for t in ${TESTS//,/ }; do
    case $t in
        ping) CASES+=(ping_inline ping_mbulk) ;;
        lrange) CASES+=(lrange_100 lrange_600) ;;
        *) CASES+=("$t") ;;
    esac
done

port_of() { case $1 in ferropoll) echo $FERRO_PORT ;; redis) echo $REDIS_PORT ;; esac; }

start() { # contender
    local port
    port=$(port_of "$1")
    case $1 in
        ferropoll) start_pinned "$port" "$BIN/resp-server" --addr "127.0.0.1:$port" --loops 1 ;;
        redis) start_pinned "$port" redis-server --port "$port" --bind 127.0.0.1 --save '' \
            --appendonly no --io-threads 1 --daemonize no --protected-mode no ;;
    esac
}

bench() { # port pipeline case -> prints the CSV row of the run
    local port=$1 p=$2 c=$3
    local common=(-h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$N" -P "$p" -q --csv)
    case $c in
        lrange_100) taskset -c 1 redis-benchmark "${common[@]}" LRANGE mylist 0 99 ;;
        lrange_600) taskset -c 1 redis-benchmark "${common[@]}" LRANGE mylist 0 599 ;;
        *) taskset -c 1 redis-benchmark "${common[@]}" -t "$c" ;;
    esac | grep -v '^"test"' | tail -n 1
}

RESULTS="$WORK/results"
: >"$RESULTS"
csv_init resp-compare "redis-benchmark -c$CLIENTS -n$N; server pinned to CPU 0, load to CPU 1"
echo "# resp-compare: N=$N clients=$CLIENTS rounds=$ROUNDS pipelines=($PIPELINES)  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for name in ferropoll redis; do
        start "$name"
        port=$(port_of "$name")
        for p in $PIPELINES; do
            for c in "${CASES[@]}"; do
                if [[ $c == lrange_* ]]; then
                    redis-cli -p "$port" del mylist >/dev/null
                    taskset -c 1 redis-benchmark -h 127.0.0.1 -p "$port" -c 1 -n 600 -t lpush -q >/dev/null
                fi
                t0=$(cpu_ticks "$SERVER_PID")
                row=$(bench "$port" "$p" "$c")
                t1=$(cpu_ticks "$SERVER_PID")
                rps=$(echo "$row" | cut -d, -f2 | tr -d '"')
                cpu=$(cpu_us_per "$t0" "$t1" "$N")
                echo "P=$p case=$c server=$name round=$round rps=$rps cpu_us=$cpu" >>"$RESULTS"
                csv_row resp "$c" pipeline "$p" "$name" "$round" "$rps" req/s "" "" "" "$cpu" ""
                echo "  round $round P=$p $name $c: rps=$rps cpu_us/req=$cpu" >&2
            done
        done
        stop_server
    done
done

get() { grep " case=$2 server=$3 " "$RESULTS" | grep "^P=$1 " | kv "$4" | median; }
for p in $PIPELINES; do
    echo
    echo "## -P $p (-c $CLIENTS -n $N, medians of $ROUNDS)"
    printf '%-12s %12s %12s %7s %10s %10s %7s\n' test ferro_rps redis_rps rps_x ferro_cpu redis_cpu cpu_x
    for c in "${CASES[@]}"; do
        fr=$(get "$p" "$c" ferropoll rps)
        rr=$(get "$p" "$c" redis rps)
        fc=$(get "$p" "$c" ferropoll cpu_us)
        rc=$(get "$p" "$c" redis cpu_us)
        printf '%-12s %12.0f %12.0f %7s %10s %10s %7s\n' "$c" "$fr" "$rr" "$(ratio "$fr" "$rr")" \
            "$fc" "$rc" "$(ratio "$fc" "$rc")"
    done
done
echo
echo "(rps_x = ferropoll/redis requests per second; cpu = server CPU µs per request; cpu_x = ferropoll/redis)"
csv_done
