"""Best metric after n trials, per method, from the sweeps run.sh ran.

usage: analyze.py OUT/tpe-vs-random FIGURE.png

A sweep's trials are taken in the order they were drawn (sweep.json: sample order for random,
ask order for TPE); "best after n" is the best validation value any of the first n recorded
(a pruned trial's at the last rung it reached). Prints the markdown tables of the README."""
import csv, json, math, statistics, sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

root, figure = Path(sys.argv[1]), sys.argv[2]
walls = {}
if (root / "walls.tsv").exists():
    for line in (root / "walls.tsv").read_text().splitlines():
        name, secs = line.split("\t")
        walls[name] = walls.get(name, 0.0) + float(secs)  # a resumed sweep: its runs added


def trials(name, key):
    """(value of key, elapsed_s, status) per trial, in draw order."""
    folder = root / name
    order = [t["id"] for t in json.loads((folder / "sweep.json").read_text())["trials"]]
    rows = {r["trial"]: r for r in csv.DictReader(open(folder / "summary.csv"))}
    out = []
    for t in order:
        r = rows[t]
        v = float(r[key]) if r[key] not in ("", None) else math.nan
        out.append((v, float(r["elapsed_s"] or 0), r["status"]))
    return out


def best_after(values, lower):
    best, out = math.inf if lower else -math.inf, []
    for v in values:
        if not math.isnan(v):
            best = min(best, v) if lower else max(best, v)
        out.append(best)
    return out


def fmt(x, lower):
    return f"{x:.2e}" if lower else f"{x:.4f}"


def study(prefix, methods, seeds, key, lower, ns):
    curves = {m: [best_after([v for v, _, _ in trials(f"{prefix}-{m}{s}", key)], lower) for s in seeds]
              for m in methods}
    n_max = min(len(c) for cs in curves.values() for c in cs)
    print(f"| method | " + " | ".join(f"best after {n}" for n in ns if n <= n_max) + " | wall s (median) | trial s (sum, median) | pruned (median) |")
    print("|---|" + "---|" * (len([n for n in ns if n <= n_max]) + 3))
    for m in methods:
        cells = []
        for n in ns:
            if n > n_max:
                continue
            at = [c[n - 1] for c in curves[m]]
            cells.append(f"{fmt(statistics.median(at), lower)} [{fmt(min(at), lower)}, {fmt(max(at), lower)}]")
        w = [walls.get(f"{prefix}-{m}{s}", math.nan) for s in seeds]
        t = [sum(e for _, e, _ in trials(f"{prefix}-{m}{s}", key)) for s in seeds]
        p = [sum(st == "pruned" for _, _, st in trials(f"{prefix}-{m}{s}", key)) for s in seeds]
        print(f"| {labels[m]} | " + " | ".join(cells) + f" | {statistics.median(w):.0f} | {statistics.median(t):.0f} | {statistics.median(p):.0f} |")
    return curves, n_max


# Delayed recall: 3 methods x 5 sweep seeds, ranked by validation loss.
methods = ["random-s", "tpe-s", "tpe-halving-s", "tpe-joint-s"]
labels = {"random-s": "random", "tpe-s": "TPE", "tpe-halving-s": "TPE + halving",
          "tpe-joint-s": "TPE, joint (multivariate)"}
seeds = range(5)
print(f"Delayed recall, lag 50: best validation loss after n trials, median [min, max] over {len(seeds)} sweep seeds\n")
curves, n_max = study("recall", methods, seeds, "best_val_loss", True, [1, 5, 10, 13, 15, 20, 27])
target = statistics.median(c[-1] for c in curves["random-s"])
print(f"\nrandom search's median best-of-{n_max}: {target:.2e}; trials each method needed to reach it (per sweep seed; - = not within {n_max}):\n")
print("| method | " + " | ".join(f"seed {s}" for s in seeds) + " | median |")
print("|---|" + "---|" * (len(seeds) + 1))
for m in methods:
    need = [next((i + 1 for i, b in enumerate(c) if b <= target), math.inf) for c in curves[m]]
    med = statistics.median(need)
    print(f"| {labels[m]} | " + " | ".join("-" if math.isinf(x) else str(x) for x in need)
          + f" | {'-' if math.isinf(med) else med} |")
