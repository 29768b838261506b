#!/usr/bin/env bash
# Cost of thread tracking in the LD_PRELOAD library: a create/join storm
# (tests/c/threadleak.c `storm THREADS N`: THREADS threads each creating and
# joining N threads) counted in instructions by callgrind, bare and under the
# library (release build; no dumps: HEAPPROF_AT_EXIT=0, HEAPPROF_SIGNAL=none).
# Callgrind runs with --fair-sched=yes: without it valgrind starves
# heapprof's dumper thread, which loads libunwind, so every creation stack
# would be taken with the slower libgcc unwinder, unlike a native run.
#
#   bash scripts/bench-threads.sh              # 4 x 1000 threads
#   THREADS=4 N=2500 bash scripts/bench-threads.sh
#   BASE_LIB=/tmp/old/libheapprof_preload.so bash scripts/bench-threads.sh
#
# With BASE_LIB (another build of the library, e.g. main's), its runs are
# made and reported beside this build's ("base"), in the same run.
#
# Reports total instructions (Ir) of each run and the difference, and, from
# a second set of runs creating no storm threads (N=0), the library's fixed
# start-up cost apart from the per-thread cost. Every run's output must
# match the bare one's. Callgrind counts user-space instructions only, while
# creating and joining a thread is mostly kernel work (clone, mmap, futex):
# so the script also times a bigger storm natively (CPU_N per thread,
# default 10000), bare and under the library (and BASE_LIB) in alternation,
# ROUNDS rounds (default 5), and reports median wall, user and system
# seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

THREADS=${THREADS:-4}
N=${N:-1000}
root=$PWD

echo "== building the preload library (release)" >&2
cargo build --release --quiet -p heapprof-preload
LIB=$root/target/release/libheapprof_preload.so

work=$(mktemp -d /tmp/heapprof-bench-threads.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -g -pthread -o "$work/threadleak" "$root/tests/c/threadleak.c"

# Total Ir of one run (all threads) under callgrind: the program's, not
# that of the copy of the process the library makes at start-up to check
# that it can (a process of its own, with its own much smaller count).
ir() {
  local out=$work/cg.out
  rm -f "$out".*
  env "$@" valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$out.%p" \
    "$work/threadleak" storm "$THREADS" "$N_RUN" >"$work/stdout" 2>"$work/stderr"
  grep -h '^summary:' "$out".* | awk '{print $2}' | sort -n | tail -1
}

# HEAPPROF_CHILDREN=1: the library is loaded into valgrind's launcher first,
# which execs the tool; by default it would drop itself from LD_PRELOAD there
# and never reach the program.
under_env() { echo LD_PRELOAD="$1" HEAPPROF_CHILDREN=1 HEAPPROF_AT_EXIT=0 HEAPPROF_SIGNAL=none; }

# "bare under [base]" Ir for a storm of N_RUN threads per creator.
run_set() {
  N_RUN=$1
  bare=$(ir HEAPPROF_UNUSED=1)
  cp "$work/stdout" "$work/bare.stdout"
  local out=$bare lib
  for lib in "$LIB" ${BASE_LIB:+"$BASE_LIB"}; do
    # shellcheck disable=SC2046
    out="$out $(ir $(under_env "$lib"))"
    if ! cmp -s "$work/stdout" "$work/bare.stdout"; then
      echo "output differs under $lib:" >&2
      diff "$work/bare.stdout" "$work/stdout" >&2 || true
      exit 1
    fi
  done
  echo "$out"
}

read -r bare0 under0 base0 < <(run_set 0)
read -r bare under base < <(run_set "$N")
total=$((THREADS * N))
report() {
  awk -v name="$1" -v b="$bare" -v u="$2" -v b0="$bare0" -v u0="$3" -v n="$total" 'BEGIN {
    printf "  %-14s  %14d Ir   %+.2f%%\n", name, u, (u - b) * 100 / b
    printf "    fixed start-up  %12d Ir   (N=0: bare %d, under %d)\n", u0 - b0, b0, u0
    per_b = (b - b0) / n; per_u = (u - u0) / n
    printf "    per thread      %12.0f Ir bare, %.0f under: %+.2f%% (%+.0f Ir each)\n", per_b, per_u, (per_u - per_b) * 100 / per_b, per_u - per_b
  }'
}
echo "storm $THREADS x $N = $total threads created and joined"
printf "  %-14s  %14d Ir\n" bare "$bare"
report "this build" "$under" "$under0"
if [ -n "${BASE_LIB:-}" ]; then report "BASE_LIB" "$base" "$base0"; fi

CPU_N=${CPU_N:-10000}
ROUNDS=${ROUNDS:-5}
timed() {
  /usr/bin/time -f "%e %U %S" -o "$work/time" env "$@" "$work/threadleak" storm "$THREADS" "$CPU_N" >/dev/null
  cat "$work/time"
}
: >"$work/bare.times"
: >"$work/under.times"
: >"$work/base.times"
for _ in $(seq "$ROUNDS"); do
  timed HEAPPROF_UNUSED=1 >>"$work/bare.times"
  timed LD_PRELOAD="$LIB" HEAPPROF_AT_EXIT=0 HEAPPROF_SIGNAL=none >>"$work/under.times"
  if [ -n "${BASE_LIB:-}" ]; then
    timed LD_PRELOAD="$BASE_LIB" HEAPPROF_AT_EXIT=0 HEAPPROF_SIGNAL=none >>"$work/base.times"
  fi
done
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "native storm $THREADS x $CPU_N threads, median of $ROUNDS: wall / user / sys seconds"
for which in bare under ${BASE_LIB:+base}; do
  w=$(awk '{print $1}' "$work/$which.times" | median)
  u=$(awk '{print $2}' "$work/$which.times" | median)
  y=$(awk '{print $3}' "$work/$which.times" | median)
  printf "  %-6s %6s / %6s / %6s\n" "$which" "$w" "$u" "$y"
done
