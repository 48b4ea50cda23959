#!/usr/bin/env bash
# The shipped configs as a new user runs them: configs/{rnn,lstm,gru}.toml on the built-in
# reviews (6 epochs, seed 0). Prints best validation accuracy (epoch), test accuracy, the
# training time, and the gradient flow at the first and last logged steps (far/near:
# ||dL/dh|| 40 steps before the readout over at the readout, over the batch's sequences that
# are that long); copies each run's gradient-flow heatmaps here (grad_flow_<cell>_*.png).
#   usage: experiments/default-cells/run.sh [OUT_DIR]   (default results/default-cells)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/default-cells}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
here=experiments/default-cells
echo "| cell | best val acc (epoch) | test acc | s | far/near (40 back), first logged | far/near (40 back), last logged |"
echo "|---|---|---|---|---|---|"
for cell in rnn lstm gru; do
  rm -rf "$out/$cell"
  "$bin" "configs/$cell.toml" --set "experiment.out_dir=\"$out\"" --set log.progress=false \
    > /dev/null 2>&1
  run=$(ls -d "$out/$cell"/run-* | tail -1)
  python3 - "$run" "$cell" <<'PY'
import json, sys
run, cell = sys.argv[1], sys.argv[2]
s = json.load(open(f"{run}/summary.json"))
flows = [r["grad_flow"]["l0"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if r.get("grad_flow")]
def far(f):  # right-aligned: f[-1] is the readout, f[-41] 40 steps before it
    return f[-41] / f[-1] if len(f) > 40 and f[-1] > 0 else float("nan")
ratios = [far(f) for f in flows if len(f) > 40]
print(f"| {cell} | {s['best_val_acc']:.4f} ({s['best_epoch']}) | {s['test_acc']:.4f} | "
      f"{s['elapsed_s']:.1f} | {ratios[0]:.1e} | {ratios[-1]:.1e} |")
PY
  for png in "$run"/grad_flow_*.png; do
    cp "$png" "$here/$(basename "$png" .png | sed "s/^grad_flow_/grad_flow_${cell}_/").png"
  done
done
