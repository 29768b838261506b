#!/usr/bin/env bash
# What heapprof costs real programs, in instructions (valgrind's callgrind:
# exact and stable run to run, unlike wall time on a shared machine; threads
# scheduled fairly, as natively), and in peak memory, side by side in one run:
#
#   python3   PYTHONMALLOC=malloc workload.py (JSON, dicts, regexes; 30k records)
#   sqlite3   20k indexed inserts and aggregates, in memory
#   perl      a 100k-entry hash of arrays
#   cc1       the C compiler proper on a generated 150-function file
#   alloc     alloc_bench.c, 1 thread x 1M malloc/calloc/realloc/free
#   rust      examples/bench_churn: Profiler<System> vs System, 3M ops
#
# each bare and under target/release/libheapprof_preload.so at the default
# rate (bench_churn: --mode system vs --mode profiler), ratio printed. Then
# the peak RSS (VmHWM) and RssAnon of a program holding ~240 MB of 16-256 B
# objects (tests/c/sampleheap.c hold), bare, at the default rate and at
# HEAPPROF_RATE=1.
#
#   bash scripts/bench-callgrind.sh
#   BASE=/path/to/other/target/release bash scripts/bench-callgrind.sh
#       also measures another build's libheapprof_preload.so and
#       examples/bench_churn (e.g. before a change), in the same run
#   ONLY="python sqlite" bash scripts/bench-callgrind.sh   a subset
#   SEED=7 bash scripts/bench-callgrind.sh   another sampling seed (default 1)
#   PERL_SEEDS="1 2 3 4" ONLY=perl bash scripts/bench-callgrind.sh
#       perl again under each sampling seed
#   PERL_PADS="0 40 80 120" ONLY=perl bash scripts/bench-callgrind.sh
#       perl again with the environment grown by each number of bytes (bare
#       and profiled alike): perl's count moves by a few percent with it,
#       as glibc consolidates its fast bins at exit or not
#   FLOOR=1 bash scripts/bench-callgrind.sh
#       also runs each program under a stand-in library whose constructor
#       only starts a sleeping thread: the cost of glibc's multi-threaded
#       malloc (arena locks, atomic fast bins), which heapprof's dumper
#       thread brings and none of heapprof's code; "floor/bare" and
#       "heapprof/floor" are then printed too
#
# Targets (issue #8): python3, sqlite3, perl, cc1 <= +1.0 %; alloc <= +7 %;
# rust <= +1 %; RSS at the default rate <= bare x 1.01 + 2 MB, at rate 1
# <= 3 x bare.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
command -v valgrind >/dev/null || bash scripts/install-deps.sh

BASE=${BASE:-}
FLOOR=${FLOOR:-}
ONLY=${ONLY:-python sqlite perl cc1 alloc rust rss}
cargo build --release --quiet -p heapprof-preload
[[ " $ONLY " != *" rust "* ]] || cargo build --release --quiet --example bench_churn
LIB=$root/target/release/libheapprof_preload.so
CHURN=$root/target/release/examples/bench_churn

work=$(mktemp -d /tmp/heapprof-cg.XXXXXX)
trap 'rm -rf "$work"' EXIT
progs=$root/scripts/bench-programs
cc -O2 -g -pthread -o "$work/alloc_bench" "$progs/alloc_bench.c"
cc -O2 -g -o "$work/sampleheap" "$root/tests/c/sampleheap.c"
if [ -n "$FLOOR" ]; then
  cat >"$work/floor.c" <<'EOF2'
#include <pthread.h>
#include <unistd.h>
static void *sleeper(void *arg) { for (;;) pause(); return arg; }
__attribute__((constructor)) static void start(void) {
  pthread_t t;
  if (pthread_create(&t, 0, sleeper, 0) == 0) pthread_detach(t);
}
EOF2
  cc -O2 -shared -fPIC -pthread -o "$work/floor.so" "$work/floor.c"
fi
python3 "$progs/gen_c.py" 150 >"$work/big.c"
cc -E "$work/big.c" -o "$work/big.i" # cc1 alone knows no include paths
sed 's/where i < 500000/where i < 20000/' "$progs/inserts.sql" >"$work/inserts.sql"
sed 's/range(100000)/range(30000)/' "$progs/workload.py" >"$work/workload.py"
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3
CC1=$(cc -print-prog-name=cc1)

# Instructions executed by "$@" (callgrind's total Ir), environment as given.
# --fair-sched=yes: valgrind otherwise starves heapprof's dumper thread,
# which loads the fast unwinder, so every sample would take the slow libgcc
# unwinder, unlike a native run.
#
# Copies of the process that heapprof makes (for a dump, or the watcher's
# start-up check; see src/control/watcher.rs) are processes of their own:
# callgrind reports them apart, and only the program's own count is
# printed ("==PID==" of the first line is the program's); the copies' total
# is written to $work/copies, shown in the "copies" column.
instr() {
  valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/cg.out.%p" "$@" \
    >"$work/out" 2>"$work/vg.err" || { cat "$work/vg.err" >&2; exit 1; }
  local main
  main=$(sed -n 's/^==\([0-9]*\)==.*/\1/p' "$work/vg.err" | head -1)
  sed -n "s/^==$main==.*Collected : \([0-9]*\).*/\1/p" "$work/vg.err"
  sed -n 's/^==\([0-9]*\)==.*Collected : \([0-9]*\).*/\1 \2/p' "$work/vg.err" |
    awk -v m="$main" '$1 != m { s += $2 } END { print s + 0 }' >"$work/copies"
}

