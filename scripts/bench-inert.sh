#!/usr/bin/env bash
# What a child the preload library stays inert in costs (see ffi/src/lineage.rs
# and ffi/src/unhook.rs): callgrind instruction counts of a C program that
# churns small blocks (scripts/bench-programs/churn.c), started by a profiled
# `sh` as a forked child (`sh -c "churn N; true"`), against the same child of
# a bare `sh`. Instruction counts are deterministic, so one run each.
#
#   bash scripts/bench-inert.sh            # N = 1000000 rounds
#   N=200000 bash scripts/bench-inert.sh
#
# Target: the inert child within 1 % of bare.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
bash scripts/install-deps.sh
echo "== building the preload library (release)" >&2
cargo build --release --quiet -p heapprof-preload
LIB=$PWD/target/release/libheapprof_preload.so

work=$(mktemp -d /tmp/heapprof-inert.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -g -o "$work/churn" scripts/bench-programs/churn.c

# Runs `sh -c "churn N; true"` under callgrind, following children; prints
# the instruction count of the churn process. $1: bare | inert.
count() {
  local mode=$1 dir=$work/$1
  mkdir -p "$dir"
  (
    unset LD_PRELOAD
    for v in $(compgen -e | grep '^HEAPPROF_' || true); do unset "$v"; done
    pre=()
    # env sets LD_PRELOAD inside valgrind: the profiled process is sh (and
    # valgrind's launcher before it, in the same process); churn is the child.
    [ "$mode" = inert ] && pre=(env LD_PRELOAD="$LIB" HEAPPROF_OUT="$dir/p")
    valgrind --tool=callgrind --trace-children=yes \
      --callgrind-out-file="$dir/cg.%p" "${pre[@]}" \
      sh -c "$work/churn $N >/dev/null; true" 2>"$dir/log"
  )
  local f
  f=$(grep -l "^cmd: *$work/churn $N" "$dir"/cg.* | head -1)
  [ -n "$f" ] || { echo "bench-inert: no callgrind output for churn ($mode)" >&2; cat "$dir/log" >&2; exit 1; }
  grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}'
}

bare=$(count bare)
inert=$(count inert)
grep -q "HEAPPROF_CHILDREN" "$work/inert/log" || {
  echo "bench-inert: the profiled sh did not report its skipped child; was the library loaded?" >&2
  exit 1
}
echo
echo "inert child cost, churn.c $N rounds (callgrind instructions, whole process)"
awk -v b="$bare" -v i="$inert" 'BEGIN {
  printf "%-22s %15s\n", "bare child", b
  printf "%-22s %15s\n", "inert child", i
  printf "%-22s %+14.3f%%\n", "difference", (i - b) * 100 / b
}'
