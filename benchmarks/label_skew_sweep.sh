#!/usr/bin/env bash
# The label-skew sweep: buy's base rate 1:10^2, 1:10^3, 1:10^4 on 3M simulated rows (configs in
# benchmarks/configs/label_skew_sweep/), HarmonRank vs one_step_bce vs formula vs one_step_rank, 3 seeds each;
# then the summary table and plot (benchmarks/label_skew_sweep.py).
#   bash benchmarks/label_skew_sweep.sh            # all three settings, one after another, then the summary
#   bash benchmarks/label_skew_sweep.sh 1e4 1e2    # just these settings (e.g. two shells, one per core)
#   bash benchmarks/label_skew_sweep.sh summary    # only the summary of what has been run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
settings=("$@")
[ ${#settings[@]} -eq 0 ] && settings=(1e2 1e3 1e4 summary)
for s in "${settings[@]}"; do
  if [ "$s" = summary ]; then
    "$PY" benchmarks/label_skew_sweep.py
  else
    mkdir -p benchmarks/results/label_skew_sweep
    "$PY" -m harmonrank benchmark --threads 1 -c "benchmarks/configs/label_skew_sweep/buy_$s.toml" \
      -o "benchmarks/results/label_skew_sweep/buy_$s" 2>&1 | tee "benchmarks/results/label_skew_sweep/buy_$s.log"
  fi
done
