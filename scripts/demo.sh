#!/usr/bin/env bash
# The main job, end to end: build heapprof, profile a leaking Rust service
# (the #[global_allocator] way in) with interval dumps, and show what the
# profiles say; then profile a leaking C program through the LD_PRELOAD
# library. Everything lands in ./demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests' tools; the demo itself needs only a C compiler, so it goes
# on without them (no root, say) when there is one.
bash scripts/install-deps.sh || {
  command -v cc >/dev/null || exit 1
  echo "   (the demo needs only cc, which is here: going on)"
}

echo "== building (release): library, heapprof command, preload library, examples"
echo "   (the first build compiles about 100 crates: a few minutes on two cores; later ones take seconds)"
cargo build --release
cargo build --release --examples
bin=target/release/heapprof
out=demo-output
rm -rf "$out" && mkdir -p "$out"

echo
echo "== profiling examples/workload.rs for 8 s, a profile every second (HEAPPROF_INTERVAL=1)"
HEAPPROF_INTERVAL=1 HEAPPROF_AT_EXIT=1 HEAPPROF_OUT="$out/rust" \
  target/release/examples/workload --seconds 8 >/dev/null
# Heap profiles are PREFIX.PID.SEQ.pb.gz (threads profiles,
# PREFIX.threads.PID.SEQ.pb.gz, and the peak, PREFIX.PID.peak.pb.gz, do
# not match the glob).
ls "$out"/rust.[0-9]*.[0-9]*.pb.gz | sed 's/^/   /'
last=$(ls -v "$out"/rust.[0-9]*.[0-9]*.pb.gz | tail -n 1)

echo
echo "== heapprof top $last  (heaviest in-use stacks)"
"$bin" top "$last" -n 3 --depth 4 2>/dev/null || "$bin" top "$last" -n 3

echo
echo "== heapprof leaks $out/rust.*.pb.gz  (what grows steadily, what is a plateau)"
echo "   (the workload leaks in leak_steadily, and fills a cache once in fill_cache)"
# shellcheck disable=SC2046
"$bin" leaks $(ls -v "$out"/rust.[0-9]*.[0-9]*.pb.gz)

echo
echo "== heapprof report -> $out/rust.html  (memory over time, verdicts, flame graphs: open it in a browser)"
# shellcheck disable=SC2046
"$bin" report $(ls -v "$out"/rust.*.pb.gz) -o "$out/rust.html"

echo
echo "== heapprof flamegraph -> $out/rust.svg"
"$bin" flamegraph "$last" -o "$out/rust.svg"

if [ -f target/release/libheapprof_preload.so ]; then
  echo
  echo "== profiling a C program through LD_PRELOAD (HEAPPROF_RATE=1: exact)"
  cat > "$out/leaky.c" <<'C'
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) char *remember_request(int i) {
  char *s = malloc(1000 + i % 7);
  memset(s, 'x', 1000 + i % 7);
  return s;
}
__attribute__((noinline)) void handle(int i) {
  char *tmp = calloc(1, 4096);
  free(tmp);
  if (i % 10 == 0) remember_request(i); /* leaked: never freed */
}
int main(void) {
  for (int i = 0; i < 10000; i++) handle(i);
  return 0;
}
C
  cc -O1 -g -o "$out/leaky" "$out/leaky.c"
  LD_PRELOAD="$PWD/target/release/libheapprof_preload.so" HEAPPROF_RATE=1 \
    HEAPPROF_OUT="$out/c" "$out/leaky"
  cprof=$(ls "$out"/c.[0-9]*.pb.gz | head -n 1)
  echo "   profile written at exit: $cprof"
  "$bin" top "$cprof" -n 3
fi

echo
echo "Read any of these with: go tool pprof -top $last   (or -http=: for the web UI)"