print("\nThe same sweeps by best validation accuracy (median [min, max]):\n")
study("recall", methods, seeds, "best_val_acc", False, [1, 5, 10, 13, 20, 27])
# What the sampler's proposals are worth: trials that recall every token (val acc >= 0.99),
# among the first 10 (random in every method: TPE's startup) and among trials 11-27.
print("\nTrials that solve the task (best val acc >= 0.99; a pruned trial at its last rung), per sweep seed, and the first that did:\n")
print("| method | solved in trials 1-10 | solved in trials 11-27 | first solving trial (median [min, max]) |")
print("|---|---|---|---|")
for m in methods:
    early, late, first = [], [], []
    for s in seeds:
        acc = [v for v, _, _ in trials(f"recall-{m}{s}", "best_val_acc")]
        ok = [not math.isnan(a) and a >= 0.99 for a in acc]
        early.append(sum(ok[:10]))
        late.append(sum(ok[10:]))
        first.append(next((i + 1 for i, o in enumerate(ok) if o), math.inf))
    med = statistics.median(first)
    print(f"| {labels[m]} | {', '.join(map(str, early))} | {', '.join(map(str, late))} "
          f"| {med:g} [{min(first):g}, {max(first):g}] |")

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
colours = {"random-s": "tab:gray", "tpe-s": "tab:blue", "tpe-halving-s": "tab:orange",
           "tpe-joint-s": "tab:green"}
ax = axes[0]
for m in methods:
    cs = curves[m]
    n = range(1, n_max + 1)
    med = [statistics.median(c[i] for c in cs) for i in range(n_max)]
    lo = [min(c[i] for c in cs) for i in range(n_max)]
    hi = [max(c[i] for c in cs) for i in range(n_max)]
    ax.plot(n, med, color=colours[m], label=labels[m] + " (median of 5 sweep seeds)")
    ax.fill_between(n, lo, hi, color=colours[m], alpha=0.15)
ax.axhline(target, color="k", lw=0.7, ls=":", label=f"random's median best-of-{n_max}")
ax.set_yscale("log")
ax.set_xlabel("trials")
ax.set_ylabel("best validation loss so far")
ax.set_title("delayed recall, lag 50 (bands: min-max over sweep seeds)")
ax.legend(fontsize=8)

# SST-2: one pair, by dev accuracy.
print("\nSST-2, 1-epoch trials: best dev accuracy after n trials (one sweep each)\n")
ax = axes[1]
print("| method | " + " | ".join(f"after {n}" for n in [1, 5, 10, 15, 20]) + " | wall s | best trial's test acc |")
print("|---|---|---|---|---|---|---|---|")
for m, colour in [("random", "tab:gray"), ("tpe", "tab:blue"), ("tpe-joint", "tab:green")]:
    name = f"sst2-{m}"
    if not (root / name / "summary.csv").exists():
        continue
    ts = trials(name, "best_val_acc")
    c = best_after([v for v, _, _ in ts], False)
    rows = list(csv.DictReader(open(root / name / "summary.csv")))
    best = max((r for r in rows if r["best_val_acc"]), key=lambda r: float(r["best_val_acc"]))
    print(f"| {m} | " + " | ".join(f"{c[n - 1]:.4f}" for n in [1, 5, 10, 15, 20] if n <= len(c))
          + f" | {walls.get(name, math.nan):.0f} | {float(best['test_acc']):.4f} |")
    ax.plot(range(1, len(c) + 1), c, color=colour,
            label={"random": "random", "tpe": "TPE", "tpe-joint": "TPE, joint"}[m])
    ax.scatter(range(1, len(ts) + 1), [v for v, _, _ in ts], color=colour, s=10, alpha=0.5)
ax.set_xlabel("trials")
ax.set_ylabel("dev accuracy (points: each trial; line: best so far)")
ax.set_title("SST-2, 1 epoch per trial")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure, dpi=110)
print(f"\nwrote {figure}")
