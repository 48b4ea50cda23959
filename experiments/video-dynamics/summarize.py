#!/usr/bin/env python3
"""The seed table from run.sh's runs: per harness, each seed's test accuracy and plateau
length (the first epoch whose validation accuracy reaches 0.2, twice chance; 13 = never in 12
epochs), then median / min / max and a two-sided permutation test (all splits of the pooled
seeds, or 20,000 random ones) of the difference in mean plateau length and in mean test
accuracy."""
import itertools, json, random, statistics, sys

runs, seeds = sys.argv[1], int(sys.argv[2])
NEVER, LEVEL = 13, 0.2


def plateau(vals):
    return next((e for e, v in vals if v >= LEVEL), NEVER)


rows = {"rnnlab": [], "pytorch": []}
for s in range(seeds):
    vals = [(r["epoch"], r["val_acc"]) for r in map(json.loads, open(f"{runs}/rnnlab-{s}.metrics.jsonl"))
            if r.get("split") == "epoch"]
    summ = json.load(open(f"{runs}/rnnlab-{s}.summary.json"))
    rows["rnnlab"].append((s, summ["test_acc"], plateau(vals), summ["best_epoch"], vals))
    lines = [json.loads(l) for l in open(f"{runs}/torch-{s}.jsonl")]
    vals = [(l["epoch"], l["val_acc"]) for l in lines if "epoch" in l]
    last = lines[-1]
    rows["pytorch"].append((s, last["test_acc"], plateau(vals), last["best_epoch"], vals))


def perm_p(a, b):
    pooled, n = a + b, len(a)
    obs = abs(statistics.mean(a) - statistics.mean(b))
    combos = list(itertools.combinations(range(len(pooled)), n)) if len(pooled) <= 20 else None
    rng = random.Random(0)
    draws = combos if combos else [rng.sample(range(len(pooled)), n) for _ in range(20000)]
    hits = 0
    for c in draws:
        cs = set(c)
        x = [pooled[i] for i in cs]
        y = [pooled[i] for i in range(len(pooled)) if i not in cs]
        hits += abs(statistics.mean(x) - statistics.mean(y)) >= obs - 1e-12
    return hits / len(draws)


print("| seed | rnnlab test acc | rnnlab plateau (epochs) | PyTorch test acc | PyTorch plateau (epochs) |")
print("|---|---|---|---|---|")
for (s, ra, rp, _, _), (_, ta, tp, _, _) in zip(rows["rnnlab"], rows["pytorch"]):
    show = lambda p: "never" if p == NEVER else str(p)
    print(f"| {s} | {ra:.3f} | {show(rp)} | {ta:.3f} | {show(tp)} |")
print()
print("| harness | test acc median | min | max | plateau median | min | max | seeds never leaving it |")
print("|---|---|---|---|---|---|---|---|")
for h in ["rnnlab", "pytorch"]:
    acc = [r[1] for r in rows[h]]
    pl = [r[2] for r in rows[h]]
    print(f"| {h} | {statistics.median(acc):.3f} | {min(acc):.3f} | {max(acc):.3f} | "
          f"{statistics.median(pl):g} | {min(pl)} | {max(pl) if max(pl) < NEVER else 'never'} | "
          f"{sum(p == NEVER for p in pl)} |")
print()
ra, ta = [r[1] for r in rows["rnnlab"]], [r[1] for r in rows["pytorch"]]
rp, tp = [r[2] for r in rows["rnnlab"]], [r[2] for r in rows["pytorch"]]
print(f"permutation test, {seeds} seeds a side: plateau length p = {perm_p(rp, tp):.3f}, "
      f"test accuracy p = {perm_p(ra, ta):.3f} (two-sided, difference of means)")
