#!/usr/bin/env bash
# Side-by-side A/B of heapprof's Rust way in on a multi-threaded churn
# workload: one binary (examples/bench_churn.rs) run alternately as `system`
# (System alone), `profiler` (Profiler<System>, default rate) and `off`
# (Profiler<System>, rate 0), ROUNDS times each, the order rotating every
# round so that drift (thermal, other load) spreads over all modes.
# Prints each mode's median ns per operation and its ratio to `system`, both
# as a ratio of medians and as the median of per-round ratios (each round's
# runs are seconds apart, so that figure is the least sensitive to drift).
#
# usage: scripts/bench-rust.sh [ROUNDS]        (default 10)
#   THREADS=2 OPS=10000000 SLOTS=4096 RATE=524288 to change the workload;
#   PAIR_SIZE=N to time alloc + free pairs of N bytes on every thread instead
#   of the churn (the interleaved counterpart of `pair_2t` in benches/alloc.rs,
#   whose separately timed variants drift on a shared or virtual machine).
# Needs only cargo, awk and sort. Machine noise: on a shared or virtual
# machine expect a few percent between runs; compare the ratios, not the
# absolute times, and rerun when the min-max spread is wide.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-10}
threads=${THREADS:-2}
ops=${OPS:-10000000}
slots=${SLOTS:-4096}
rate=${RATE:-524288}
pair_size=${PAIR_SIZE:-0}

cargo build --release --quiet --example bench_churn
bin=target/release/examples/bench_churn
modes=(system profiler off)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

workload="churn (slots=$slots)"
[ "$pair_size" -eq 0 ] || workload="alloc+free pairs of $pair_size bytes"
echo "bench-rust: $rounds rounds x ${modes[*]}; $workload; threads=$threads ops/thread=$ops rate=$rate"
echo "  (the example's allocator dispatcher costs the same in every mode)"
for ((r = 0; r < rounds; r++)); do
  line="  round $((r + 1)):"
  for ((k = 0; k < ${#modes[@]}; k++)); do
    m=${modes[$(((r + k) % ${#modes[@]}))]}
    out=$("$bin" --mode "$m" --threads "$threads" --ops "$ops" --slots "$slots" --rate "$rate" --pair-size "$pair_size")
    ns=$(sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' <<<"$out")
    [ -n "$ns" ] || { echo "bench-rust: unexpected output: $out" >&2; exit 1; }
    echo "$r $m $ns" >>"$results"
    line+=" $m=$ns"
  done
  echo "$line"
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

base=$(awk '$2 == "system" { print $3 }' "$results" | median)
echo
printf '%-9s %12s %10s %10s %16s %22s\n' mode "median ns/op" min max "ratio of medians" "median per-round ratio"
for m in "${modes[@]}"; do
  med=$(awk -v m="$m" '$2 == m { print $3 }' "$results" | median)
  min=$(awk -v m="$m" '$2 == m { print $3 }' "$results" | sort -g | head -n 1)
  max=$(awk -v m="$m" '$2 == m { print $3 }' "$results" | sort -g | tail -n 1)
  paired=$(awk -v m="$m" '{ t[$1, $2] = $3; rs[$1] = 1 } END { for (r in rs) print t[r, m] / t[r, "system"] }' "$results" | median)
  printf '%-9s %12.2f %10.2f %10.2f %16.4f %22.4f\n' "$m" "$med" "$min" "$max" "$(awk -v a="$med" -v b="$base" 'BEGIN { print a / b }')" "$paired"
done
