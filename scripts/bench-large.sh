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
#   BASE=/path/to/other/target/release bash scripts/bench-large.sh
#       also measures another build's libheapprof_preload.so and
#       examples/large_requests (e.g. before a change) in the same rounds,
#       printed as a "base" line under each "profiled" one
#
# Programs:
#   C     scripts/bench-programs/large_requests.c, `loop N`: bare, and under
#         the preload library at the default rate (no dump at exit).
#   Rust  examples/large_requests.rs (`Profiler<System>`, the Vec grown by
#         doubling as pushes grow it) at the default rate, against
#         examples/large_requests_bare.rs (the same program under `System`).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-"2000 20000"}
PROFILE=${PROFILE:-release}
root=$PWD
if [ "$PROFILE" = release ]; then flag=--release dir=release; else flag= dir=debug; fi

echo "== building the preload library and the example ($PROFILE)" >&2
cargo build $flag --quiet -p heapprof-preload
cargo build $flag --quiet --example large_requests --example large_requests_bare
LIB=$root/target/$dir/libheapprof_preload.so
RUST=$root/target/$dir/examples/large_requests
RUST_BARE=$root/target/$dir/examples/large_requests_bare
BASE=${BASE:-}

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
    c_base) cmd=(env LD_PRELOAD="$BASE/libheapprof_preload.so" HEAPPROF_AT_EXIT=0 "$work/large_requests" loop "$2") ;;
    rust_bare) cmd=(env "$RUST_BARE" "$2") ;;
    rust_prof) cmd=(env "$RUST" "$2") ;;
    rust_base) cmd=(env "$BASE/examples/large_requests" "$2") ;;
  esac
}

sides="bare prof"
[ -z "$BASE" ] || sides="bare prof base"
printf '%-6s %7s %-5s | %-30s | %s\n' way requests side "cpu s, minflt, rss KB (medians)" "ratios to bare: cpu, minflt, rss"
for n in $REQUESTS; do
  for way in c rust; do
    for side in $sides; do : >"$work/$side"; done
    for _ in $(seq "$ROUNDS"); do
      for side in $sides; do
        command_for "${way}_$side" "$n" && measure "${cmd[@]}" >>"$work/$side"
      done
    done
    for side in $sides; do
      for col in 1 2 3; do
        awk -v c=$col '{ print $c }' "$work/$side" | median >"$work/$side.$col"
      done
    done
    b=($(cat "$work/bare.1" "$work/bare.2" "$work/bare.3"))
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
    for side in $sides; do
      p=($(cat "$work/$side.1" "$work/$side.2" "$work/$side.3"))
      printf '%-6s %7s %-5s | %6s %8s %8s         | %s %s %s\n' "$way" "$n" "$side" \
        "${p[0]}" "${p[1]}" "${p[2]}" \
        "$(ratio "${p[0]}" "${b[0]}")" "$(ratio "${p[1]}" "${b[1]}")" "$(ratio "${p[2]}" "${b[2]}")"
    done
  done
done
