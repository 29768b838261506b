#!/usr/bin/env bash
# What the black box (HEAPPROF_BLACKBOX) costs, in instructions (callgrind:
# exact, stable run to run) and in file and page-cache size:
#
#   1. sample-heavy workloads under the preload library at the default rate,
#      black box off vs on: perl (a 100k-entry hash of arrays), python3
#      (PYTHONMALLOC=malloc workload.py, 30k records), alloc (alloc_bench.c,
#      1 thread x 1M malloc/calloc/realloc/free), rust (examples/bench_churn
#      with Profiler<System>, 3M ops); target <= +0.2 %;
#   2. the same alloc_bench at HEAPPROF_RATE=1 (every allocation a sample):
#      the black box's instructions per sampled allocation and free;
#   3. a program holding 100k live samples (tests/c/oomleak.c idle at rate
#      1), killed with SIGKILL: the file's size, what is resident in the
#      page cache, and `heapprof recover`'s count.
#
#   bash scripts/bench-blackbox.sh
#   ONLY="perl alloc" bash scripts/bench-blackbox.sh     a subset of part 1
#   PARTS="1 3" bash scripts/bench-blackbox.sh           a subset of the parts
#   SEED=7 bash scripts/bench-blackbox.sh                another sampling seed
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
command -v valgrind >/dev/null || bash scripts/install-deps.sh

ONLY=${ONLY:-perl python alloc rust}
PARTS=${PARTS:-1 2 3}
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3 # not a shim: valgrind follows no exec
cargo build --release --quiet -p heapprof -p heapprof-preload --example bench_churn
LIB=$root/target/release/libheapprof_preload.so
CHURN=$root/target/release/examples/bench_churn
HEAPPROF=$root/target/release/heapprof

work=$(mktemp -d /tmp/heapprof-bb.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/box"
progs=$root/scripts/bench-programs
cc -O2 -g -pthread -o "$work/alloc_bench" "$progs/alloc_bench.c"
cc -O2 -g -o "$work/oomleak" "$root/tests/c/oomleak.c"
sed 's/range(100000)/range(30000)/' "$progs/workload.py" >"$work/workload.py"

# Callgrind's instruction count of the program itself (not of the copies of
# the process heapprof makes for dumps), run in a clean environment plus
# "$@" assignments; $1 is the black box setting (off or on).
count() {
  local box=$1 what=$2
  shift 2
  (
    unset LD_PRELOAD
    for v in $(compgen -e | grep '^HEAPPROF_' || true); do unset "$v"; done
    export HEAPPROF_OUT=$work/prof HEAPPROF_AT_EXIT=0 HEAPPROF_CHILDREN=1 HEAPPROF_SEED=${SEED:-1}
    export PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
    [ "$box" = on ] && export HEAPPROF_BLACKBOX=$work/box
    for a in "$@"; do export "${a?}"; done
    local cmd
    case $what in
      perl) cmd=(perl -e 'my %h; $h{"key$_"} = [$_, "v" x ($_ % 40)] for 1..100000; my $n = 0; $n += @{$h{$_}} for keys %h; print "$n\n"') ;;
      python) cmd=("$PYTHON" "$work/workload.py"); export PYTHONMALLOC=malloc ;;
      alloc) cmd=("$work/alloc_bench" 1 1) ;;
      rust) cmd=("$CHURN" --mode profiler --threads 1 --ops 3000000) ;;
    esac
    [ "$what" = rust ] || export LD_PRELOAD=$LIB
    valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/cg.%p" "${cmd[@]}" \
      >/dev/null 2>"$work/vg.err" || { cat "$work/vg.err" >&2; exit 1; }
    local main
    main=$(sed -n 's/^==\([0-9]*\)==.*/\1/p' "$work/vg.err" | head -1)
    sed -n "s/^==$main==.*Collected : \([0-9]*\).*/\1/p" "$work/vg.err"
  )
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f %%", (a / b - 1) * 100 }'; }

if [[ " $PARTS " == *" 1 "* ]]; then
  echo "1. default rate (524288), black box off vs on"
  printf '%-8s %16s %16s %12s\n' program off on on/off
  for name in $ONLY; do
    off=$(count off "$name")
    on=$(count on "$name")
    printf '%-8s %16s %16s %12s\n' "$name" "$off" "$on" "$(ratio "$on" "$off")"
  done
  echo
fi

if [[ " $PARTS " == *" 2 "* ]]; then
  echo "2. HEAPPROF_RATE=1: alloc_bench, 1M operations, every allocation sampled"
  off=$(count off alloc HEAPPROF_RATE=1)
  on=$(count on alloc HEAPPROF_RATE=1)
  # alloc_bench: 4096 warm-up allocations, then per operation one free and
  # one allocation (a realloc counts as both).
  printf '%-8s %16s %16s %12s   %.1f instructions per operation (a record and a forget)\n' \
    alloc@1 "$off" "$on" "$(ratio "$on" "$off")" "$(awk -v a="$on" -v b="$off" 'BEGIN { print (a - b) / 1004096 }')"
  echo
fi

[[ " $PARTS " == *" 3 "* ]] || exit 0
echo "3. 100k live samples (HEAPPROF_RATE=1, HEAPPROF_BLACKBOX_SLOTS=131072), killed with SIGKILL"
rm -f "$work/box"/*
(
  unset LD_PRELOAD
  for v in $(compgen -e | grep '^HEAPPROF_' || true); do unset "$v"; done
  export LD_PRELOAD=$LIB HEAPPROF_RATE=1 HEAPPROF_BLACKBOX=$work/box HEAPPROF_BLACKBOX_SLOTS=131072 HEAPPROF_AT_EXIT=0
  "$work/oomleak" idle 100000 64 >"$work/ready" &
  pid=$!
  until grep -q ready "$work/ready" 2>/dev/null; do sleep 0.1; done
  kill -9 $pid
  wait $pid 2>/dev/null || true
)
f=$(ls "$work/box"/*.blackbox)
echo "  file: $(stat -c %s "$f") bytes ($(du -k "$f" | cut -f1) KiB reserved on disk)"
echo "  in the page cache: $(fincore -b -n -o RES "$f" | tr -d ' ') bytes"
"$HEAPPROF" recover "$f" -o "$work/r.pb.gz" 2>&1 | sed 's/^/  /'
