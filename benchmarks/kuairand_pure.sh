#!/usr/bin/env bash
# Reproduces benchmarks/results/kuairand_pure/ from the raw KuaiRand-Pure files (read in place, never copied):
#   1. harmonrank data kuairand   : the standard log joined with user and video features, requests = user-days
#   2. harmonrank upstream        : cross-fitted MMoE (5 time folds) -> out-of-fold p_* for every label
#   3. harmonrank benchmark       : every ranker, 5 seeds; on 4 objectives (four/) and on 6 (six/), in parallel
# The same command works on the full official KuaiRand-Pure or -1K standard logs (more days).
# Usage: bash benchmarks/kuairand_pure.sh [KUAIRAND_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/kuairand-pure}
out=${2:-benchmarks/results/kuairand_pure}
hr=${HARMONRANK:-.venv/bin/harmonrank}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/four" "$out/six"
"$hr" data kuairand --src "$src" --log standard --requests user-day --out "$work" | tee "$out/data.txt"
"$hr" upstream --data "$work/kuairand.parquet" --out "$work/scored.parquet" --folds 5 --by time \
  --report "$out/upstream.json" | tee "$out/upstream.txt"
# the six-objective dataset config: the written one plus comment and follow
sed 's/^name = "profile_enter"$/name = "profile_enter"\n\n[[objectives]]\nname = "comment"\n\n[[objectives]]\nname = "follow"/' \
  "$work/kuairand.toml" > "$work/kuairand6.toml"
"$hr" benchmark --threads 1 --config benchmarks/configs/kuairand_pure.toml --data "$work/scored.parquet" \
  --dataset-config "$work/kuairand.toml" --out "$out/four" > "$out/four/summary.txt" 2> "$out/four/log.txt" &
p4=$!
"$hr" benchmark --threads 1 --config benchmarks/configs/kuairand_pure_6.toml --data "$work/scored.parquet" \
  --dataset-config "$work/kuairand6.toml" --out "$out/six" > "$out/six/summary.txt" 2> "$out/six/log.txt" &
p6=$!
wait $p4
wait $p6
