#!/usr/bin/env bash
# Regenerates benchmarks/results/simulator_summary.{md,json}: the summary `harmonrank simulate` prints for the
# default simulator at 1 M rows (label rates, label correlations, AUC of p_* and of true_*).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo "# Default simulator summary"
  echo
  echo "Produced by \`bash benchmarks/simulator_summary.sh\`, i.e."
  echo "\`harmonrank simulate --out sim.parquet --rows 1000000 --seed 0\`."
  echo
  .venv/bin/harmonrank simulate --out "$tmp/sim.parquet" --rows 1000000 --seed 0 \
    --json benchmarks/results/simulator_summary.json 2>/dev/null
} > benchmarks/results/simulator_summary.md
cat benchmarks/results/simulator_summary.md
