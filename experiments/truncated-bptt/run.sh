#!/usr/bin/env bash
# Truncated BPTT on delayed recall: configs/recall-gru.toml at lag 20 (the class token at step
# 0, the readout at step 20: 21 steps) with train.tbptt = k for k in 5 10 15 20 21 25 and 0
# (full BPTT), 3 epochs, seed 0. Gradients flow only through the last k steps of each
# sequence, so the token is reachable only when k >= 21. Prints test accuracy, best epoch,
# wall time and peak RSS per k (one process per run).
#   usage: experiments/truncated-bptt/run.sh [OUT_DIR]   (default results/truncated-bptt)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/truncated-bptt}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
python3 - "$bin" "$out" <<'PY'
import json, os, sys, time
bin, out = sys.argv[1], sys.argv[2]

def run(name, sets):
    """One run-exp process on configs/recall-gru.toml: (summary, wall s, peak RSS MiB)."""
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1); os.dup2(devnull, 2)
        sets = [f'experiment.out_dir="{out}"', f'experiment.name="{name}"',
                "log.progress=false"] + sets
        os.execv(bin, [bin, "configs/recall-gru.toml"] + [a for s in sets for a in ("--set", s)])
    _, status, usage = os.wait4(pid, 0)
    wall = time.time() - t0
    runs = sorted(d for d in os.listdir(f"{out}/{name}") if d.startswith("run-"))
    s = json.load(open(f"{out}/{name}/{runs[-1]}/summary.json"))
    return s, wall, usage.ru_maxrss / 1024

print("| tbptt k | test acc | best val acc (epoch) | wall s | peak RSS MiB |")
print("|---|---|---|---|---|")
for k in [5, 10, 15, 20, 21, 25, 0]:
    s, wall, rss = run(f"k{k}", ["data.lag=20", f"train.tbptt={k}", "train.epochs=3"])
    label = "full" if k == 0 else str(k)
    print(f"| {label} | {s['test_acc']:.4f} | {s['best_val_acc']:.4f} ({s['best_epoch']}) | {wall:.0f} "
          f"| {rss:.0f} |", flush=True)
print()
# Time and memory against k where the recurrence dominates: lag 200 (201 steps), hidden 256,
# one epoch of 8,000 sequences (125 steps), logging off the per-step instruments' cost.
print("| lag 200, hidden 256: tbptt k | train s | wall s | peak RSS MiB |")
print("|---|---|---|---|")
for k in [10, 50, 100, 0]:
    s, wall, rss = run(f"big-k{k}", ["data.lag=200", "data.max_len=201", "model.hidden_size=256",
                                     "data.num_train=8000", "train.epochs=1", f"train.tbptt={k}",
                                     "log.every_steps=1000"])
    label = "full" if k == 0 else str(k)
    print(f"| {label} | {s['elapsed_s']:.1f} | {wall:.1f} | {rss:.0f} |", flush=True)
PY
# The README's figure: the training loss at k = 5, 15, 21 and full BPTT (tbptt = 0).
"$bin" plots --compare "$out"/k5/run-001 "$out"/k15/run-001 "$out"/k21/run-001 "$out"/k0/run-001 \
  --tag train/loss --out experiments/truncated-bptt/loss.png
