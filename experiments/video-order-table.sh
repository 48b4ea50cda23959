#!/usr/bin/env bash
# Does the video model use the order of the frames? Trains configs/video-lstm.toml three
# ways — frames in order, frames shuffled within each clip, a single (middle) frame — and
# prints their test accuracy (chance: 0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RUN_EXP:-target/release/run-exp}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "| run | test acc | best val acc | wall s |"
echo "|---|---|---|---|"
for v in "in order|" "shuffled within each clip|--set data.shuffle_frames=true" "a single frame|--set data.frames_per_clip=1"; do
  name=${v%%|*}; set=${v#*|}
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$bin" configs/video-lstm.toml --set log.progress=false --set experiment.out_dir="$out/$name" $set 2>/dev/null >/dev/null
  t1=$(date +%s.%N)
  python3 - "$out/$name" "$name" "$t0" "$t1" <<'PY'
import glob, json, sys
d, name, t0, t1 = sys.argv[1:]
s = json.load(open(glob.glob(f"{d}/video-lstm/run-*/summary.json")[0]))
print(f"| {name} | {s['test_acc']:.4f} | {s['best_val_acc']:.4f} (epoch {s['best_epoch']}) | {float(t1) - float(t0):.0f} |")
PY
done
