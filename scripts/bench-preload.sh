#!/usr/bin/env bash
# Overhead of the LD_PRELOAD library (target/release/libheapprof_preload.so)
# at the default sampling rate: the same programs bare and under the
# library, timed in alternation, ROUNDS rounds (default 10), medians and
# ratios reported.
#
#   bash scripts/bench-preload.sh
#   ROUNDS=5 bash scripts/bench-preload.sh
#
# Programs (inputs in scripts/bench-programs/):
#   alloc_bench     4 threads x 5M mixed-size malloc/calloc/realloc/free
#   python3         JSON round trip, dicts, regexes (PYTHONMALLOC=malloc)
#   sqlite3         500k indexed inserts into an in-memory table, aggregates
#   cc              cc -O2 -c of a generated 400-function C file (the driver
#                   is profiled; cc1 and as are not: HEAPPROF_CHILDREN=0)
#   cc (children)   the same with HEAPPROF_CHILDREN=1 (cc1 and as profiled)
#
# Each round runs every program three ways, in this order: bare; preloaded
# (defaults: the profile is written at exit); preloaded with
# HEAPPROF_AT_EXIT=0 (sampling only, no dump), which separates the steady
# cost of the hooks and samples from the fixed cost of writing a profile.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-10}
root=$PWD
progs=$root/scripts/bench-programs

echo "== building the preload library (release)" >&2
cargo build --release --quiet -p heapprof-preload
LIB=$root/target/release/libheapprof_preload.so

work=$(mktemp -d /tmp/heapprof-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -g -pthread -o "$work/alloc_bench" "$progs/alloc_bench.c"
python3 "$progs/gen_c.py" 400 >"$work/big.c"
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3 # not a version manager's shim
mkdir -p "$work/prof"

p_alloc() { "$work/alloc_bench" 4 5; }
p_python() { PYTHONMALLOC=malloc "$PYTHON" "$progs/workload.py"; }
p_sqlite() { sqlite3 :memory: <"$progs/inserts.sql"; }
p_cc() { cc -O2 -c "$work/big.c" -o "$work/big.o"; }
p_cc_children() { HEAPPROF_CHILDREN=1 cc -O2 -c "$work/big.c" -o "$work/big.o"; }

names=(p_alloc p_python p_sqlite p_cc p_cc_children)
declare -A label=(
  [p_alloc]="alloc_bench 4x5M ops"
  [p_python]="python3 workload.py"
  [p_sqlite]="sqlite3 500k inserts"
  [p_cc]="cc -O2 -c (400 functions)"
  [p_cc_children]="  same, HEAPPROF_CHILDREN=1"
)

# Runs program function $2 in mode $1 (bare | pre | noexit) in a subshell,
# output to $3.
run_mode() {
  local mode=$1 fn=$2 out=$3
  (
    unset LD_PRELOAD
    for v in $(compgen -e | grep '^HEAPPROF_' || true); do unset "$v"; done
    case $mode in
      pre) export LD_PRELOAD=$LIB HEAPPROF_OUT=$work/prof/p ;;
      noexit) export LD_PRELOAD=$LIB HEAPPROF_OUT=$work/prof/p HEAPPROF_AT_EXIT=0 ;;
    esac
    $fn
  ) >"$out" 2>&1
}

# Wall-clock microseconds of one run.
time_mode() {
  local t0 t1
  t0=$(date +%s%N)
  run_mode "$1" "$2" /dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}

echo "== checking outputs are identical bare and preloaded" >&2
for fn in "${names[@]}"; do
  run_mode bare "$fn" "$work/bare.out"
  run_mode pre "$fn" "$work/pre.out"
  # Apart from heapprof's note that the programs cc ran were not profiled.
  grep -v '^heapprof: programs this process started were not profiled' "$work/pre.out" >"$work/pre.kept" || true
  mv "$work/pre.kept" "$work/pre.out"
  if ! cmp -s "$work/bare.out" "$work/pre.out"; then
    echo "bench-preload: $fn: output differs under the library" >&2
    diff "$work/bare.out" "$work/pre.out" | head >&2
    exit 1
  fi
done

echo "== $ROUNDS rounds, alternating bare / preloaded / preloaded without exit dump" >&2
for ((r = 1; r <= ROUNDS; r++)); do
  for fn in "${names[@]}"; do
    for mode in bare pre noexit; do
      time_mode "$mode" "$fn" >>"$work/t.$fn.$mode"
    done
  done
  rm -f "$work/prof/"*
  echo "   round $r/$ROUNDS done" >&2
done

median() { sort -n "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo
echo "heapprof preload overhead, default rate (HEAPPROF_RATE unset = 524288), $ROUNDS rounds, medians"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
printf '%-30s %10s %12s %8s %14s %8s\n' program "bare s" "preloaded s" ratio "no-exit-dump s" ratio
for fn in "${names[@]}"; do
  b=$(median "$work/t.$fn.bare")
  p=$(median "$work/t.$fn.pre")
  n=$(median "$work/t.$fn.noexit")
  awk -v l="${label[$fn]}" -v b="$b" -v p="$p" -v n="$n" 'BEGIN {
    printf "%-30s %10.3f %12.3f %8.3f %14.3f %8.3f\n", l, b / 1e6, p / 1e6, p / b, n / 1e6, n / b
  }'
done
