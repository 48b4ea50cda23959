#!/usr/bin/env bash
# Gradient flow through time, per cell: trains configs/recall-{rnn,lstm,gru}.toml (delayed
# recall, lag 20 unless LAG is set) and prints, from each run's metrics.jsonl, the gradient
# flow of the first and last logged steps: ||dL/dh_t|| at the step farthest from the readout
# over the nearest (far_over_near) and the slope of ln ||dL/dh_t|| per step of distance
# (log_slope: below 0 the gradient vanishes, by e^slope per step), with test accuracy. The
# heatmaps are each run's grad_flow_l0.png.
#   usage: experiments/grad-flow-table.sh [OUT_DIR]   (default results/grad-flow)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/grad-flow}
lag=${LAG:-20}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
for cell in rnn lstm gru; do
  "$bin" "configs/recall-$cell.toml" --set "experiment.out_dir=\"$out\"" \
    --set "experiment.name=\"$cell-L$lag\"" --set "data.lag=$lag" --set log.progress=false \
    > /dev/null 2>&1 || true
done
python3 - "$out" "$lag" <<'PY'
import glob, json, math, sys
out, lag = sys.argv[1], int(sys.argv[2])
def shape(steps):
    # As rnnlab's grads::flow_shape for a forward direction (readout at the last step).
    t = len(steps)
    pts = [(t - 1 - i, math.log(g)) for i, g in enumerate(steps) if g > 0]
    far, near = max(pts), min(pts)
    mx = sum(p[0] for p in pts) / len(pts); my = sum(p[1] for p in pts) / len(pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)
    return math.exp(far[1] - near[1]), slope
print(f"delayed recall, lag {lag}: gradient flow of layer l0 at the first and last logged step")
print("| cell | test acc | far/near, step 1 | log slope, step 1 | far/near, last | log slope, last | heatmap |")
print("|---|---|---|---|---|---|---|")
for cell in ("rnn", "lstm", "gru"):
    runs = sorted(glob.glob(f"{out}/{cell}-L{lag}/run-*"))
    if not runs:
        print(f"| {cell} | missing |"); continue
    run = runs[-1]
    rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    flows = [r for r in rows if r.get("grad_flow")]
    s = json.load(open(f"{run}/summary.json"))
    (r0, s0), (r1, s1) = shape(flows[0]["grad_flow"]["l0"]), shape(flows[-1]["grad_flow"]["l0"])
    print(f"| {cell} | {s.get('test_acc', float('nan')):.4f} | {r0:.2e} | {s0:.3f} | {r1:.2e} | {s1:.3f} "
          f"| {run}/grad_flow_l0.png |")
PY
