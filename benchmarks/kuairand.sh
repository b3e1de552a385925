#!/usr/bin/env bash
# Reproduces benchmarks/results/kuairand/ from the raw KuaiRand-1K files (read in place, never copied):
#   1. harmonrank data kuairand   : join log + user + video features, derive requests (6 h inactivity gap)
#   2. harmonrank upstream        : cross-fitted MMoE (5 time folds) -> out-of-fold p_* for every label
#   3. harmonrank benchmark       : every ranker, 5 seeds, on the 4 measurable objectives
# Usage: bash benchmarks/kuairand.sh [KUAIRAND_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/kuairand-1k}
out=${2:-benchmarks/results/kuairand}
hr=${HARMONRANK:-.venv/bin/harmonrank}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
"$hr" data kuairand --src "$src" --out "$work" | tee "$out/data.txt"
"$hr" upstream --data "$work/kuairand.parquet" --out "$work/scored.parquet" --folds 5 --by time \
  --report "$out/upstream.json" | tee "$out/upstream.txt"
"$hr" benchmark --config benchmarks/configs/kuairand.toml --data "$work/scored.parquet" \
  --dataset-config "$work/kuairand.toml" --out "$out" | tee "$out/summary.txt"
