#!/usr/bin/env bash
# SST-2 cells: runs experiments/sst2-cells/sweep.toml (rnn / lstm / gru x uni / bi x seeds 0 1
# 2 on ../shared/data/sst2, two trials at a time) and prints mean ± std (over seeds) of test
# accuracy, best validation accuracy and wall time per trial, from summary_by_config.csv.
#   usage: experiments/sst2-cells/run.sh [OUT_DIR]   (default results; the sweep is resumable)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
"$bin" experiments/sst2-cells/sweep.toml --set "experiment.out_dir=\"$out\"" > /dev/null 2>&1
python3 - "$out/sst2-cells/summary_by_config.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| cell | bidirectional | test acc (mean ± std) | best dev acc | wall s per trial | seeds |")
print("|---|---|---|---|---|---|")
key = lambda r: (["rnn", "lstm", "gru"].index(r["model.cell"]), r["model.bidirectional"])
for r in sorted(rows, key=key):
    f = lambda k: float(r[k]) if r[k] not in ("", None) else float("nan")
    print(f"| {r['model.cell']} | {r['model.bidirectional']} | {f('test_acc_mean'):.4f} ± {f('test_acc_std'):.4f} "
          f"| {f('best_val_acc_mean'):.4f} ± {f('best_val_acc_std'):.4f} | {f('elapsed_s_mean'):.0f} | {r['n']} |")
PY
# The README's figure: every trial's validation accuracy by step, one colour per cell and
# direction (the seeds of a configuration share it).
"$bin" plots --compare "$out"/sst2-cells/*/ --tag val/acc --out experiments/sst2-cells/val-acc.png
# Which axes mattered and accuracy against training time (README "Sweeps"): the sweep's last
# write made importance.png; summarize --pareto draws pareto.png.
"$bin" summarize "$out/sst2-cells" --pareto time > /dev/null
cp "$out/sst2-cells/importance.png" "$out/sst2-cells/pareto.png" experiments/sst2-cells/
