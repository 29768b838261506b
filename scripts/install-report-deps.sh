#!/usr/bin/env bash
# Installs what the report and metrics tests run against, when missing:
# Debian's chromium (headless, to open `heapprof report`'s HTML) and
# prometheus (a real server scraping `/metrics`; its package brings
# promtool). Separate from install-deps.sh so the other tests do not pull a
# browser. Idempotent; needs root (CI machines run as root) or sudo.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v python3 >/dev/null 2>&1 || need+=(python3)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "install-report-deps: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# The same lock as install-deps.sh: apt runs once at a time.
exec 9>/tmp/heapprof-install-deps.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
