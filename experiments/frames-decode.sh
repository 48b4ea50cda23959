#!/usr/bin/env bash
# How fast the frames source reads a folder of clips: writes N clips of 16 RGB PNG frames
# (128 x 128, noisy, so they compress like camera frames) with a pure-Python PNG writer, then
# trains configs/video-frames.toml on them for one epoch at 64 x 64 twice: the first run decodes
# every frame into the cache (data.cache_dir), the second reads the cache. Prints the decode
# note of each run and the wall time of each.
#   usage: experiments/frames-decode.sh [clips per class, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
bin=${RUN_EXP:-target/release/run-exp}
[ -x "$bin" ] || cargo build --release --bin run-exp
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/frames" "$n" <<'PY'
import os, random, struct, sys, zlib
root, n = sys.argv[1], int(sys.argv[2])
def png(path, w, h, rows):
    raw = b"".join(b"\x00" + r for r in rows)
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
rng = random.Random(0)
for split, count in [("train", n), ("test", max(1, n // 4))]:
    for cls in ["a", "b"]:
        for c in range(count):
            d = f"{root}/{split}/{cls}/c{c:04d}"
            os.makedirs(d)
            base = rng.randrange(40, 200)
            for t in range(16):
                rows = [bytes(min(255, max(0, base + rng.randrange(-40, 40))) for _ in range(128 * 3))
                        for _ in range(128)]
                png(f"{d}/{t + 1:05d}.png", 128, 128, rows)
PY
du -sh "$work/frames" | cut -f1 | sed 's/^/frames on disk: /'
for pass in first second; do
  t0=$(date +%s.%N)
  "$bin" configs/video-frames.toml --set data.train="$work/frames/train" --set data.test="$work/frames/test" \
    --set data.height=64 --set data.width=64 --set data.channels=3 --set train.epochs=1 \
    --set log.progress=false --set experiment.out_dir="$work/results" --set experiment.name="$pass" 2>&1 \
    | grep -E "decoded|read from the decoded cache" | sed "s/^/$pass run: /"
  t1=$(date +%s.%N)
  python3 -c "print(f'$pass run: {float($t1) - float($t0):.1f} s wall')"
done
