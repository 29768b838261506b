#!/usr/bin/env bash
# Cost of thread tracking in the LD_PRELOAD library: a create/join storm
# (tests/c/threadleak.c `storm THREADS N`: THREADS threads each creating and
# joining N threads) counted in instructions by callgrind, bare and under the
# library (release build; no dumps: HEAPPROF_AT_EXIT=0, HEAPPROF_SIGNAL=none).
#
#   bash scripts/bench-threads.sh              # 4 x 1000 threads
#   THREADS=4 N=2500 bash scripts/bench-threads.sh
#
# Reports total instructions (Ir) of each run and the difference, and, from
# a second pair of runs creating no storm threads (N=0), the library's fixed
# start-up cost apart from the per-thread cost. Callgrind counts user-space
# instructions only, while creating and joining a thread is mostly kernel
# work (clone, mmap, futex): so the script also times a bigger storm
# natively (CPU_N per thread, default 10000), bare and under the library in
# alternation, ROUNDS rounds (default 5), and reports median wall, user and
# system seconds.
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

# Total Ir of one run (all threads) under callgrind.
ir() {
  local out=$work/cg.out
  rm -f "$out"
  env "$@" valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$work/threadleak" storm "$THREADS" "$N_RUN" >"$work/stdout" 2>"$work/stderr"
  grep -h '^summary:' "$out" | awk '{print $2}'
}

run_pair() {
  N_RUN=$1
  bare=$(ir HEAPPROF_UNUSED=1)
  cp "$work/stdout" "$work/bare.stdout"
  # HEAPPROF_CHILDREN=1: the library is loaded into valgrind's launcher
  # first, which execs the tool; by default it would drop itself from
  # LD_PRELOAD there and never reach the program.
  under=$(ir LD_PRELOAD="$LIB" HEAPPROF_CHILDREN=1 HEAPPROF_AT_EXIT=0 HEAPPROF_SIGNAL=none)
  if ! cmp -s "$work/stdout" "$work/bare.stdout"; then
    echo "output differs under the library:" >&2
    diff "$work/bare.stdout" "$work/stdout" >&2 || true
    exit 1
  fi
  echo "$bare $under"
}

read -r bare0 under0 < <(run_pair 0)
read -r bare under < <(run_pair "$N")
total=$((THREADS * N))
awk -v b="$bare" -v u="$under" -v b0="$bare0" -v u0="$under0" -v n="$total" -v t="$THREADS" -v k="$N" 'BEGIN {
  printf "storm %d x %d = %d threads created and joined\n", t, k, n
  printf "  bare            %14d Ir\n", b
  printf "  under library   %14d Ir   %+.2f%%\n", u, (u - b) * 100 / b
  printf "  fixed start-up  %14d Ir   (N=0: bare %d, under %d)\n", u0 - b0, b0, u0
  per_b = (b - b0) / n; per_u = (u - u0) / n
  printf "  per thread      %14.0f Ir bare, %.0f under: %+.2f%% (%+.0f Ir each)\n", per_b, per_u, (per_u - per_b) * 100 / per_b, per_u - per_b
}'

CPU_N=${CPU_N:-10000}
ROUNDS=${ROUNDS:-5}
timed() {
  /usr/bin/time -f "%e %U %S" -o "$work/time" env "$@" "$work/threadleak" storm "$THREADS" "$CPU_N" >/dev/null
  cat "$work/time"
}
: >"$work/bare.times"
: >"$work/under.times"
for _ in $(seq "$ROUNDS"); do
  timed HEAPPROF_UNUSED=1 >>"$work/bare.times"
  timed LD_PRELOAD="$LIB" HEAPPROF_AT_EXIT=0 HEAPPROF_SIGNAL=none >>"$work/under.times"
done
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "native storm $THREADS x $CPU_N threads, median of $ROUNDS: wall / user / sys seconds"
for which in bare under; do
  w=$(awk '{print $1}' "$work/$which.times" | median)
  u=$(awk '{print $2}' "$work/$which.times" | median)
  y=$(awk '{print $3}' "$work/$which.times" | median)
  printf "  %-6s %6s / %6s / %6s\n" "$which" "$w" "$u" "$y"
done
