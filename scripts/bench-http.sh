#!/usr/bin/env bash
# The load test of a small real HTTP service (examples/http_service.rs: std
# sockets, a thread per connection, Profiler<System> at the default rate)
# against the same service under System alone (http_service_bare), loaded
# by wrk on loopback, bare and profiled alternated A/B, ROUNDS rounds
# (default 5) per route. Prints, per route and side, the medians of
# requests/s and p99 latency, and the server's minor faults and CPU time
# (user + sys) per request, and the profiled/bare ratios (targets:
# requests/s >= 0.95x, faults <= 1.2x, CPU <= 1.1x).
#
#   bash scripts/bench-http.sh
#   ROUNDS=3 SECONDS_EACH=5 CONNECTIONS=50 ROUTES="/report" bash scripts/bench-http.sh
#   BASE=/path/to/other/target/release bash scripts/bench-http.sh
#       also measures another build's examples/http_service in the same rounds
#
# Routes: `/` (a small JSON document, small allocations) and `/report` (a
# temporary buffer of 256 KiB-1.5 MiB grown by pushes, as report rendering
# or serialization does). wrk: Debian's `wrk`, installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SECONDS_EACH=${SECONDS_EACH:-5}
CONNECTIONS=${CONNECTIONS:-50}
ROUTES=${ROUTES:-"/ /report"}
BASE=${BASE:-}
root=$PWD

if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  $sudo apt-get install -y -qq wrk >/dev/null
fi
echo "== building the service (release)" >&2
cargo build --release --quiet --example http_service --example http_service_bare
PROF=$root/target/release/examples/http_service
BARE=$root/target/release/examples/http_service_bare

work=$(mktemp -d /tmp/heapprof-bench-http.XXXXXX)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ticks=$(getconf CLK_TCK)

# One run of side $1 on route $2: "rps p99_ms faults_per_request cpu_us_per_request".
run() {
  local exe
  case $1 in
    bare) exe=$BARE ;;
    prof) exe=$PROF ;;
    base) exe=$BASE/examples/http_service ;;
  esac
  env HEAPPROF_AT_EXIT=0 "$exe" 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  server=$!
  local addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening //p' "$work/out")
    [ -n "$addr" ] && break
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "the service did not start: $(cat "$work/err")" >&2; exit 1; }
  # Warm-up, then the measured run; the server's faults and CPU over it.
  wrk -t2 -c"$CONNECTIONS" -d1s "http://$addr$2" >/dev/null
  read -r f0 u0 s0 < <(awk '{ print $10, $14, $15 }' "/proc/$server/stat")
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency "http://$addr$2" >"$work/wrk"
  read -r f1 u1 s1 < <(awk '{ print $10, $14, $15 }' "/proc/$server/stat")
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  awk -v f="$((f1 - f0))" -v c="$((u1 + s1 - u0 - s0))" -v t="$ticks" '
    /^Requests\/sec:/ { rps = $2 }
    /^ +99%/ { v = $2; ms = v + 0; if (v ~ /us$/) ms /= 1000; else if (v ~ /[^m]s$/) ms *= 1000; p99 = ms }
    /requests in/ { n = $1 }
    END { printf "%.0f %.2f %.3f %.1f\n", rps, p99, f / n, c / t / n * 1e6 }' "$work/wrk"
}

sides="bare prof"
[ -n "$BASE" ] && sides="bare prof base"
for route in $ROUTES; do
  for s in $sides; do : >"$work/$s"; done
  for r in $(seq "$ROUNDS"); do
    # A/B alternated, the order flipped every round.
    order=$sides
    [ $((r % 2)) -eq 0 ] && order=$(echo "$sides" | tr ' ' '\n' | tac | tr '\n' ' ')
    for s in $order; do
      run "$s" "$route" >>"$work/$s"
      echo "   round $r $route $s: $(tail -1 "$work/$s")" >&2
    done
  done
  for s in $sides; do
    for col in 1 2 3 4; do
      awk -v c=$col '{ print $c }' "$work/$s" | median >"$work/$s.$col"
    done
  done
  printf '\n%s (%d rounds of %ss, %d connections; medians)\n' "$route" "$ROUNDS" "$SECONDS_EACH" "$CONNECTIONS"
  printf '%-9s %10s %9s %14s %14s\n' side "req/s" "p99 ms" "faults/req" "CPU us/req"
  for s in $sides; do
    printf '%-9s %10s %9s %14s %14s\n' "$s" "$(cat "$work/$s.1")" "$(cat "$work/$s.2")" "$(cat "$work/$s.3")" "$(cat "$work/$s.4")"
  done
  for s in $sides; do
    [ "$s" = bare ] && continue
    awk -v s="$s" -v r1="$(cat "$work/$s.1")" -v r0="$(cat "$work/bare.1")" \
        -v p1="$(cat "$work/$s.2")" -v p0="$(cat "$work/bare.2")" \
        -v f1="$(cat "$work/$s.3")" -v f0="$(cat "$work/bare.3")" \
        -v c1="$(cat "$work/$s.4")" -v c0="$(cat "$work/bare.4")" \
        'function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "n/a" }
         BEGIN { printf "%-9s %10s %9s %14s %14s   (%s / bare)\n", "ratio", ratio(r1, r0), ratio(p1, p0), ratio(f1, f0), ratio(c1, c0), s }'
  done
done
