#!/usr/bin/env bash
# The newcomer's first command, timed as on a fresh machine: for each commit,
# a fresh clone, an empty CARGO_HOME (no registry index, no downloaded
# crates) and an empty target dir, then the README's first command
#   cargo run --release -p ferropoll-examples --bin demo
# until the demo exits (download + build + the demo's own ~4 s run).
# Commits alternate round by round (A B A B ...); medians are reported,
# with the ratio of each to the first (the baseline).
#
# Usage: examples/bench/first-build.sh [BASE_COMMIT [NEW_COMMIT]]
#        (default: the commit before the baselines moved out, and HEAD)
# Env:   ROUNDS=2  KEEP=0 (1: keep the clones under $WORK for inspection)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=examples/bench/lib.sh
. examples/bench/lib.sh

ROUNDS=${ROUNDS:-2}
BASE=$(git rev-parse --short "${1:-5cbee5a}")
NEW=$(git rev-parse --short "${2:-HEAD}")
CARGO_BIN=$(command -v cargo)
REPO=$(pwd)
bench_init

RESULTS="$WORK/results"
: >"$RESULTS"
echo "# first-build: rounds=$ROUNDS base=$BASE new=$NEW  $(date -u +%FT%TZ)  $(nproc) cpus  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for commit in "$BASE" "$NEW"; do
        dir="$WORK/$commit-$round"
        git clone -q "$REPO" "$dir/src"
        git -C "$dir/src" checkout -q "$commit"
        mkdir -p "$dir/cargo-home"
        start=$(date +%s.%N)
        if ! (cd "$dir/src" && CARGO_HOME="$dir/cargo-home" CARGO_TARGET_DIR="$dir/src/target" \
            "$CARGO_BIN" run --release -p ferropoll-examples --bin demo >"$dir/log" 2>&1); then
            tail -n 30 "$dir/log" >&2
            echo "first-build: $commit failed" >&2
            exit 1
        fi
        secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
        built=$(grep -o 'Finished .* in .*' "$dir/log" | sed 's/.* in //')
        crates=$(grep -c '^ *Downloaded ' "$dir/log" || true)
        echo "$commit $round secs=$secs" >>"$RESULTS"
        echo "  round $round $commit: ${secs} s to the demo's end (cargo: built in $built, $crates crates downloaded)" >&2
        [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
    done
done

get() { awk -v c="$1" '$1 == c' "$RESULTS" | kv secs | median; }
b=$(get "$BASE")
n=$(get "$NEW")
echo
printf '%-10s %12s %8s\n' commit "median_s" "ratio"
printf '%-10s %12s %8s\n' "$BASE" "$b" "1.00"
printf '%-10s %12s %8s\n' "$NEW" "$n" "$(ratio "$n" "$b")"
echo "base_s=$b new_s=$n ratio=$(ratio "$n" "$b") rounds=$ROUNDS"
