#!/usr/bin/env bash
# Installs CPython 3.11's own regression tests for scripts/cpython-tests.sh:
# Debian's python3.11 (/usr/bin/python3.11) and libpython3.11-testsuite
# (/usr/lib/python3.11/test). Idempotent; needs root or sudo.
set -euo pipefail

need=()
[ -x /usr/bin/python3.11 ] || need+=(python3.11)
[ -e /usr/lib/python3.11/test/test_threading.py ] || need+=(libpython3.11-testsuite)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "install-cpython-tests: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# The same lock as install-deps.sh: apt runs once at a time.
exec 9>/tmp/heapprof-install-deps.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
