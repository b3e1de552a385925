#!/usr/bin/env bash
# Times the README's main command from a fresh clone (venv creation included) and records the result in
# benchmarks/results/demo_time.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/harmonrank"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
(cd "$tmp/harmonrank" && make demo > "$tmp/demo.log" 2>&1)
end=$(date +%s)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "make demo from a fresh clone of $(git rev-parse --short HEAD) (venv creation included): $((end - start)) s"
  echo "machine: $(uname -m), $(nproc) cores; threads: ${HARMONRANK_THREADS:-default (1)}"
  echo "load average (1, 5, 15 min) before: $load_before; after: $load_after"
  echo
  tail -n 22 "$tmp/demo.log"
} > benchmarks/results/demo_time.txt
cat benchmarks/results/demo_time.txt
