#!/usr/bin/env bash
# The issue-14 scenario as a user runs it: two threads churn flat out, a
# cache fills to 8 MiB in the first quarter, a slow leak of 1 KiB every
# 10 ms; a profile every SECS/10 s; `heapprof leaks` on the series. Prints,
# per run, what was called steady growth, and a tally.
#   bash scripts/leak-verdicts.sh [SECS=30] [RUNS=9] [LEAK_KIB=1]
set -euo pipefail
secs=${1:-30}; runs=${2:-9}; leak_kib=${3:-1}
cd "$(dirname "$0")/.."
cargo build -q --example workload --bin heapprof
target=${CARGO_TARGET_DIR:-target}
out=$(mktemp -d)
found=0; false_alarms=0
for run in $(seq 1 "$runs"); do
    dir="$out/$run"; mkdir -p "$dir"
    HEAPPROF_INTERVAL=$(echo "$secs / 10" | bc -l) HEAPPROF_OUT="$dir/w" \
        "$target/debug/examples/workload" --seconds "$(echo "$secs + 0.5" | bc -l)" \
        --leak-kib "$leak_kib" --cache-mib 8 --cache-secs "$(echo "$secs / 4" | bc -l)" \
        --churn-threads 2 >/dev/null
    report=$("$target/debug/heapprof" leaks "$dir"/w.*.pb.gz)
    # The leaf frame of each suspect: two lines after its "N. rate" line.
    leaf=$(printf '%s\n' "$report" | awk '/^steady growth/ {on = 1} /^plateau/ {on = 0}
        on && /^ +[0-9]+\. rate/ {k = 2; next} on && k > 0 {k--; if (k == 0) {sub(/^ +/, ""); sub(/ \(.*/, ""); print}}')
    if printf '%s\n' "$leaf" | grep -q 'leak_steadily'; then found=$((found + 1)); fi
    if printf '%s\n' "$leaf" | grep -qv -e 'leak_steadily' -e '^$'; then false_alarms=$((false_alarms + 1)); fi
    # Which list the leak landed in (churn is not listed).
    where=$(printf '%s\n' "$report" | awk '/^[a-z].*\([0-9]+ stacks\)/ {sec = $0; sub(/ \(.*/, "", sec)}
        /leak_steadily/ {print sec; exit}')
    echo "run $run: steady growth: $(printf '%s' "$leaf" | tr '\n' ' ')(the leak: ${where:-churn})"
done
echo "leak found in $found of $runs runs over $secs s; runs with another stack called a leak: $false_alarms"
rm -rf "$out"
