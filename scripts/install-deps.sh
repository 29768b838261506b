#!/usr/bin/env bash
# Installs what the test suite runs against, when missing: Go's pprof reader
# (golang-go), a C/C++ compiler, jemalloc (to chain the preload library in
# front of it), sqlite3 and perl (real programs under the preload library),
# valgrind (callgrind instruction counts in scripts/).
# Idempotent; needs root (CI machines run as root) or sudo.
set -euo pipefail

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v perl >/dev/null 2>&1 || need+=(perl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
[ -x /usr/bin/time ] || need+=(time)
[ -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 ] || need+=(libjemalloc2)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${need[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  # Without root: sudo, but never a password prompt in the middle of a test
  # run (-n fails instead), and a clear line saying what to install.
  if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
    echo "install-deps: cannot install ${need[*]} (not root, and sudo needs a password or is missing); install them yourself, e.g. sudo apt-get install ${need[*]}, then run the tests again" >&2
    exit 1
  fi
  sudo="sudo -n"
fi
# A lock file keeps parallel test processes from running apt at once.
exec 9>/tmp/heapprof-install-deps.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
