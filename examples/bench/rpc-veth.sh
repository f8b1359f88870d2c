#!/usr/bin/env bash
# Unary RPC across two network namespaces joined by veth (not loopback):
# ferropoll (rpc-server, one loop; rpc-bench) against tonic (tonic-echo, one
# current-thread runtime; tonic-bench), 128 B echo, CONC calls in flight on
# one connection, with 0 ms and with 1 ms of added round-trip time.
#
# The server runs in namespace fpb-srv (198.18.0.1) pinned to CPU 0, the load
# in fpb-cli (198.18.0.2) pinned to CPU 1. With RTT > 0 the link passes
# through the delay-box (examples/src/bin/delay-box.rs, RTT/2 each way) in a
# namespace of its own, also pinned to CPU 1 (it shares the load's core, the
# same for both contenders). Contenders alternate, medians are reported;
# server CPU per call as in rpc-compare.sh. Needs root, iproute2, ethtool.
#
# Usage: sudo examples/bench/rpc-veth.sh
# Env:   ROUNDS=3 SECS=5 WARMUP=1 CONC=50 SIZE=128 RTTS_US="0 1000"
#        CARGO_TARGET_DIR (where to build; default target/)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
. examples/bench/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
CONC=${CONC:-50}
SIZE=${SIZE:-128}
RTTS_US=${RTTS_US:-"0 1000"}
TARGET=${CARGO_TARGET_DIR:-target}
[ "$(id -u)" -eq 0 ] || { echo "rpc-veth.sh creates network namespaces: run it as root" >&2; exit 1; }
need_tool ip iproute2
need_tool ethtool ethtool
cargo build --release -q -p ferropoll-examples --bin rpc-server --bin rpc-bench
cargo build --release -q -p ferropoll-examples --features netns --bin delay-box
cargo build --release -q -p ferropoll-baselines --bin tonic-echo --bin tonic-bench
BIN="$TARGET/release"
bench_init

SRV=fpb-srv CLI=fpb-cli BOX=fpb-box
SRV_IP=198.18.0.1
BOX_PID=""
net_down() {
    if [ -n "$BOX_PID" ]; then kill "$BOX_PID" 2>/dev/null || true; wait "$BOX_PID" 2>/dev/null || true; BOX_PID=""; fi
    for ns in $SRV $CLI $BOX; do ip netns del "$ns" 2>/dev/null || true; done
}
trap 'stop_server; net_down; rm -rf "$WORK"' EXIT

net_up() { # rtt_us
    net_down
    for ns in $SRV $CLI; do ip netns add "$ns"; done
    if [ "$1" -eq 0 ]; then
        ip -n $SRV link add eth0 type veth peer name eth0 netns $CLI
    else
        ip netns add $BOX
        ip -n $BOX link add dly0 type veth peer name eth0 netns $CLI
        ip -n $BOX link add dly1 type veth peer name eth0 netns $SRV
        for d in dly0 dly1; do
            ip -n $BOX link set "$d" up
            ip netns exec $BOX ethtool -K "$d" gro off tso off gso off >/dev/null 2>&1 || true
        done
        # Real checksums and MTU-sized frames through the box.
        for ns in $SRV $CLI; do
            ip netns exec "$ns" ethtool -K eth0 tx off tso off gso off gro off >/dev/null
        done
    fi
    ip -n $SRV addr add $SRV_IP/16 dev eth0
    ip -n $CLI addr add 198.18.0.2/16 dev eth0
    for ns in $SRV $CLI; do
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
    if [ "$1" -gt 0 ]; then
        local mac
        mac=$(ip -n $CLI -br link show eth0 | awk '{print $3}')
        ip netns exec $BOX taskset -c 1 "$BIN/delay-box" --a dly0 --b dly1 --host-mac "$mac" \
            --delay-us $(($1 / 2)) 2>"$WORK/box.log" &
        BOX_PID=$!
    fi
}

port_of() { case $1 in ferropoll) echo 9251 ;; tonic) echo 9252 ;; esac; }

