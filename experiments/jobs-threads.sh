#!/usr/bin/env bash
# jobs x threads on this machine: two 12-trial sweeps (a small model: delayed recall, hidden
# 32; a bigger one: synthetic reviews, embedding 128, hidden 256), each run with jobs=1
# threads=1, jobs=1 threads=2 and jobs=2 threads=1 (cores = 2). Prints the sweep's wall time,
# and the per-trial overhead: a trial process's wall time (spawn to exit, as the driver
# measures it) minus its training time (summary.json elapsed_s), i.e. process start, plan
# and data load, model init, final scoring, summary; and the overhead's share of the sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RUN_EXP:-target/release/run-exp}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
small=(experiments/cells-lr.toml --set 'sweep.axes."train.lr"=[1e-3, 1e-2]' --set train.epochs=3)
big=(experiments/cells-lr.toml --set 'data.source="synthetic-sentiment"' --set data.num_train=6000
     --set data.max_len=64 --set model.embedding_dim=128 --set model.hidden_size=256
     --set train.epochs=2 --set 'sweep.axes."train.lr"=[1e-3, 1e-2]')
printf "| sweep | jobs | threads | wall s | trials | mean trial s | overhead / trial s | overhead share |\n"
printf "|---|---|---|---|---|---|---|---|\n"
for which in small big; do
  for jt in "1 1" "1 2" "2 1"; do
    set -- $jt
    name="$which-j$1-t$2"
    if [ "$which" = small ]; then args=("${small[@]}"); else args=("${big[@]}"); fi
    # 3 cells x 2 learning rates x 2 seeds = 12 trials.
    t0=$(date +%s.%N)
    "$bin" "${args[0]}" "${args[@]:1}" --set experiment.out_dir="$out" --set experiment.name="$name" \
      --set sweep.jobs=$1 --set experiment.threads=$2 2>"$out/$name.log" >/dev/null
    t1=$(date +%s.%N)
    python3 - "$out" "$name" "$t0" "$t1" "$which" "$1" "$2" <<'PY'
import csv, re, sys
out, name, t0, t1, which, jobs, threads = sys.argv[1:]
wall = float(t1) - float(t0)
trial_wall = {m.group(1): float(m.group(2)) for m in
              re.finditer(r"trial (\w+) completed in ([0-9.]+)s", open(f"{out}/{name}.log").read())}
rows = list(csv.DictReader(open(f"{out}/{name}/summary.csv")))
over = [trial_wall[r["trial"]] - float(r["elapsed_s"]) for r in rows if r["trial"] in trial_wall]
mean_trial = sum(trial_wall.values()) / len(trial_wall)
mean_over = sum(over) / len(over)
share = sum(over) / int(jobs) / wall
print(f"| {which} | {jobs} | {threads} | {wall:.1f} | {len(rows)} | {mean_trial:.2f} | {mean_over:.3f} | {share:.1%} |")
PY
  done
done
