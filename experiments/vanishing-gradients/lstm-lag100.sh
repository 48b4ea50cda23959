#!/usr/bin/env bash
# The LSTM at lag 100 (delayed recall, configs/recall-lstm.toml: 4 classes, vocab 16, emb 32,
# hidden 64, batch 64, Adam 1e-3, clip 5, 6 epochs = 6,000 steps): the shipped forget-gate bias
# of 1 against chrono initialisation (Tallec & Ollivier 2018, chrono_t_max = 100), seeds 0 1 2,
# two runs at a time. Prints test accuracy, the epoch of the best validation accuracy and the
# gradient flow (far over near, ||dL/dh_1|| / ||dL/dh_T||) of the first logged step.
#   usage: experiments/vanishing-gradients/lstm-lag100.sh [OUT_DIR]
#          (default results/vanishing-gradients)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/vanishing-gradients}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
run() {  # name seed extra...
  local name=$1 seed=$2; shift 2
  "$bin" configs/recall-lstm.toml --set data.lag=100 --set "experiment.seed=$seed" \
    --set "experiment.out_dir=\"$out\"" --set "experiment.name=\"$name-seed$seed\"" \
    --set log.progress=false "$@" > /dev/null 2>&1 || true
}
for seed in 0 1 2; do
  run forget-bias-1 "$seed" &
  run chrono "$seed" --set model.forget_bias=0.0 --set 'model.init_gate_bias="chrono"' \
    --set model.chrono_t_max=100 &
  wait
done
python3 - "$out" <<'PY'
import glob, json, math, sys
out = sys.argv[1]
print("| init | seed | test acc | best val acc (epoch) | far/near at step 1 |")
print("|---|---|---|---|---|")
for name, label in [("forget-bias-1", "forget bias 1"), ("chrono", "chrono, T_max 100")]:
    for seed in range(3):
        runs = sorted(glob.glob(f"{out}/{name}-seed{seed}/run-*"))
        if not runs:
            print(f"| {label} | {seed} | missing |"); continue
        s = json.load(open(f"{runs[-1]}/summary.json"))
        rows = [json.loads(l) for l in open(f"{runs[-1]}/metrics.jsonl")]
        flow = next(r["grad_flow"]["l0"] for r in rows if r.get("grad_flow"))
        ratio = flow[0] / flow[-1] if flow[-1] > 0 else float("nan")
        print(f"| {label} | {seed} | {s['test_acc']:.4f} | {s['best_val_acc']:.4f} ({s['best_epoch']}) | {ratio:.2e} |")
PY
