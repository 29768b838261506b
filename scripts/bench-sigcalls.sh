#!/usr/bin/env bash
# What the preload library's signal wrappers (ffi/src/signals.rs) add to the
# calls they wrap: user-space instructions per call under callgrind, bare and
# under the library (release build), from the difference between N and 2N
# iterations of scripts/bench-programs/sigcalls.c (so start-up cancels out).
# The system call itself is one instruction to callgrind; it costs far more.
#
#   bash scripts/bench-sigcalls.sh          # N=20000
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
command -v valgrind >/dev/null || bash scripts/install-deps.sh
cargo build --release --quiet -p heapprof-preload
LIB=$PWD/target/release/libheapprof_preload.so
work=$(mktemp -d /tmp/heapprof-sigcalls.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/sigcalls" scripts/bench-programs/sigcalls.c

# Total instructions of one run: ir PRELOAD N. HEAPPROF_CHILDREN=1 keeps the
# library in LD_PRELOAD past the valgrind launcher, for the program it runs.
# The program's count only (the largest): the library's start-up check
# makes a copy of the process, which callgrind counts apart.
ir() {
  env -u LD_PRELOAD ${1:+LD_PRELOAD=$1} HEAPPROF_CHILDREN=1 HEAPPROF_OUT="$work/p" HEAPPROF_AT_EXIT=0 \
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out.%p" \
    "$work/sigcalls" "$2" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | sort -n | tail -1
}
per_iter() { echo $(( ($(ir "$1" $((2 * N))) - $(ir "$1" "$N")) / N )); }
bare=$(per_iter "")
pre=$(per_iter "$LIB")
calls=6
echo "instructions per iteration ($calls calls: 2 pthread_sigmask, sigprocmask, ppoll, 2 sigaction)"
echo "  bare:      $bare"
echo "  preloaded: $pre"
echo "  added per call: $(( (pre - bare) / calls ))"
