#!/usr/bin/env bash
# What heapprof's dumps cost the profiled process in memory and time.
# For each way in — a Rust program with Profiler<System> (examples/idle.rs,
# ~21 MiB live from 256 stacks) and python3 under the preload library
# (PYTHONMALLOC=malloc, ~21 MiB live) — it starts the idle program, reads
# RssAnon and VmHWM from /proc/PID/status, sends SIGUSR2 three times (waiting
# for each profile file), and prints RssAnon before/after each dump, the peak
# (VmHWM), the time from signal to file and the dumper thread's CPU time
# for it (which, unlike the wall time, does not grow with other load).
#
# usage: scripts/bench-dump-memory.sh [rust|preload|both]   (default both)
#   PROFILE=release|debug (default release); HEAPPROF_SYMBOLIZE=0 for raw dumps;
#   DUMPS=3 to change the number of dumps; INTERVAL=SECONDS to let
#   HEAPPROF_INTERVAL take the dumps instead of SIGUSR2 (then the "signal to
#   file" time is the wait for the next periodic dump): e.g. INTERVAL=0.3
#   DUMPS=20 shows RssAnon staying flat dump after dump.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
profile=${PROFILE:-release}
flag=--release
[ "$profile" = release ] || flag=
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build $flag --quiet -p heapprof --example idle
cargo build $flag --quiet -p heapprof-preload
bin=$CARGO_TARGET_DIR/$profile/examples/idle
lib=$CARGO_TARGET_DIR/$profile/libheapprof_preload.so
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

drive() { # name, command...
  local name=$1
  shift
  python3 - "$name" "$out/$name" "${DUMPS:-3}" "$@" <<'PY'
import os, signal, subprocess, sys, time
name, prefix, dumps, cmd = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
env = dict(os.environ, HEAPPROF_OUT=prefix, HEAPPROF_AT_EXIT="0")
interval = os.environ.get("INTERVAL")
if interval:
    env["HEAPPROF_INTERVAL"] = interval
p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
line = p.stdout.readline()
assert line.startswith("ready"), line
def status():
    d = {}
    for l in open(f"/proc/{p.pid}/status"):
        k, _, v = l.partition(":")
        if k in ("RssAnon", "VmHWM", "VmRSS"):
            d[k] = int(v.split()[0])
    return d
def dumper_cpu_ns():
    # Time on CPU of heapprof's dumper thread (load-independent, unlike
    # signal-to-file on a busy machine), from schedstat's first field.
    for t in os.listdir(f"/proc/{p.pid}/task"):
        try:
            if open(f"/proc/{p.pid}/task/{t}/comm").read().strip() == "heapprof-dumper":
                return int(open(f"/proc/{p.pid}/task/{t}/schedstat").read().split()[0])
        except OSError:
            pass
    return 0
time.sleep(0.3)
base = status()
print(f"{name}: before: RssAnon {base['RssAnon']/1024:.1f} MB, VmHWM {base['VmHWM']/1024:.1f} MB")
d = os.path.dirname(prefix)
for i in range(dumps):
    before = status()
    cpu0 = dumper_cpu_ns()
    t0 = time.monotonic()
    if not interval:
        os.kill(p.pid, signal.SIGUSR2)
    want = f"{os.path.basename(prefix)}.{p.pid}.{i}.pb.gz"
    peak_anon = before["RssAnon"]
    while not os.path.exists(os.path.join(d, want)):
        if time.monotonic() - t0 > 20:
            sys.exit(f"{name}: no {want} after 20 s")
        # Sampled while the dump runs: the anonymous peak (VmHWM also
        # counts the mapped debug info, which is page cache).
        peak_anon = max(peak_anon, status()["RssAnon"])
    ms = (time.monotonic() - t0) * 1000
    # Past the dump's end (the file appears before its last trim), short
    # of the next periodic one.
    time.sleep(0.1 if interval else 0.2)
    after = status()
    cpu = (dumper_cpu_ns() - cpu0) / 1e6
    print(f"{name}: dump {i+1}: {ms:6.1f} ms signal-to-file ({cpu:.1f} ms dumper CPU); RssAnon {before['RssAnon']/1024:.1f} -> {after['RssAnon']/1024:.1f} MB "
          f"({(after['RssAnon']-base['RssAnon'])/1024:+.1f} MB over before), VmHWM {after['VmHWM']/1024:.1f} MB "
          f"(peak {(after['VmHWM']-base['VmRSS'])/1024:+.1f} MB over before); RssAnon peak seen {(peak_anon-base['RssAnon'])/1024:+.1f} MB")
p.stdin.close()
p.wait()
PY
}

if [ "$which" = rust ] || [ "$which" = both ]; then
  drive rust "$bin" --mb 21
fi
if [ "$which" = preload ] || [ "$which" = both ]; then
  drive preload env PYTHONMALLOC=malloc LD_PRELOAD="$lib" python3 -c '
import os, sys
keep = [bytearray(b"x" * 1000) for _ in range(21 * 1024)]
print("ready", os.getpid(), flush=True)
sys.stdin.read()
'
fi
