#!/usr/bin/env python3
"""Starts the real TensorBoard over a sweep's folder and asks its HParams plugin, through the
HTTP API the UI uses, for the experiment and the session groups; checks one session per trial
with its hparams (every axis and the seed), its status, and the metrics val/acc, val/loss and
test/acc, grouped over seeds. usage: python tests/check_hparams.py SWEEP_DIR
(needs `pip install tensorboard`; .ci/run installs it into a throw-away virtualenv)."""
import json
import sys
import time
import urllib.request

from tensorboard import program

root = sys.argv[1]
study = json.load(open(f"{root}/sweep.json"))
trials = {t["id"]: t for t in study["trials"]}
axes = study["axes"]

tb = program.TensorBoard()
tb.configure(argv=[None, "--logdir", root, "--host", "127.0.0.1", "--port", "0",
                   "--load_fast", "false", "--reload_interval", "0"])
url = tb.launch()


def post(path, body):
    req = urllib.request.Request(url + "data/plugin/hparams/" + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))


exp = post("experiment", {"experimentName": ""})
names = [h["name"] for h in exp["hparamInfos"]]
metrics = [m["name"]["tag"] for m in exp["metricInfos"]]
problems = []
if sorted(names) != sorted(axes + ["experiment.seed"]):
    problems.append(f"experiment hparams {names}, want {axes + ['experiment.seed']}")
if sorted(metrics) != ["test/acc", "val/acc", "val/loss"]:
    problems.append(f"experiment metrics {metrics}")

def session_groups():
    return post("session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10000,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": n} for n in names] + [{"metric": {"group": "", "tag": t}} for t in metrics],
        "aggregationType": "AGGREGATION_AVG",
    })["sessionGroups"]


# TensorBoard loads the runs in the background: wait until every trial's events are in.
deadline = time.time() + 120
while True:
    groups = session_groups()
    sessions = {s["name"]: (g, s) for g in groups for s in g["sessions"]}
    done = all(t in sessions and (json.load(open(f"{root}/{t}/trial.json"))["status"] != "completed"
                                  or len(sessions[t][1]["metricValues"]) == len(metrics))
               for t in trials)
    if done or time.time() > deadline:
        break
    time.sleep(1)
for tid, t in trials.items():
    if tid not in sessions:
        problems.append(f"trial {tid} has no session")
        continue
    g, s = sessions[tid]
    rec = json.load(open(f"{root}/{tid}/trial.json"))
    # A group's hparams are its configuration's (the seed differs within it).
    want = {k: v for k, v in t["values"]}
    for k, v in want.items():
        if k not in g["hparams"] or str(g["hparams"][k]) != str(v) and g["hparams"][k] != v:
            problems.append(f"trial {tid}: hparam {k} = {g['hparams'].get(k)}, want {v}")
    got = {m["name"]["tag"]: m["value"] for m in s["metricValues"]}
    if rec["status"] == "completed":
        for tag in metrics:
            if tag not in got:
                problems.append(f"trial {tid} (completed): no {tag} in the HParams table")
        if s.get("status") != "STATUS_SUCCESS":  # noqa
            problems.append(f"trial {tid}: status {s.get('status')}, want STATUS_SUCCESS")
for g in groups:
    members = [s["name"] for s in g["sessions"]]
    configs = {json.dumps(trials[m]["values"]) for m in members if m in trials}
    seeds = sorted(trials[m]["seed"] for m in members if m in trials)
    want = sorted(t["seed"] for t in trials.values() if json.dumps(t["values"]) in configs)
    if len(configs) != 1 or seeds != want:
        problems.append(f"group {g['name']}: sessions {members} are not one configuration's seeds")
print(f"HParams: {len(names)} hparams, {len(metrics)} metrics, {len(sessions)} sessions in "
      f"{len(groups)} groups; best group {groups[0]['name'] if groups else '-'}")
if problems:
    sys.exit("\n".join(problems))
print("ok")
