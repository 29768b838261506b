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
#   CALLGRIND=1 counts instructions instead (valgrind, --fair-sched=yes so
#   the dumper thread runs as it would natively): each mode once, one
#   thread, OPS=3000000 unless set; prints each mode's total, its ratio to
#   `system` and its extra instructions per operation (one free + one
#   alloc). `off` is the floor: the hot paths alone.
# Needs only cargo, awk and sort (and valgrind for CALLGRIND=1). Machine
# noise: on a shared or virtual machine expect a few percent between runs;
# compare the ratios, not the absolute times, and rerun when the min-max
# spread is wide. Instruction counts barely move (about 0.1 %).
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

if [ "${CALLGRIND:-0}" = 1 ]; then
  ops=${OPS:-3000000}
  echo "bench-rust: instructions (callgrind, --fair-sched=yes), churn slots=$slots threads=1 ops=$ops rate=$rate"
  declare -A ir
  for m in "${modes[@]}"; do
    out="$results.$m"
    # A fixed seed: the same samples in every run (the dumper thread's
    # share still varies with scheduling, by about 0.1 %).
    HEAPPROF_AT_EXIT=0 HEAPPROF_SEED=1 valgrind --fair-sched=yes --tool=callgrind --callgrind-out-file="$out" \
      "$bin" --mode "$m" --threads 1 --ops "$ops" --slots "$slots" --rate "$rate" >/dev/null 2>&1
    ir[$m]=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out")
    rm -f "$out"
    [ -n "${ir[$m]}" ] || { echo "bench-rust: callgrind gave no total for $m" >&2; exit 1; }
  done
  printf '%-9s %15s %10s %16s\n' mode instructions ratio "extra per op"
  for m in "${modes[@]}"; do
    printf '%-9s %15s %10.4f %16.2f\n' "$m" "${ir[$m]}" \
      "$(awk -v a="${ir[$m]}" -v b="${ir[system]}" 'BEGIN { print a / b }')" \
      "$(awk -v a="${ir[$m]}" -v b="${ir[system]}" -v n="$ops" 'BEGIN { print (a - b) / n }')"
  done
  echo "  (system per op: $(awk -v b="${ir[system]}" -v n="$ops" 'BEGIN { printf "%.1f", b / n }') instructions, the whole loop: rng, free, malloc)"
  exit 0
fi

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
