#!/usr/bin/env bash
# Runs experiments/halving.toml, then the same 27 sampled configurations in full (method =
# "random", same sampler seed, into results/halving-full), and compares: epochs trained and
# wall time of each, and whether both pick the same best configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RUN_EXP:-target/release/run-exp}
t0=$(date +%s.%N)
"$bin" experiments/halving.toml >/dev/null
t1=$(date +%s.%N)
"$bin" experiments/halving.toml --set sweep.method=random --set experiment.name=halving-full >/dev/null
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" <<'PY'
import csv, sys
t0, t1, t2 = map(float, sys.argv[1:])
def load(name):
    rows = list(csv.DictReader(open(f"results/{name}/summary.csv")))
    epochs = sum(int(r["epochs_done"] or 0) for r in rows)
    best = open(f"results/{name}/best.toml").readline().strip()
    return rows, epochs, best
h, he, hb = load("halving")
f, fe, fb = load("halving-full")
status = {}
for r in h:
    status[r["status"]] = status.get(r["status"], 0) + 1
print(f"halving: {len(h)} trials {status}, {he} epochs, {t1 - t0:.0f} s")
print(f"full:    {len(f)} trials, {fe} epochs, {t2 - t1:.0f} s")
print(f"halving spent {he / fe:.0%} of the epochs and {(t1 - t0) / (t2 - t1):.0%} of the time")
key = lambda r: (r["model.cell"], r["train.lr"], r["model.hidden_size"])
print("best by halving:", key(h[0]), "val_loss", h[0]["best_val_loss"])
print("best in full:   ", key(f[0]), "val_loss", f[0]["best_val_loss"])
rank = [key(r) for r in f].index(key(h[0])) + 1
print(f"same best configuration: {key(h[0]) == key(f[0])} (halving's pick ranks {rank} of {len(f)} in full)")
PY