# Runs program $2 with preload library $1 (or none) under callgrind, in a
# clean environment (no HEAPPROF_* but the output prefix, no at-exit dump:
# the steady cost); prints its instruction count. (Variables are exported,
# not passed through env(1): callgrind follows no exec.)
prog_instr() {
  local lib=$1 fn=$2
  (
    unset LD_PRELOAD
    for v in $(compgen -e | grep '^HEAPPROF_' || true); do unset "$v"; done
    # HEAPPROF_CHILDREN=1: valgrind's launcher loads the library first, and
    # would otherwise take it out of LD_PRELOAD before starting the program.
    export HEAPPROF_OUT=$work/prof HEAPPROF_AT_EXIT=0 HEAPPROF_CHILDREN=1
    # A fixed sampling seed, so runs sample the same allocations (SEED=N
    # for another draw: a program with a few big reallocs costs more when
    # one of them is sampled, each then copied into the sample heap once).
    export HEAPPROF_SEED=${SEED:-1}
    # Fixed hash seeds: Python's and Perl's randomized hashing changes their
    # instruction counts from run to run by a few percent.
    export PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
    # PAD (see PERL_PADS): the environment's size, which moves glibc's heap.
    [ -n "${PAD_BYTES:-}" ] && export BENCH_PAD=$(head -c "$PAD_BYTES" /dev/zero | tr '\0' x)
    [ -n "$lib" ] && export LD_PRELOAD=$lib
    case $fn in
      python) PYTHONMALLOC=malloc instr "$PYTHON" "$work/workload.py" ;;
      sqlite) instr sqlite3 :memory: <"$work/inserts.sql" ;;
      perl) instr perl -e 'my %h; $h{"key$_"} = [$_, "v" x ($_ % 40)] for 1..100000; my $n = 0; $n += @{$h{$_}} for keys %h; print "$n\n"' ;;
      cc1) instr "$CC1" -fpreprocessed -quiet -O2 "$work/big.i" -o "$work/big.s" ;;
      alloc) instr "$work/alloc_bench" 1 1 ;;
    esac
  )
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f (%+.2f %%)", a / b, (a / b - 1) * 100 }'; }

printf '%-8s %16s %16s %22s %12s' program bare heapprof "heapprof/bare" copies
[ -n "$BASE" ] && printf ' %16s %22s' base "base/bare"
[ -n "$FLOOR" ] && printf ' %16s %22s %22s' floor "floor/bare" "heapprof/floor"
echo
for name in python sqlite perl cc1 alloc; do
  [[ " $ONLY " == *" $name "* ]] || continue
  bare=$(prog_instr "" "$name")
  new=$(prog_instr "$LIB" "$name")
  copies=$(cat "$work/copies")
  printf '%-8s %16s %16s %22s %12s' "$name" "$bare" "$new" "$(ratio "$new" "$bare")" "$copies"
  if [ -n "$BASE" ]; then
    old=$(prog_instr "$BASE/libheapprof_preload.so" "$name")
    printf ' %16s %22s' "$old" "$(ratio "$old" "$bare")"
  fi
  if [ -n "$FLOOR" ]; then
    floor=$(prog_instr "$work/floor.so" "$name")
    printf ' %16s %22s %22s' "$floor" "$(ratio "$floor" "$bare")" "$(ratio "$new" "$floor")"
  fi
  echo
done

for seed in ${PERL_SEEDS:-}; do
  bare=$(SEED=$seed prog_instr "" perl)
  new=$(SEED=$seed prog_instr "$LIB" perl)
  printf '%-8s %16s %16s %22s\n' "perl@$seed" "$bare" "$new" "$(ratio "$new" "$bare")"
done

for pad in ${PERL_PADS:-}; do
  bare=$(PAD_BYTES=$pad prog_instr "" perl)
  new=$(PAD_BYTES=$pad prog_instr "$LIB" perl)
  printf '%-8s %16s %16s %22s\n' "perl+$pad" "$bare" "$new" "$(ratio "$new" "$bare")"
done

if [[ " $ONLY " == *" rust "* ]]; then
  churn() { instr "$1" --mode "$2" --threads 1 --ops 3000000; }
  bare=$(HEAPPROF_OUT=$work/prof churn "$CHURN" system)
  new=$(HEAPPROF_OUT=$work/prof churn "$CHURN" profiler)
  printf '%-8s %16s %16s %22s %12s' rust "$bare" "$new" "$(ratio "$new" "$bare")" "$(cat "$work/copies")"
  if [ -n "$BASE" ]; then
    old=$(HEAPPROF_OUT=$work/prof churn "$BASE/examples/bench_churn" profiler)
    printf ' %16s %22s' "$old" "$(ratio "$old" "$bare")"
  fi
  echo
fi

if [[ " $ONLY " == *" rss "* ]]; then
  # 1.6M objects of 16-256 bytes: ~240 MB bare with glibc.
  n=1600000
  hold() {
    (
      unset LD_PRELOAD
      for v in $(compgen -e | grep '^HEAPPROF_' || true); do unset "$v"; done
      export HEAPPROF_OUT=$work/prof HEAPPROF_AT_EXIT=0 "$@"
      "$work/sampleheap" hold "$n"
    ) | awk '{ printf "RssAnon %7.1f MB  VmHWM %7.1f MB", $2 / 1024, $4 / 1024 }'
  }
  echo "hold $n objects of 16-256 B:"
  echo "  bare                     $(hold)"
  echo "  heapprof, default rate   $(hold LD_PRELOAD="$LIB")"
  echo "  heapprof, rate 1         $(hold LD_PRELOAD="$LIB" HEAPPROF_RATE=1)"
  if [ -n "$BASE" ]; then
    echo "  base, default rate       $(hold LD_PRELOAD="$BASE/libheapprof_preload.so")"
    echo "  base, rate 1             $(hold LD_PRELOAD="$BASE/libheapprof_preload.so" HEAPPROF_RATE=1)"
  fi
fi
