#!/usr/bin/env bash
# TPE against random search (README.md beside this file): the delayed-recall sweep
# (sweep.toml) with method = "random", "tpe", "tpe" + prune = "halving" and "tpe" with
# multivariate = true (one joint estimator), sweep seeds 0-4,
# the methods alternating within each seed; then 20-trial random / TPE / joint TPE sweeps on SST-2
# (sst2.toml, ../shared/data/sst2). Each run of a sweep appends its wall time to
# OUT/tpe-vs-random/walls.tsv (a resumed sweep's runs add up; a finished one adds a second);
# analyze.py (matplotlib: the peer venv) prints the tables and draws best-after-n.png.
#   usage: experiments/tpe-vs-random/run.sh [OUT_DIR]   (default results; sweeps resume)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results}
bin=${RUN_EXP:-target/release/run-exp}
py=${PYTHON:-$HOME/.cache/peer/bin/python}
[ -x "$bin" ] || cargo build --release --bin run-exp
mkdir -p "$out/tpe-vs-random"
walls="$out/tpe-vs-random/walls.tsv"
sweep() { # name file method [sets...]
  local name=$1 file=$2 method=$3; shift 3
  local t0=$SECONDS
  "$bin" "$file" --set "experiment.out_dir=\"$out/tpe-vs-random\"" --set "experiment.name=\"$name\"" \
    --set "sweep.method=\"$method\"" "$@" > /dev/null 2> "$out/tpe-vs-random/$name.log"
  printf '%s\t%s\n' "$name" $((SECONDS - t0)) >> "$walls"
}
for s in 0 1 2 3 4; do
  sweep "recall-random-s$s" experiments/tpe-vs-random/sweep.toml random --set "sweep.seed=$s"
  sweep "recall-tpe-s$s" experiments/tpe-vs-random/sweep.toml tpe --set "sweep.seed=$s"
  sweep "recall-tpe-halving-s$s" experiments/tpe-vs-random/sweep.toml tpe --set "sweep.seed=$s" \
    --set 'sweep.prune="halving"'
  sweep "recall-tpe-joint-s$s" experiments/tpe-vs-random/sweep.toml tpe --set "sweep.seed=$s" \
    --set sweep.multivariate=true
done
sweep sst2-random experiments/tpe-vs-random/sst2.toml random
sweep sst2-tpe experiments/tpe-vs-random/sst2.toml tpe
sweep sst2-tpe-joint experiments/tpe-vs-random/sst2.toml tpe --set sweep.multivariate=true
"$py" experiments/tpe-vs-random/analyze.py "$out/tpe-vs-random" experiments/tpe-vs-random/best-after-n.png
