#!/usr/bin/env bash
# SST-2 accuracy and wall time, rnnlab's configs/sst2-lstm.toml on the shared GLUE TSV files
# next to the PyTorch recipe ../shared/bench/torch_sst2.py, seeds 0 1 2, one after the other on
# this machine. Train on train.tsv, choose the epoch on dev.tsv, report test.tsv.
# usage: experiments/sst2-vs-torch.sh [config] [seeds...]   (PEER_PYTHON: python with torch)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/sst2-lstm.toml}; shift || true
seeds=${*:-0 1 2}
data=../shared/data/sst2
py=${PEER_PYTHON:-$HOME/.cache/peer/bin/python}
cargo build --release --quiet --bin run-exp
out=$(mktemp -d)
printf '| seed | rnnlab test acc | rnnlab best epoch | rnnlab wall s | torch test acc | torch best epoch | torch wall s |\n|---|---|---|---|---|---|---|\n'
for s in $seeds; do
  ./target/release/run-exp "$config" --set data.source=file --set "data.train=\"$data/train.tsv\"" \
    --set "data.valid=\"$data/dev.tsv\"" --set "data.test=\"$data/test.tsv\"" \
    --set experiment.seed=$s --set "experiment.out_dir=\"$out\"" --set log.progress=false 2>/dev/null >/dev/null
  sum=$(ls -d "$out"/*/run-* | tail -1)/summary.json
  ours=$(python3 -c "import json,sys; s=json.load(open('$sum')); print(f\"{s['test_acc']:.4f} | {s['best_epoch']} | {s['elapsed_s']:.1f}\")")
  if "$py" -c "import torch" 2>/dev/null; then
    peer=$("$py" ../shared/bench/torch_sst2.py "$data" --seed "$s" | tail -1 | python3 -c "import json,sys; s=json.loads(sys.stdin.read()); print(f\"{s['test_acc_at_best_dev']:.4f} | {s['best_epoch'] + 1} | {s['train_wall_s']:.1f}\")")
  else
    peer="(torch not installed) | | "
  fi
  echo "| $s | $ours | $peer |"
done
