#!/usr/bin/env python3
"""Accuracy against the truncation window k and the length T on the temporal-order problem
(configs/temporal-order-lstm.toml: 2 relevant symbols, 4 classes, the first at 10-20% of each
sequence and the second at 50-60%; 8,000 training sequences, 3 epochs, Adam 3e-3, clip 1).
For rnn (tanh), lstm (chrono init), gru (PyTorch's init) and gru-chrono, T = 100 and 400 (each sequence T to 1.1 T steps),
k = 0.25, 0.45, 0.6 and 0.85 of T and full BPTT, seeds 0-2: one run-exp process per run,
under results/long-sequences-acc/ (a finished run is read back, not trained again). Prints the
table (markdown: test accuracy, mean and the three seeds), draws accuracy.png and copies four
gradient-flow heatmaps at T = 400 (seed 0) beside this file.

    ~/.cache/peer/bin/python experiments/long-sequences/accuracy.py    # ~30 min on 2 cores

Where each window reaches, counted back from a row's last step t: the second symbol sits
0.40-0.50 t back and the first 0.80-0.90 t back, so k = 0.25 T reaches neither, 0.45 T the
second in some rows, 0.6 T the second always (t <= 1.1 T) and the first never, 0.85 T the first
in some rows, and full BPTT both.
"""
import json, os, shutil, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
bin = os.environ.get("RUN_EXP", os.path.join(root, "target/release/run-exp"))
out = os.path.join(root, "results", "long-sequences-acc")
# (label, cell, chrono init): the GRU with PyTorch's default init and with chrono's update gate.
cells = [("rnn", "rnn", False), ("lstm", "lstm", True), ("gru", "gru", False),
         ("gru-chrono", "gru", True)]
lengths = [100, 400]
fractions = [0.25, 0.45, 0.6, 0.85, None]  # None: full BPTT
seeds = [0, 1, 2]


def run(label, cell, chrono, length, frac, seed):
    """One run (or the finished one on disk): its run directory."""
    k = 0 if frac is None else round(frac * length)
    name = f"{label}-T{length}-k{k or 'full'}-s{seed}"
    where = os.path.join(out, name, "run-001")
    if os.path.exists(os.path.join(where, "summary.json")):
        return where
    shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    max_len = length + length // 10
    sets = [f'experiment.out_dir="{out}"', f'experiment.name="{name}"', f"experiment.seed={seed}",
            f"model.cell={json.dumps(cell)}", f"data.length={length}", f"data.max_len={max_len}",
            f"train.tbptt={k}", "log.progress=false"]
    if chrono:
        sets.append(f"model.chrono_t_max={max_len}")
    else:
        sets.append('model.init_gate_bias="default"')
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        args = [bin, os.path.join(root, "configs", "temporal-order-lstm.toml")]
        os.execv(bin, args + [a for s in sets for a in ("--set", s)])
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit(f"run {name} failed (status {status})")
    return where


acc = {}
print("| cell | T | k | k / T | test acc mean | seeds 0, 1, 2 |")
print("|---|---|---|---|---|---|")
for length in lengths:
    for label, cell, chrono in cells:
        for frac in fractions:
            accs = []
            for seed in seeds:
                where = run(label, cell, chrono, length, frac, seed)
                accs.append(json.load(open(os.path.join(where, "summary.json")))["test_acc"])
            acc[(label, length, frac)] = accs
            k = "full" if frac is None else str(round(frac * length))
            f = "1 (full)" if frac is None else str(frac)
            print(f"| {label} | {length} | {k} | {f} | {sum(accs) / len(accs):.3f} | "
                  + ", ".join(f"{a:.3f}" for a in accs) + " |", flush=True)

# The gradient-flow heatmaps the README shows (T = 400, seed 0).
for label, k in [("lstm", 100), ("lstm", 180), ("rnn", "full"), ("gru", "full")]:
    src = os.path.join(out, f"{label}-T400-k{k}-s0", "run-001", "grad_flow_l0.png")
    shutil.copyfile(src, os.path.join(here, f"flow-{label}-T400-k{k}.png"))

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, len(lengths), figsize=(10, 4), sharey=True)
xs = [f if f is not None else 1.0 for f in fractions]
for ax, length in zip(axes, lengths):
    for label, _, _ in cells:
        means = [sum(acc[(label, length, f)]) / len(seeds) for f in fractions]
        line, = ax.plot(xs, means, marker="o", label=label)
        for x, f in zip(xs, fractions):
            ax.scatter([x] * len(seeds), acc[(label, length, f)], s=10, alpha=0.5,
                       color=line.get_color())
    for x, what in [(0.45, "2nd symbol"), (0.85, "1st symbol")]:
        ax.axvspan(x - 0.05, x + 0.05, color="grey", alpha=0.12)
        ax.text(x, 1.02, what, ha="center", fontsize=8)
    ax.axhline(0.25, color="grey", ls=":", lw=1)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_title(f"temporal order, T = {length} (x = 1: full BPTT)")
    ax.set_xlabel("window k / T")
    ax.set_ylim(0, 1.08)
axes[0].set_ylabel("test accuracy (3 seeds, line: mean)")
axes[0].legend()
fig.tight_layout()
fig.savefig(os.path.join(here, "accuracy.png"), dpi=110)
print("wrote", os.path.join(here, "accuracy.png"))
