#!/usr/bin/env bash
# A sweep's overhead at scale: fabricates N finished trial folders (default 10,000: the
# 100 x 100 grid of sweep.toml here, every trial but the last REAL completed), runs the REAL
# (default 4) left in that sweep for real, one at a time, and times `run-exp summarize` over
# the whole folder. Prints: the driver's start (plan, folder checks, reading every trial),
# each real trial's overhead (its process's wall time as the driver measures it, minus its
# training time from summary.json, plus the driver's table rewrite after it), and summarize.
# The fabricated folders hold what a finished trial leaves that the tables read: trial.json,
# summary.json, config.toml and metrics.jsonl copied from a real trial of the same sweep.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=experiments/sweep-scale
bin=${RUN_EXP:-${CARGO_TARGET_DIR:-target}/release/run-exp}
N=${N:-10000}
REAL=${REAL:-4}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
side=$(python3 -c "import math; print(math.isqrt($N))")
lrs=$(python3 -c "print(', '.join(f'{1e-3 * (1 + i / 100):.6g}' for i in range($side)))")
wds=$(python3 -c "print(', '.join(f'{i * 1e-6:.6g}' for i in range($side)))")
set_axes=(--set experiment.out_dir="$out" --set "sweep.axes.\"train.lr\"=[$lrs]"
          --set "sweep.axes.\"train.weight_decay\"=[$wds]")
"$bin" $here/sweep.toml "${set_axes[@]}" --dry-run > "$out/plan.txt"
n=$(($(wc -l < "$out/plan.txt") - 1))
# One real trial to copy from (the first), then the fabricated ones, the last REAL left to run.
first=$(sed -n 2p "$out/plan.txt" | cut -d' ' -f1)
"$bin" $here/sweep.toml "${set_axes[@]}" --trial "$first" 2>/dev/null
python3 $here/fabricate.py "$out/scale" "$out/plan.txt" "$first" "$REAL"
t0=$(date +%s.%N)
"$bin" $here/sweep.toml "${set_axes[@]}" 2> "$out/driver.log" > /dev/null
t1=$(date +%s.%N)
t2=$(date +%s.%N)
"$bin" summarize "$out/scale" > /dev/null
t3=$(date +%s.%N)
# SIGTERM while trials run (train.epochs raised: every trial is continued), once the driver has
# started its first trial: how long until it has checkpointed, written the tables and exited.
"$bin" $here/sweep.toml "${set_axes[@]}" --set train.epochs=200 2> "$out/term.log" > /dev/null &
driver=$!
until grep -q "to run here" "$out/term.log" 2>/dev/null; do sleep 0.1; done
sleep 1
t4=$(date +%s.%N)
kill -TERM $driver
wait $driver || true
t5=$(date +%s.%N)
echo "SIGTERM while trials run: the sweep exited $(python3 -c "print(f'{$t5 - $t4:.2f}')") s after the signal"
python3 - "$out" "$n" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, re, sys
out, n, t0, t1, t2, t3 = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
log = open(f"{out}/driver.log").read()
tables = float(re.search(r"tables rewritten after each of \d+ trials in ([\d.]+) s", log).group(1))
print(f"trials in the sweep: {n}")
rows = []
for m in re.finditer(r"trial (\w+) completed in ([\d.]+)s", log):
    tid, wall = m.group(1), float(m.group(2))
    train = json.load(open(f"{out}/scale/{tid}/summary.json"))["elapsed_s"]
    rows.append(wall - train)
    print(f"trial {tid}: process {wall:.2f} s, training {train:.2f} s, overhead {wall - train:.2f} s")
walls = sum(float(m.group(1)) for m in re.finditer(r"completed in ([\d.]+)s", log))
print(f"table rewrite after a trial: {tables:.3f} s (mean)")
print(f"per-trial overhead (process minus training, plus the rewrite): {sum(rows) / len(rows) + tables:.2f} s (mean of {len(rows)})")
print(f"driver: {t1 - t0:.2f} s in all, of which trials {walls:.2f} s; start and end {t1 - t0 - walls - tables * len(rows):.2f} s")
print(f"summarize of {n} trials: {t3 - t2:.2f} s")
PY
