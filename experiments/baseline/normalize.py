#!/usr/bin/env python3
"""normalize.py RUN_DIR OUT_DIR: a run's metrics.jsonl and summary.json without what varies
from run to run of the same commit on the same machine (wall times, throughputs, the run's
folder, versions), keys sorted, so that two runs compare with diff."""
import json
import sys
from pathlib import Path

VARYING = {"run_dir", "versions", "elapsed_s", "wall_s", "time", "timestamp"}


def varies(key):
    return key in VARYING or key.endswith("_per_s") or key.endswith("_secs") or key.endswith("_ms")


def clean(v):
    if isinstance(v, dict):
        return {k: clean(x) for k, x in sorted(v.items()) if not varies(k)}
    if isinstance(v, list):
        return [clean(x) for x in v]
    return v


run, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [clean(json.loads(l)) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
(out / "metrics.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
summary = clean(json.loads((run / "summary.json").read_text()))
(out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
