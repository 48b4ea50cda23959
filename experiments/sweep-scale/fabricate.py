#!/usr/bin/env python3
"""fabricate.py ROOT PLAN FIRST REAL: for every trial of the dry-run listing PLAN but the last
REAL (and FIRST, which ran for real), a finished trial folder copied from FIRST's: trial.json
with its id and overrides, summary.json and metrics.jsonl as FIRST's, config.toml with its
train.lr and train.weight_decay."""
import json
import re
import shutil
import sys
from pathlib import Path

root, plan, first, real = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
lines = plan.read_text().splitlines()[1:]
template = root / first
record = json.loads((template / "trial.json").read_text())
config = (template / "config.toml").read_text()
for line in lines[1 : len(lines) - real]:
    tid, *overrides = line.split()
    values = dict(o.split("=", 1) for o in overrides)
    d = root / tid
    d.mkdir(parents=True, exist_ok=True)
    for f in ["summary.json", "metrics.jsonl"]:
        shutil.copyfile(template / f, d / f)
    text = re.sub(r"(?m)^lr = .*$", f"lr = {values['train.lr']}", config)
    text = re.sub(r"(?m)^weight_decay = .*$", f"weight_decay = {values['train.weight_decay']}", text)
    (d / "config.toml").write_text(text)
    rec = dict(record, id=tid, seed=int(values["experiment.seed"]))
    rec["overrides"] = {k: json.loads(v) for k, v in values.items()}
    rec["group"] = " ".join(o for o in overrides if not o.startswith("experiment.seed="))
    (d / "trial.json").write_text(json.dumps(rec))
