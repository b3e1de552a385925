#!/usr/bin/env bash
# Times the README's main command from a fresh clone (venv creation included) and records the result in
# benchmarks/results/demo_time.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/harmonrank"
start=$(date +%s)
(cd "$tmp/harmonrank" && make demo > "$tmp/demo.log" 2>&1)
end=$(date +%s)
{
  echo "make demo from a fresh clone of $(git rev-parse --short HEAD) (venv creation included): $((end - start)) s"
  echo "machine: $(uname -m), $(nproc) cores"
  echo
  tail -n 22 "$tmp/demo.log"
} > benchmarks/results/demo_time.txt
cat benchmarks/results/demo_time.txt
