#!/usr/bin/env bash
# The "nothing changed" check: runs the shipped configs (configs/lstm.toml as shipped,
# configs/video-lstm.toml for 1 epoch) and stores their metrics.jsonl and summary.json here
# with what varies from run to run removed (times, throughputs, run_dir, versions). After a
# change that must keep training bit-identical:
#   experiments/baseline/run.sh && git diff --exit-code experiments/baseline
# Bit-identical holds on one machine: the same CPU features (AVX2 / AVX-512 take different
# gemm paths) and thread count. cpu.txt records what the stored files were made on; on another
# machine, run the script on the commit before the change first and compare with that.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=experiments/baseline
cargo build --release --bin run-exp >&2
exe="${CARGO_TARGET_DIR:-target}/release/run-exp"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
run() { # name config [--set ...]
  local name=$1 cfg=$2; shift 2
  RAYON_NUM_THREADS=2 "$exe" "$cfg" --set experiment.out_dir="$tmp/$name" --set experiment.threads=2 \
    --set log.progress=false "$@" >&2
  local dir; dir="$(ls -d "$tmp/$name"/*/run-001)"
  mkdir -p "$here/$name"
  python3 "$here/normalize.py" "$dir" "$here/$name"
}
run lstm configs/lstm.toml
run video-lstm configs/video-lstm.toml --set train.epochs=1
{
  echo "threads 2"
  grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'
  for f in avx2 fma avx512f; do grep -qw "$f" /proc/cpuinfo && echo "$f yes" || echo "$f no"; done
} > "$here/cpu.txt"
echo "wrote $here/{lstm,video-lstm}/{metrics.jsonl,summary.json} and $here/cpu.txt; compare: git diff --exit-code $here" >&2
