#!/usr/bin/env bash
# The seed table of README.md here: the digits clip task (make_digits.py), trained by rnnlab
# (digits.toml) and by PyTorch (torch_recipe.py) for each seed, one after the other on the same
# machine, then summarize.py: test accuracy and plateau length (the first epoch whose
# validation accuracy reaches 0.2, twice chance) per harness, median / min / max, and a
# permutation test of the difference in plateau lengths. Needs a Python with torch, numpy,
# scikit-learn and safetensors ($PYTHON, default ~/.cache/peer/bin/python).
#   usage: experiments/video-dynamics/run.sh [seeds, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=${1:-10}
py=${PYTHON:-$HOME/.cache/peer/bin/python}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
out=results/video-dynamics
rm -rf "$out/digits" "$out/runs"
mkdir -p "$out/runs"
"$py" experiments/video-dynamics/make_digits.py "$out/data"
for s in $(seq 0 $((seeds - 1))); do
  RAYON_NUM_THREADS=2 "$bin" experiments/video-dynamics/digits.toml --set experiment.seed="$s" \
    --set experiment.threads=2 > "$out/runs/rnnlab-$s.log" 2>&1
  run=$(ls -d "$out"/digits/run-* | sort | tail -1)
  cp "$run/metrics.jsonl" "$out/runs/rnnlab-$s.metrics.jsonl"
  cp "$run/summary.json" "$out/runs/rnnlab-$s.summary.json"
  "$py" experiments/video-dynamics/torch_recipe.py "$out/data" "$s" --threads 2 > "$out/runs/torch-$s.jsonl"
  echo "seed $s done"
done
"$py" experiments/video-dynamics/summarize.py "$out/runs" "$seeds" | tee "$out/table.md"
