#!/usr/bin/env bash
# Delayed recall: test accuracy of rnn / lstm / gru at lag 20 and 50 with the shipped configs
# (configs/recall-*.toml), one run each, then a Markdown table from the runs' summary.json.
# usage: experiments/recall-table.sh [OUT_DIR]   (default results/recall-table)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/recall-table}
cargo build --release --bin run-exp
for lag in 20 50; do
  for cell in rnn lstm gru; do
    ./target/release/run-exp "configs/recall-$cell.toml" \
      --set "experiment.out_dir=\"$out\"" --set "experiment.name=\"$cell-L$lag\"" \
      --set "data.lag=$lag" || true
  done
done
python3 - "$out" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
print("| cell | lag | test acc | best val acc | best epoch | steps | time (s) | status |")
print("|---|---|---|---|---|---|---|---|")
for lag in (20, 50):
    for cell in ("rnn", "lstm", "gru"):
        runs = sorted(glob.glob(f"{out}/{cell}-L{lag}/run-*/summary.json"))
        if not runs:
            print(f"| {cell} | {lag} | - | - | - | - | - | missing |"); continue
        s = json.load(open(runs[-1]))
        t = s.get("test_acc"); t = f"{t:.4f}" if t is not None else "-"
        print(f"| {cell} | {lag} | {t} | {s['best_val_acc']:.4f} | {s['best_epoch']} | {s['steps']} | {s['elapsed_s']:.0f} | {s['status']} |")
PY
