# Shared helpers of the comparison scripts in examples/bench (sourced, not run).
#
# The method (see DESIGN.md "Where the time goes"): the server is pinned to
# CPU 0 with one loop/thread, the load generator to CPU 1; server CPU per
# request = (utime + stime from /proc/PID/stat across the run) / requests;
# contenders alternate (A B A B ...) and medians are reported.
#
# Provides: bench_init, start_pinned, wait_port, stop_server, cpu_ticks,
# rss_kib, cpu_us_per, kv, median, ratio, csv_init, csv_row, csv_done.
# Uses/sets: WORK, SERVER_PID, TCK, CSV.

bench_init() { # sets TCK and WORK (a temp dir removed on exit, with the server)
    TCK=$(getconf CLK_TCK)
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }
    WORK=$(mktemp -d)
    SERVER_PID=""
    trap 'stop_server; rm -rf "$WORK"' EXIT
}

need_tool() { # binary package
    command -v "$1" >/dev/null || {
        echo "$1 not found: install Debian package $2 (bash .ci/test installs it)" >&2
        exit 1
    }
}

wait_port() { # port -> 0 once something accepts on 127.0.0.1:port (10 s bound)
    local port=$1
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

start_pinned() { # port cmd... -> runs cmd on CPU 0, sets SERVER_PID, waits for the port
    local port=$1
    shift
    taskset -c 0 "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_port "$port"; then
        echo "server did not start: $*" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
}

stop_server() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

cpu_us_per() { # ticks_before ticks_after count -> µs of CPU per item
    awk -v a="$1" -v b="$2" -v n="$3" -v t="$TCK" \
        'BEGIN {printf "%.2f", (b - a) * 1e6 / t / (n > 0 ? n : 1)}'
}

kv() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }

median() {
    sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# Per-round results as CSV, one row per contender and round, for the chart
# tool (`cargo run -p ferropoll-charts`). Columns not measured by a script
# are left empty. The first line is a `#` comment: script, date, machine.
CSV_COLUMNS="bench,workload,x_name,x,contender,round,throughput,throughput_unit,p50_us,p99_us,p999_us,cpu_us_per_op,errors"

csv_init() { # name "description" -> sets CSV ($BENCH_CSV_DIR/name.csv, default docs/bench) and writes its head
    CSV="${BENCH_CSV_DIR:-docs/bench}/$1.csv"
    mkdir -p "$(dirname "$CSV")"
    {
        echo "# $1: $2  $(date -u +%FT%TZ)  $(nproc) cpus  $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
        echo "$CSV_COLUMNS"
    } >"$CSV"
}

csv_row() { # the values of CSV_COLUMNS, in order ("" where not measured)
    local IFS=,
    echo "$*" >>"$CSV"
}

csv_done() { echo "per-round results: $CSV (charts: cargo run -p ferropoll-charts -- ${CSV%/*})"; }

ratio() { # a b -> a/b with two decimals, or "-"
    awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 > 0 && a != "nan") printf "%.2f", a / b; else print "-"}'
}
