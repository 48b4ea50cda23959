#!/usr/bin/env python3
"""Reads a run folder's TensorBoard event files with TensorBoard's own EventAccumulator and
checks the tags rnnlab documents, and that every scalar curve has one point per step (after a
crash and --resume, the SessionLog(START) event must have made TensorBoard drop what the killed
process logged after its checkpoint). usage: python tests/check_events.py RUN_DIR
(needs `pip install tensorboard`; the Rust suite parses the files itself and does not need it)."""
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = sys.argv[1]
acc = EventAccumulator(run, size_guidance={"scalars": 0, "histograms": 0})
acc.Reload()
tags = acc.Tags()
scalars, histos, images = set(tags["scalars"]), set(tags["histograms"]), set(tags["images"])
want_scalars = {"train/loss", "train/lr", "grad/global_norm", "grad/clipped", "train/acc",
                "val/loss", "val/acc", "grad_flow/l0/first_step", "grad_flow/l0/last_step",
                "grad_flow/l0/far_over_near", "grad_flow/l0/log_slope",
                "grad_flow/l0/c/far_over_near",
                "spectrum/rnn.weight_hh_l0", "update_ratio/rnn.weight_hh_l0",
                "gates/l0/forget_mean", "gates/l0/saturated"}
want_histos = {"grad_flow/l0/by_timestep", "grad_flow/l0/c/by_timestep"}
want_images = {"grad_flow/l0/heatmap", "grad_flow/l0/c/heatmap"}
missing = (want_scalars - scalars) | (want_histos - histos) | (want_images - images)
if not any(t.startswith("grad_norm/") for t in scalars):
    missing.add("grad_norm/<param>")
if not any(t.startswith("weights/") for t in histos):
    missing.add("weights/<param>")
loss = [e.value for e in acc.Scalars("train/loss")]
print(f"{len(scalars)} scalar tags, {len(histos)} histogram tags; train/loss {len(loss)} points, "
      f"first {loss[0]:.4f} last {loss[-1]:.4f}; val/acc {[round(e.value, 4) for e in acc.Scalars('val/acc')]}")
if missing:
    sys.exit(f"missing tags: {sorted(missing)}")
for tag in sorted(scalars):
    steps = [e.step for e in acc.Scalars(tag)]
    if steps != sorted(set(steps)):
        sys.exit(f"{tag}: steps repeat or go back: {steps}")
print("ok")