start_server() { # name -> sets SERVER_PID, waits until the client side can connect
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        ferropoll) ip netns exec $SRV taskset -c 0 "$BIN/rpc-server" --addr "$SRV_IP:$port" --loops 1 >"$WORK/server.log" 2>&1 & ;;
        tonic) ip netns exec $SRV taskset -c 0 "$BIN/tonic-echo" --addr "$SRV_IP:$port" --threads 1 >"$WORK/server.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        ip netns exec $CLI bash -c "exec 3<>/dev/tcp/$SRV_IP/$port" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server $name did not start:" >&2
    cat "$WORK/server.log" >&2
    exit 1
}

RESULTS="$WORK/results"
: >"$RESULTS"
csv_init rpc-veth "unary echo ${SIZE} B x ${CONC} across two namespaces (veth); server CPU 0, load CPU 1; secs=$SECS warmup=$WARMUP"
echo "# rpc-veth: rounds=$ROUNDS secs=$SECS warmup=$WARMUP size=$SIZE conc=$CONC  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for rtt in $RTTS_US; do
    net_up "$rtt"
    wl="rtt${rtt}us"
    for round in $(seq 1 "$ROUNDS"); do
        for name in ferropoll tonic; do
            start_server "$name"
            client=rpc-bench
            [ "$name" = tonic ] && client=tonic-bench
            t0=$(cpu_ticks "$SERVER_PID")
            line=$(ip netns exec $CLI taskset -c 1 "$BIN/$client" --addr "$SRV_IP:$(port_of "$name")" \
                --concurrency "$CONC" --size "$SIZE" --secs "$SECS" --warmup "$WARMUP" 2>"$WORK/bench.log" | tail -n 1)
            t1=$(cpu_ticks "$SERVER_PID")
            stop_server
            total=$(echo "$line" | kv total)
            cpu_us=$(awk -v a="$t0" -v b="$t1" -v n="$total" -v t="$TCK" -v s="$SECS" -v w="$WARMUP" \
                'BEGIN {n = n * (s + w) / s; printf "%.2f", (b - a) * 1e6 / t / (n > 0 ? n : 1)}')
            echo "$wl $name $round $line cpu_us_per_call=$cpu_us" >>"$RESULTS"
            v() { echo "$line" | kv "$1"; }
            csv_row rpc-veth "${SIZE}B" rtt_us "$rtt" "$name" "$round" "$(v qps)" calls/s \
                "$(v p50_us)" "$(v p99_us)" "$(v p999_us)" "$cpu_us" "$(v errors)"
            echo "  $wl round $round $name: $line cpu_us_per_call=$cpu_us" >&2
        done
    done
done
net_down

echo
printf '%-11s %-10s %10s %8s %8s %9s %7s %12s %10s %9s %9s\n' workload server calls/s p50_us p99_us p999_us errors cpu_us/call "qps/tonic" "p99/tonic" "cpu/tonic"
for rtt in $RTTS_US; do
    wl="rtt${rtt}us"
    get() { awk -v w="$wl" -v n="$1" '$1 == w && $2 == n' "$RESULTS" | kv "$2" | median; }
    t_qps=$(get tonic qps)
    t_p99=$(get tonic p99_us)
    t_cpu=$(get tonic cpu_us_per_call)
    for name in ferropoll tonic; do
        qps=$(get "$name" qps)
        p99=$(get "$name" p99_us)
        cpu=$(get "$name" cpu_us_per_call)
        printf '%-11s %-10s %10.0f %8s %8s %9s %7s %12s %10s %9s %9s\n' "$wl" "$name" "$qps" \
            "$(get "$name" p50_us)" "$p99" "$(get "$name" p999_us)" "$(get "$name" errors)" "$cpu" \
            "$(ratio "$qps" "$t_qps")" "$(ratio "$p99" "$t_p99")" "$(ratio "$cpu" "$t_cpu")"
    done
done
csv_done
