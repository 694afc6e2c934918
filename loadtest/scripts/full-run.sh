#!/usr/bin/env bash
# Every scenario of loadtest/README.md at its documented size, one after the
# other (they share the 2 cores, so never in parallel), into one folder.
# docs/performance.md quotes such a run. Builds first; a failed scenario is
# reported and the rest still run; the exit code counts the failures.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${1:-target/loadtest-full}
cargo build --release -p gitops-reverser -p loadtest --bins || exit 1
L="target/release/loadtest --out $OUT"
failed=0
run() {
  echo "=== $* ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  if ! $L "$@" > "$OUT/$1.json" 2> "$OUT/$1.log"; then
    echo "!!! $1 failed; see $OUT/$1.log"
    failed=$((failed + 1))
  fi
  tail -n 1 "$OUT/$1.log"
}
mkdir -p "$OUT"
run steady         --replicas 3 --targets 100 --objects 1000 --rate 500 --seconds 60 --settle 600
run burst          --replicas 2 --targets 10  --objects 1000 --base 5 --spike 500 --every 10 --seconds 40
run initial-sync   --replicas 1 --targets 10  --objects 100000
run scale-out      --counts 1,2,3,5 --targets 32 --objects 500 --rate 100 --seconds 40
run chaos          --replicas 3 --targets 32 --objects 500 --rate 50 --seconds 120 --every 20 --freeze-for 12
run rolling-update --replicas 3 --targets 32 --objects 500 --rate 50 --seconds 60 --every 12
run in-process     --branches 1 --objects 1000 --changes 20000
echo "=== done ($(date -u +%H:%M:%S)): $failed failed"
exit "$failed"
