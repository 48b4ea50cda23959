#!/usr/bin/env python3
"""Time and peak RSS of truncated BPTT against the window k (T = 4,096) and against the length
T (k = 128, T up to 16,384): `run-exp bench --tbptt K` next to ../shared/bench/torch_tbptt_peer.py,
one configuration per process, rnnlab then PyTorch for each point (LSTM, batch 32, emb 64,
hidden 256, vocab 1,000, 2 threads, 3 timed steps after 1). Prints the two tables (markdown)
and draws cost.png beside this file (needs matplotlib in the Python that has torch).

    ~/.cache/peer/bin/python experiments/long-sequences/cost.py      # ~10 min on 2 cores
"""
import json, os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
bin = os.environ.get("RUN_EXP", os.path.join(root, "target/release/run-exp"))
peer = os.path.join(root, "..", "shared", "bench", "torch_tbptt_peer.py")
common = ["--cells", "lstm", "--batch", "32", "--emb", "64", "--hidden", "256", "--vocab", "1000",
          "--classes", "4", "--steps", "3", "--warmup", "1", "--threads", "2"]


def one(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    j = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    return j["train_samples_per_s"], j["peak_rss_mb"]


def point(seq, k):
    args = common + ["--seq", str(seq), "--tbptt", str(k)]
    ours = one([bin, "bench"] + args)
    theirs = one([sys.executable, peer] + args)
    return ours, theirs


rows_k, rows_t = [], []
print("| T = 4,096: k | rnnlab samples/s | torch samples/s | ratio | rnnlab RSS MiB | torch RSS MiB |")
print("|---|---|---|---|---|---|")
for k in [32, 128, 512, 1024, 0]:
    (a, ra), (b, rb) = point(4096, k)
    rows_k.append((k, a, b, ra, rb))
    print(f"| {k or 'full'} | {a} | {b} | {a / b:.2f} | {ra:.0f} | {rb:.0f} |", flush=True)
print()
print("| k = 128: T | rnnlab samples/s | torch samples/s | ratio | rnnlab RSS MiB | torch RSS MiB |")
print("|---|---|---|---|---|---|")
for t in [1024, 4096, 8192, 16384]:
    (a, ra), (b, rb) = point(t, 128)
    rows_t.append((t, a, b, ra, rb))
    print(f"| {t} | {a} | {b} | {a / b:.2f} | {ra:.0f} | {rb:.0f} |", flush=True)

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
fig, ax = plt.subplots(2, 2, figsize=(10, 7))
ks = [str(r[0] or "full") for r in rows_k]
ts = [r[0] for r in rows_t]
for col, (xs, rows, label) in enumerate([(ks, rows_k, "window k (T = 4,096)"), (ts, rows_t, "length T (k = 128)")]):
    ax[0][col].plot(xs, [r[1] for r in rows], "o-", label="rnnlab")
    ax[0][col].plot(xs, [r[2] for r in rows], "s-", label="PyTorch")
    ax[0][col].set_ylabel("training samples/s")
    ax[1][col].plot(xs, [r[3] for r in rows], "o-", label="rnnlab")
    ax[1][col].plot(xs, [r[4] for r in rows], "s-", label="PyTorch")
    ax[1][col].set_ylabel("peak RSS MiB")
    ax[1][col].set_xlabel(label)
    for a in (ax[0][col], ax[1][col]):
        a.grid(alpha=0.3)
        a.legend()
fig.suptitle("Truncated BPTT, LSTM batch 32 hidden 256, 2 threads")
fig.tight_layout()
fig.savefig(os.path.join(here, "cost.png"), dpi=90)
