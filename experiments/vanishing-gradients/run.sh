#!/usr/bin/env bash
# Vanishing gradients on delayed recall (configs/recall-{rnn,lstm,gru}.toml: the class token,
# then `lag` distractors; 4 classes, vocab 16, emb 32, hidden 64, batch 64, Adam, clip 5) at
# lags 10 20 50 100 200 for four cells: tanh RNN (lr 1e-3), LSTM with forget-gate bias 1
# (lr 1e-3), LSTM with chrono initialisation (chrono_t_max = lag, forget bias 0, lr 1e-3) and
# GRU (lr 3e-3); seeds 0 1 2. Each run: 6,000 steps as 24 epochs of 16,000 sequences, so the
# validation accuracy is measured every 250 steps. JOBS runs at a time (default 2), one thread
# each. Prints, per cell and lag, the seeds solved (best validation accuracy >= 0.99), the steps
# to solve (the first validation at >= 0.99, per seed; - for not solved), the mean test
# accuracy, and the gradient flow at training step 1 (||dL/dh_1|| / ||dL/dh_T||, the class
# token's step over the readout's, geometric mean over seeds); then, for seed 0 at lags 50 and
# 100, what the instruments saw at the first and the last logged step: far/near, the largest
# singular value of W_hh, the mean forget (lstm) / update (gru) gate and the fraction of
# saturated units; and copies those runs' gradient-flow heatmaps here (flow_<cell>_lag<L>.png).
# Seeded: a rerun prints the same. Runs already in OUT_DIR are not repeated.
#   usage: experiments/vanishing-gradients/run.sh [OUT_DIR]   (default results/vanishing-gradients)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/vanishing-gradients}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
python3 - "$bin" "$out" "${JOBS:-2}" <<'PY'
import glob, json, math, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
bin, out, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
LAGS, SEEDS = [10, 20, 50, 100, 200], [0, 1, 2]
CELLS = {  # name: (config, extra --set pairs (lag -> list))
    "rnn (tanh)": ("configs/recall-rnn.toml", lambda lag: []),
    "lstm, forget bias 1": ("configs/recall-lstm.toml", lambda lag: []),
    "lstm, chrono": ("configs/recall-lstm.toml", lambda lag: [
        "model.forget_bias=0.0", 'model.init_gate_bias="chrono"', f"model.chrono_t_max={lag}"]),
    "gru": ("configs/recall-gru.toml", lambda lag: []),
}
def slug(cell): return cell.split(",")[0].split(" ")[0] + ("-chrono" if "chrono" in cell else "")
def folder(cell, lag, seed): return f"{out}/{slug(cell)}-lag{lag}-seed{seed}"
def run(job):
    cell, lag, seed = job
    config, extra = CELLS[cell]
    sets = [f"data.lag={lag}", f"data.max_len={lag + 1}", "data.num_train=16000",
            "train.epochs=24", f"experiment.seed={seed}", f'experiment.out_dir="{out}"',
            f'experiment.name="{os.path.basename(folder(cell, lag, seed))}"',
            "log.progress=false", "experiment.threads=1"] + extra(lag)
    if glob.glob(f"{folder(cell, lag, seed)}/run-*/summary.json"):
        return  # done by an earlier call
    args = [bin, config] + [a for s in sets for a in ("--set", s)]
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
todo = [(c, l, s) for l in sorted(LAGS, reverse=True) for c in CELLS for s in SEEDS]
with ThreadPoolExecutor(jobs) as pool:
    list(pool.map(run, todo))
def result(cell, lag, seed):
    runs = sorted(glob.glob(f"{folder(cell, lag, seed)}/run-*"))
    if not runs or not os.path.exists(f"{runs[-1]}/summary.json"):
        return None
    s = json.load(open(f"{runs[-1]}/summary.json"))
    rows = [json.loads(l) for l in open(f"{runs[-1]}/metrics.jsonl")]
    solved = next((r["step"] for r in rows if r.get("split") == "epoch" and r["val_acc"] >= 0.99), None)
    flow = next(r["grad_flow"]["l0"] for r in rows if r.get("grad_flow"))
    ratio = flow[0] / flow[-1] if flow[-1] > 0 else float("nan")
    return s["test_acc"], solved, ratio
print("| cell | lag | solved | steps to solve (seeds 0, 1, 2) | mean test acc | far/near at step 1 |")
print("|---|---|---|---|---|---|")
for cell in CELLS:
    for lag in LAGS:
        res = [result(cell, lag, s) for s in SEEDS]
        if any(r is None for r in res):
            print(f"| {cell} | {lag} | missing | | | |"); continue
        solved = sum(r[1] is not None for r in res)
        steps = ", ".join("-" if r[1] is None else str(r[1]) for r in res)
        acc = sum(r[0] for r in res) / len(res)
        logs = [math.log10(r[2]) for r in res if r[2] > 0]
        flow = f"{10 ** (sum(logs) / len(logs)):.1e}" if len(logs) == len(res) else (
            "0 (f32 underflow)" if not logs else f"{10 ** (sum(logs) / len(logs)):.1e} ({len(res) - len(logs)} seed(s) 0)")
        print(f"| {cell} | {lag} | {solved}/3 | {steps} | {acc:.4f} | {flow} |", flush=True)
# The gradient-flow heatmaps of seed 0 at lags 50 and 100, next to this script.
import shutil
here = "experiments/vanishing-gradients"  # the script cd-ed to the repository root
for lag in [50, 100]:
    for cell in CELLS:
        runs = sorted(glob.glob(f"{folder(cell, lag, 0)}/run-*"))
        if runs:  # drawn again from metrics.jsonl by this binary's renderer
            subprocess.run([bin, "plots", runs[-1]], stdout=subprocess.DEVNULL, check=True)
            shutil.copy(f"{runs[-1]}/grad_flow_l0.png", f"{here}/flow_{slug(cell)}_lag{lag}.png")
print()
print("| cell | lag | far/near, first → last | σ_max(W_hh), first → last | gate mean, first → last | saturated, first → last |")
print("|---|---|---|---|---|---|")
for lag in [50, 100]:
    for cell in CELLS:
        runs = sorted(glob.glob(f"{folder(cell, lag, 0)}/run-*"))
        if not runs:
            continue
        rows = [json.loads(l) for l in open(f"{runs[-1]}/metrics.jsonl")]
        logged = [r for r in rows if r.get("grad_flow")]
        first, last = logged[0], logged[-1]
        def far(r):
            f = r["grad_flow"]["l0"]
            return f"{f[0] / f[-1]:.1e}" if f[-1] > 0 else "-"
        def sigma(r):
            return f"{next(iter(r['spectrum'].values())):.2f}"
        gate_key = {"lstm": "forget_mean", "gru": "update_mean"}.get(slug(cell).split("-")[0])
        def gate(r):
            return f"{r['gates']['l0'][gate_key]:.3f}" if gate_key else "-"
        def sat(r):
            return f"{r['gates']['l0']['saturated']:.3f}"
        print(f"| {cell} | {lag} | {far(first)} → {far(last)} | {sigma(first)} → {sigma(last)} | "
              f"{gate(first)} → {gate(last)} | {sat(first)} → {sat(last)} |")
PY
