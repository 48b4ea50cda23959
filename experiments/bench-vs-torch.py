#!/usr/bin/env python3
"""rnnlab's `run-exp bench` next to PyTorch's ../shared/bench/torch_peer.py, same flags, same
machine, one process per cell and implementation (so peak RSS is per run), printing each JSON
line and a ratio table. PyTorch runs only where it is importable: PEER_PYTHON (default
~/.cache/peer/bin/python, then python3). The benchmark itself never needs it.

usage: experiments/bench-vs-torch.py [--cells lstm,gru,rnn] [--batch 64] [--seq 64] [--emb 128]
       [--hidden 256] [--vocab 20000] [--classes 2] [--steps 30] [--threads 2] [--rounds 2]
       experiments/bench-vs-torch.py --video [--cells ..] [--batch 16] [--frames 16] [--size 64]
       [--channels 3] [--conv 32,64,128,128] [--bn] [--hidden 128] [--classes 6] [--steps 10]
       [--threads 2] [--rounds 2]
--video compares `run-exp bench --video` with ../shared/bench/torch_video_peer.py (clips ->
CNN frame encoder -> cell) at that script's defaults; throughputs are clips/s.
Each (cell, implementation) runs `--rounds` times, alternating rnnlab and PyTorch; the table
gives the median of the rounds for each throughput and the largest peak RSS (the machine is
shared and noisy: a single round can be off by 10%)."""
import argparse, json, os, shutil, statistics, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
video = "--video" in sys.argv[1:]
p = argparse.ArgumentParser()
p.add_argument("--video", action="store_true")
p.add_argument("--bn", action="store_true")
if video:
    flags = [("cells", "lstm,gru,rnn"), ("batch", 16), ("frames", 16), ("size", 64), ("channels", 3),
             ("conv", "32,64,128,128"), ("hidden", 128), ("classes", 6), ("steps", 10), ("threads", 2)]
else:
    flags = [("cells", "lstm,gru,rnn"), ("batch", 64), ("seq", 64), ("emb", 128), ("hidden", 256),
             ("vocab", 20000), ("classes", 2), ("steps", 30), ("threads", 2)]
for flag, default in flags + [("rounds", 2)]:
    p.add_argument(f"--{flag}", default=default, type=type(default))
a = p.parse_args()
shape = [x for flag, _ in flags if flag != "cells" for x in (f"--{flag}", str(getattr(a, flag)))]
shape += ["--bn"] if a.bn else []
unit = "clips" if video else "samples"

exe = os.environ.get("RUN_EXP") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target"), "release", "run-exp")
if not os.path.exists(exe):
    subprocess.run(["cargo", "build", "--release", "--bin", "run-exp"], cwd=root, check=True)
peer_script = os.path.join(root, "..", "shared", "bench", "torch_video_peer.py" if video else "torch_peer.py")
peer_py = None
for cand in [os.environ.get("PEER_PYTHON"), os.path.expanduser("~/.cache/peer/bin/python"), "python3"]:
    # A candidate that is not there (no ~/.cache/peer) is skipped, not run.
    found = cand and (shutil.which(cand) or (os.path.isfile(cand) and os.access(cand, os.X_OK)))
    if found and os.path.exists(peer_script) and subprocess.run([cand, "-c", "import torch"], capture_output=True).returncode == 0:
        peer_py = cand
        break

def measure(cmd):
    import resource
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.close(r)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execvp(cmd[0], cmd)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed (status {status})")
    line = json.loads(out.strip().splitlines()[-1])
    line["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return line

rounds = {}
for cell in a.cells.split(","):
    for _ in range(a.rounds):
        runs = [("rnnlab", [exe, "bench", "--cells", cell] + (["--video"] if video else []) + shape)]
        if peer_py:
            runs.append(("torch", [peer_py, peer_script, "--cells", cell] + shape))
        for name, cmd in runs:
            line = measure(cmd)
            print(json.dumps(line), flush=True)
            rounds.setdefault((cell, name), []).append(line)

def summary(lines):
    return {k: statistics.median(l[f"{k}_{unit}_per_s"] for l in lines) for k in ("train", "infer")} | \
        {"peak_rss_mb": max(l["peak_rss_mb"] for l in lines)}

best = {key: summary(lines) for key, lines in rounds.items()}
prec = 1 if video else 0

print()
print(", ".join(shape[i][2:] + " " + shape[i + 1] for i in range(0, len(shape) - 1, 2)) + (", bn" if a.bn else "")
      + f"; median of {a.rounds} rounds; {unit}/s")
print("| cell | rnnlab train/s | torch train/s | ratio | rnnlab infer/s | torch infer/s | ratio | rnnlab RSS MiB | torch RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for cell in a.cells.split(","):
    r = best[(cell, "rnnlab")]
    t = best.get((cell, "torch"))
    if t:
        print(f"| {cell} | {r['train']:.{prec}f} | {t['train']:.{prec}f} | {r['train'] / t['train']:.2f} "
              f"| {r['infer']:.{prec}f} | {t['infer']:.{prec}f} | {r['infer'] / t['infer']:.2f} "
              f"| {r['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} |")
    else:
        print(f"| {cell} | {r['train']:.{prec}f} | - | - | {r['infer']:.{prec}f} | - | - | {r['peak_rss_mb']:.0f} | - |")
if not peer_py:
    print("(PyTorch not found: set PEER_PYTHON to a Python with torch to compare)")
