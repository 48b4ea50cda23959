#!/usr/bin/env bash
# Exploding gradients and clipping: a ReLU RNN with identity recurrent weights (IRNN,
# experiments/exploding-gradients/rnn-relu.toml: delayed recall, lag 20, hidden 64, Adam lr
# 1e-2, no clipping unless asked) for 2 epochs, with train.clip_norm = none, 100, 10, 1, 0.1,
# seeds 0 1 2. Prints, from each run's metrics.jsonl (logged every 10 steps): status, test
# accuracy, the largest and median pre-clip gradient norm, the share of logged steps clipped,
# and sigma_max(W_hh) after the first and the last logged step.
#   usage: experiments/exploding-gradients/run.sh [OUT_DIR]   (default results/exploding-gradients)
#   then: tensorboard --logdir OUT_DIR   (grad/global_norm, spectrum/rnn.weight_hh_l0)
#   Draws norms.png and loss.png beside this script (run-exp plots --compare).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/exploding-gradients}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
for clip in none 100 10 1 0.1; do
  for seed in 0 1 2; do
    extra=()
    [ "$clip" != none ] && extra=(--set "train.clip_norm=$clip")
    "$bin" experiments/exploding-gradients/rnn-relu.toml --set "experiment.out_dir=\"$out\"" \
      --set "experiment.name=\"clip-$clip-seed-$seed\"" --set "experiment.seed=$seed" \
      --set 'model.nonlinearity="relu"' --set 'model.init_hh="identity"' --set train.lr=1e-2 \
      --set train.epochs=2 --set log.every_steps=10 --set log.progress=false "${extra[@]}" \
      > /dev/null 2>&1 || true
  done
done
python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
print("| clip_norm | seed | status | test acc | max pre-clip norm | median norm | clipped | sigma_max(W_hh) first -> last |")
print("|---|---|---|---|---|---|---|---|")
for clip in ["none", "100", "10", "1", "0.1"]:
    for seed in range(3):
        runs = sorted(glob.glob(f"{out}/clip-{clip}-seed-{seed}/run-*"))
        if not runs:
            print(f"| {clip} | {seed} | missing |"); continue
        rows = [json.loads(l) for l in open(f"{runs[-1]}/metrics.jsonl")]
        tr = [r for r in rows if r.get("split") == "train"]
        s = json.load(open(f"{runs[-1]}/summary.json"))
        norms = [r["grad_norm"] for r in tr]
        sig = [r["spectrum"]["rnn.weight_hh_l0"] for r in tr if r.get("spectrum")]
        acc = s.get("test_acc")
        print(f"| {clip} | {seed} | {s['status']} | {'-' if acc is None else f'{acc:.4f}'} | {max(norms):.3g} "
              f"| {statistics.median(norms):.3g} | {sum(r['clipped'] for r in tr) / len(tr):.2f} "
              f"| {sig[0]:.2f} -> {sig[-1]:.2f} |")
PY
# The README's figures: pre-clip norms without clipping and clipped at 1 (log scale; a zero
# gradient leaves a gap), and the training loss (log scale) without clipping, at 100 and at 1 (seeds share
# a colour).
"$bin" plots --compare "$out"/clip-none-seed-*/run-001 "$out"/clip-1-seed-*/run-001 \
  --tag grad/global_norm --log-y --out experiments/exploding-gradients/norms.png
"$bin" plots --compare "$out"/clip-none-seed-*/run-001 "$out"/clip-100-seed-*/run-001 "$out"/clip-1-seed-*/run-001 --tag train/loss --log-y \
  --out experiments/exploding-gradients/loss.png
