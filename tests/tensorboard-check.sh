#!/usr/bin/env bash
# The real TensorBoard over real output, after the test suite (.ci/run calls it): installs
# tensorboard from PyPI into a throw-away virtualenv (no PyPI: this fails, it does not skip),
# trains configs/lstm.toml briefly and checks its documented tags with TensorBoard's
# EventAccumulator (tests/check_events.py), then runs experiments/cells-lr.toml briefly and
# checks the HParams plugin's experiment and sessions through TensorBoard's HTTP API
# (tests/check_hparams.py). Needs the release binary that `cargo test --release` builds.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/run-exp"
[ -x "$bin" ] || { echo "no $bin: run cargo test --release (or cargo build --release) first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! python3 -m venv "$work/venv" 2>/dev/null; then
  # Debian's python3 without ensurepip: its venv package.
  apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$work/venv"
fi
"$work/venv/bin/pip" install -q --disable-pip-version-check tensorboard
echo "tensorboard $("$work/venv/bin/python" -c 'import tensorboard; print(tensorboard.__version__)')"

"$bin" configs/lstm.toml --set experiment.out_dir="$work/results" --set train.epochs=2 \
  --set log.progress=false 2>"$work/train.log" || { cat "$work/train.log" >&2; exit 1; }
"$work/venv/bin/python" tests/check_events.py "$work/results/lstm/run-001"

"$bin" experiments/cells-lr.toml --set experiment.out_dir="$work/results" --set train.epochs=2 \
  --set data.num_train=4000 >"$work/sweep.out" 2>"$work/sweep.log" || { cat "$work/sweep.log" >&2; exit 1; }
"$work/venv/bin/python" tests/check_hparams.py "$work/results/cells-lr"
