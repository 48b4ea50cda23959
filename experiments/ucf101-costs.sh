#!/usr/bin/env bash
# What the README's UCF101 walkthrough costs on this machine, measured on stand-in videos of
# UCF101's shape (these machines cannot download the dataset): 320 x 240, 25 fps, 7 s (the
# dataset's mean length), MPEG-4 in AVI as it ships, named v_<Class>_gNN_cNN.avi, with its
# split files (classInd.txt, trainlist01.txt, testlist01.txt, CRLF). It measures
#   1. decoding (source = "videos", protocol = "ucf101", 112 x 112 RGB, 8 frames per clip):
#      every frame decoded and 8 kept, then data.fps = 8 (TSN sampling in training), each from
#      a cold cache; and the second run, which reads the cache;
#   2. the ResNet-18 encoder at 112 x 112 (frames/s) and a frozen-encoder training step from
#      the feature cache (`run-exp bench --video --encoder resnet18`),
# and prints each step's time projected to UCF101 split 1 (9,537 training and 3,783 test
# videos) from those rates.
#   usage: experiments/ucf101-costs.sh [videos per class, default 12]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-12}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
command -v ffmpeg >/dev/null || { echo "needs ffmpeg (apt-get install ffmpeg)"; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/UCF-101"; notes="$work/ucfTrainTestlist"
mkdir -p "$notes"
: > "$notes/trainlist01.txt"; : > "$notes/testlist01.txt"; : > "$notes/classInd.txt"
id=0
for class in Basketball Biking; do
  id=$((id + 1)); printf '%s %s\r\n' "$id" "$class" >> "$notes/classInd.txt"
  mkdir -p "$root/$class"
  for k in $(seq 1 "$n"); do
    g=$(( (k - 1) / 4 + 1 )); c=$(( (k - 1) % 4 + 1 ))
    name=$(printf 'v_%s_g%02d_c%02d.avi' "$class" "$g" "$c")
    # A moving test pattern under temporal noise: compresses like camera video.
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=320x240:rate=25:duration=7" \
      -vf "hue=h=$((k * 29 + id * 90)),noise=alls=12:allf=t" -c:v mpeg4 -q:v 5 "$root/$class/$name"
    if [ "$g" -le $(( (n + 3) / 4 - 1 )) ]; then
      printf '%s/%s %s\r\n' "$class" "$name" "$id" >> "$notes/trainlist01.txt"
    else
      printf '%s/%s\r\n' "$class" "$name" >> "$notes/testlist01.txt"
    fi
  done
done
videos=$(find "$root" -name '*.avi' | wc -l)
echo "stand-in: $videos videos, $(du -sh "$root" | cut -f1) (UCF101: 13,320 videos, 6.5 GB)"
run() {  # name, extra --set args...
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" /dev/stdin --set experiment.out_dir="$work/results" --set experiment.name="$name" "$@" \
    > "$work/$name.log" 2>&1 <<EOF
[data]
source = "videos"
protocol = "ucf101"
root = "$root"
annotations = "$notes"
frames_per_clip = 8
height = 112
width = 112
channels = 3
cache_dir = "$work/cache-$name"

[model]
frame_encoder = "cnn"
conv_channels = [8]
cell = "gru"
hidden_size = 16

[train]
epochs = 1
batch_size = 8

[log]
progress = false
histograms_every_epochs = 0
EOF
  t1=$(date +%s.%N)
  grep -E "decoded|read from the decoded cache" "$work/$name.log" | sed "s/^/$name: /"
  echo "$name: whole run $(echo "$t1 - $t0" | bc) s"
}
run every
run fps8 --set data.fps=8.0
cp -r "$work/cache-fps8" "$work/cache-again"
run again --set data.fps=8.0
rate() { grep -oE '\(([0-9.]+) clips/s' "$work/$1.log" | grep -oE '[0-9.]+' ; }
echo
echo "ResNet-18 at 112 x 112, 8 frames a clip (run-exp bench --video --encoder resnet18):"
"$bin" bench --video --encoder resnet18 > "$work/bench.log" 2>&1
grep '^{' "$work/bench.log"
python3 - "$(rate every)" "$(rate fps8)" "$work/bench.log" <<'PY'
import json, re, sys
every, fps8, bench = float(sys.argv[1]), float(sys.argv[2]), open(sys.argv[3]).read()
enc = head = None
for line in bench.splitlines():
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j.get("cell") == "lstm":
        enc = j.get("encoder_frames_per_s")
        head = j.get("cached_train_clips_per_s_batch32")
train, test = 9537, 3783
print(f"\nprojected to UCF101 split 1 ({train} + {test} videos), at these rates:")
print(f"  decode, every frame, 8 kept:  {(train + test) / every / 60:6.1f} min ({every:.1f} videos/s)")
print(f"  decode at data.fps = 8:       {(train + test) / fps8 / 60:6.1f} min ({fps8:.1f} videos/s)")
if enc:
    print(f"  ResNet-18 features, training videos (8 frames each):  {train * 8 / enc / 60:6.1f} min ({enc:.0f} frames/s)")
    print(f"  ... at data.fps = 4 (28 frames a 7 s video):           {train * 28 / enc / 60:6.1f} min")
    print(f"  ResNet-18 on the test videos, 1 clip of 8 frames:      {test * 8 / enc / 60:6.1f} min")
    print(f"  ResNet-18 on the test videos, [eval] clips = 10:       {test * 80 / enc / 60:6.1f} min")
if head:
    print(f"  an epoch of the LSTM head from the feature cache, batch 32: {train / head:6.1f} s ({head:.0f} clips/s)")
PY
