#!/usr/bin/env bash
# What exact mode (HEAPPROF_RATE=1: every allocation recorded) costs, in
# instructions (callgrind: stable run to run), side by side in one run:
#
#   python3   PYTHONMALLOC=malloc workload.py (JSON, dicts, regexes; 20k
#             records): deep interpreter stacks, the hard case
#   alloc     alloc_bench.c, 1 thread x 1M malloc/calloc/realloc/free
#   rust      examples/bench_churn --mode profiler (Profiler<System>), 1M ops
#
# each bare and under target/release/libheapprof_preload.so (rust: its own
# Profiler) at HEAPPROF_RATE=1, the ratio printed, then where heapprof's
# instructions go in the python run (the walk, inlined with the record's
# making into record_alloc_from; aggregation; sample heap; copies of
# memory; pushing and draining records), and wall time against heaptrack
# (Debian's package) on the python run.
#
#   bash scripts/bench-exact.sh
#   ONLY="python" bash scripts/bench-exact.sh     a subset
#   WALL=0 bash scripts/bench-exact.sh            no wall-time comparison
#   KEEP=1 bash scripts/bench-exact.sh            keeps the callgrind files
#                                                 (cg.TAG in the folder printed)
#
# The python row is followed by the same run with HEAPPROF_UNWIND=libunwind
# (every capture by libunwind, as before heapprof's own walk).
#
# Target (issue #27): python <= 2.0x bare.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
command -v valgrind >/dev/null || bash scripts/install-deps.sh
ONLY=${ONLY:-python alloc rust}
WALL=${WALL:-1}
cargo build --release --quiet -p heapprof-preload
cargo build --release --quiet --example bench_churn
LIB=$root/target/release/libheapprof_preload.so
CHURN=$root/target/release/examples/bench_churn
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

work=$(mktemp -d /tmp/heapprof-exact.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
[ -z "${KEEP:-}" ] || echo "callgrind files kept in $work"
cc -O2 -g -pthread -o "$work/alloc_bench" scripts/bench-programs/alloc_bench.c
sed 's/range(100000)/range(20000)/' scripts/bench-programs/workload.py >"$work/workload.py"

# "$@" in a clean environment at rate 1, with preload library $2 (or
# none: ""): no dump at exit, a fixed hash seed. Prints the instructions of
# the program itself (callgrind's first process; the copies of the process
# heapprof makes for dumps are reported apart and left out) and keeps its
# callgrind file as $work/cg.$1. (HEAPPROF_CHILDREN=1: valgrind's launcher
# would otherwise take the library out of LD_PRELOAD before the program.)
instr() {
  local tag=$1 lib=$2
  shift 2
  env -i PATH="$PATH" HOME="$HOME" PYTHONHASHSEED=0 PYTHONMALLOC=malloc \
    HEAPPROF_OUT="$work/prof" HEAPPROF_AT_EXIT=0 HEAPPROF_RATE=1 HEAPPROF_CHILDREN=1 \
    ${UNWIND:+HEAPPROF_UNWIND=$UNWIND} ${lib:+LD_PRELOAD=$lib} \
    valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/cg.%p" "$@" \
    >/dev/null 2>"$work/vg.err" || { cat "$work/vg.err" >&2; exit 1; }
  local main
  main=$(sed -n 's/^==\([0-9]*\)==.*/\1/p' "$work/vg.err" | head -1)
  mv "$work/cg.$main" "$work/cg.$tag"
  sed -n "s/^==$main==.*Collected : \([0-9]*\).*/\1/p" "$work/vg.err"
}

# "$@" natively, in the same environment as `instr`.
run_env() {
  local lib=$1
  shift
  env -i PATH="$PATH" HOME="$HOME" PYTHONHASHSEED=0 PYTHONMALLOC=malloc \
    HEAPPROF_OUT="$work/prof" HEAPPROF_AT_EXIT=0 HEAPPROF_RATE=1 HEAPPROF_CHILDREN=1 \
    ${lib:+LD_PRELOAD=$lib} "$@"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
printf '%-8s %16s %16s %8s\n' program bare rate=1 ratio
for p in $ONLY; do
  case $p in
    python)
      bare=$(instr py-bare "" "$PY" "$work/workload.py")
      r1=$(instr py-r1 "$LIB" "$PY" "$work/workload.py")
      # The same with libunwind for every capture (before heapprof's walk).
      full=$(UNWIND=libunwind instr py-full "$LIB" "$PY" "$work/workload.py")
      printf '%-8s %16s %16s %8s\n' "(libunwind)" "$bare" "$full" "$(ratio "$full" "$bare")"
      ;;
    alloc)
      bare=$(instr alloc-bare "" "$work/alloc_bench" 1 1)
      r1=$(instr alloc-r1 "$LIB" "$work/alloc_bench" 1 1)
      ;;
    rust)
      bare=$(instr rust-bare "" "$CHURN" --mode system --threads 1 --ops 1000000)
      r1=$(instr rust-r1 "" "$CHURN" --mode profiler --rate 1 --threads 1 --ops 1000000)
      ;;
    *) echo "unknown program $p" >&2; exit 2 ;;
  esac
  printf '%-8s %16s %16s %8s\n' "$p" "$bare" "$r1" "$(ratio "$r1" "$bare")"
