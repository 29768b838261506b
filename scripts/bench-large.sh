#!/usr/bin/env bash
# Large sampled objects cost what they cost without heapprof: a request loop
# of large buffers (256 KiB-2 MiB, grown once to twice that, freed), bare
# and profiled side by side in alternation, ROUNDS rounds (default 5);
# medians of CPU time (user + sys), minor faults and peak RSS (ru_maxrss,
# the VmHWM), and the profiled/bare ratios (targets: faults <= 1.2x,
# CPU <= 1.1x).
#
#   bash scripts/bench-large.sh
#   ROUNDS=3 REQUESTS="2000 20000" PROFILE=dev bash scripts/bench-large.sh
#
# Programs:
#   C     scripts/bench-programs/large_requests.c, `loop N`: bare, and under
#         the preload library at the default rate (no dump at exit).
#   Rust  examples/large_requests.rs (`Profiler<System>`, the Vec grown by
#         doubling as pushes grow it): HEAPPROF_RATE=0 (the profiler's hot
#         paths only, as the bare program) against the default rate.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-"2000 20000"}
PROFILE=${PROFILE:-release}
root=$PWD
if [ "$PROFILE" = release ]; then flag=--release dir=release; else flag= dir=debug; fi

echo "== building the preload library and the example ($PROFILE)" >&2
cargo build $flag --quiet -p heapprof-preload
cargo build $flag --quiet --example large_requests
LIB=$root/target/$dir/libheapprof_preload.so
RUST=$root/target/$dir/examples/large_requests

work=$(mktemp -d /tmp/heapprof-bench-large.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -g -o "$work/large_requests" scripts/bench-programs/large_requests.c

# One run: "cpu_seconds minflt maxrss_kb" on stdout.
measure() {
  /usr/bin/time -f "%U %S %R %M" -o "$work/t" "$@" >/dev/null
  awk '{ printf "%.3f %d %d\n", $1 + $2, $3, $4 }' "$work/t"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# The command of one side ($1: c_bare, c_prof, rust_bare, rust_prof) for $2
# requests, in the array `cmd`.
command_for() {
  case $1 in
    c_bare) cmd=(env -u LD_PRELOAD "$work/large_requests" loop "$2") ;;
    c_prof) cmd=(env LD_PRELOAD="$LIB" HEAPPROF_AT_EXIT=0 "$work/large_requests" loop "$2") ;;
    rust_bare) cmd=(env HEAPPROF_RATE=0 "$RUST" "$2") ;;
    rust_prof) cmd=(env "$RUST" "$2") ;;
  esac
}

printf '%-6s %7s | %-30s | %-30s | %s\n' way requests "bare: cpu s, minflt, rss KB" \
  "profiled: cpu s, minflt, rss KB" "ratios cpu, minflt, rss"
for n in $REQUESTS; do
  for way in c rust; do
    : >"$work/bare" && : >"$work/prof"
    for _ in $(seq "$ROUNDS"); do
      command_for "${way}_bare" "$n" && measure "${cmd[@]}" >>"$work/bare"
      command_for "${way}_prof" "$n" && measure "${cmd[@]}" >>"$work/prof"
    done
    for side in bare prof; do
      for col in 1 2 3; do
        awk -v c=$col '{ print $c }' "$work/$side" | median >"$work/$side.$col"
      done
    done
    b=($(cat "$work/bare.1" "$work/bare.2" "$work/bare.3"))
    p=($(cat "$work/prof.1" "$work/prof.2" "$work/prof.3"))
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
    printf '%-6s %7s | %6s %8s %8s         | %6s %8s %8s         | %s %s %s\n' "$way" "$n" \
      "${b[0]}" "${b[1]}" "${b[2]}" "${p[0]}" "${p[1]}" "${p[2]}" \
      "$(ratio "${p[0]}" "${b[0]}")" "$(ratio "${p[1]}" "${b[1]}")" "$(ratio "${p[2]}" "${b[2]}")"
  done
done