done

if [[ " $ONLY " == *" python "* ]]; then
  echo
  echo "python at rate 1: heapprof's instructions by part (exclusive Ir, millions)"
  callgrind_annotate --auto=no --inclusive=no --threshold=100 "$work/cg.py-r1" 2>/dev/null |
    awk '
      /^ *[0-9,]+ / {
        n = $1; gsub(",", "", n); line = $0
        part = ""
        if (line ~ /libunwind/) part = "unwinding (libunwind)"
        else if (line ~ /aggregate|hashbrown|foldhash|stack_table|live_table|word_hash/) part = "aggregation"
        else if (line ~ /sample_heap/) part = "sample heap"
        else if (line ~ /memcpy|memmove|memset|memcmp/) part = "memory copies (libc)"
        else if (line ~ /record_alloc_from/) part = "walk + record (record_alloc_from)"
        else if (line ~ /engine::stack|capture|engine\/(unwind|cfi|stack)\.rs/) part = "capture (outside it)"
        else if (line ~ /engine::(push|record|buffer)|record_free/) part = "records (push, drain)"
        else if (line ~ /heapprof/) part = "other heapprof"
        if (part != "") sum[part] += n
      }
      END { for (p in sum) printf "  %-24s %8.0f\n", p, sum[p] / 1e6 }' | sort -k1,1
fi

if [ "$WALL" = 1 ] && [[ " $ONLY " == *" python "* ]]; then
  command -v heaptrack >/dev/null || {
    echo "installing heaptrack (Debian's package) for the wall-time comparison"
    sudo -n apt-get install -y -qq heaptrack >/dev/null 2>&1 || apt-get install -y -qq heaptrack >/dev/null
  }
  best() { # the fastest of three runs of "$@", in seconds
    local b=999
    for _ in 1 2 3; do
      local s e
      s=$(date +%s.%N)
      "$@" >/dev/null 2>&1
      e=$(date +%s.%N)
      b=$(awk -v b="$b" -v t="$(echo "$e - $s" | bc)" 'BEGIN { print (t < b ? t : b) }')
    done
    echo "$b"
  }
  echo
  echo "python wall time, best of 3 (s): noisy on a shared machine, compare within one run"
  bare=$(best run_env "" "$PY" "$work/workload.py")
  r1=$(best run_env "$LIB" "$PY" "$work/workload.py")
  ht=$(cd "$work" && best env PYTHONMALLOC=malloc PYTHONHASHSEED=0 heaptrack -o "$work/ht" "$PY" "$work/workload.py")
  printf '  bare %.2f   heapprof rate=1 %.2f (%s)   heaptrack %.2f (%s)\n' \
    "$bare" "$r1" "$(ratio "$r1" "$bare")" "$ht" "$(ratio "$ht" "$bare")"
fi
