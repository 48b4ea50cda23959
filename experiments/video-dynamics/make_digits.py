#!/usr/bin/env python3
"""A 10-class clip task of real handwriting: scikit-learn's bundled digits (1,797 8 x 8 scans,
nothing downloaded). A clip is 9 grey 24 x 24 frames, each one digit scaled to 16 x 16 at a
random place under a little noise; 5 frames show the clip's class (5 different writers'
samples), the other 4 random other classes, in random order: the class is the digit shown most
often, so the model must read each frame (CNN) and count over the clip (LSTM). Train and
validation clips draw from the first 1,200 scans, test clips from the other 597 (no scan in
both). Written as rnnlab `tensors` files (frames u8 [N, 9, 1, 24, 24], labels [N]) that
torch_recipe.py reads too.

    python3 make_digits.py OUT_DIR        # needs numpy, scikit-learn, safetensors
"""
import os, sys
import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits

out = sys.argv[1] if len(sys.argv) > 1 else "results/video-dynamics/data"
os.makedirs(out, exist_ok=True)
d = load_digits()
images, targets = d.images / 16.0, d.target
rng = np.random.default_rng(0)
T, S, MAJORITY = 9, 24, 5


def clips(n, pool):
    by_class = [pool[targets[pool] == c] for c in range(10)]
    frames = np.zeros((n, T, 1, S, S), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    for i, y in enumerate(labels):
        others = rng.choice([c for c in range(10) if c != y], T - MAJORITY)
        shown = [rng.choice(by_class[y], MAJORITY, replace=False)]
        shown += [rng.choice(by_class[c], 1) for c in others]
        shown = np.concatenate(shown)
        rng.shuffle(shown)
        for t, k in enumerate(shown):
            big = np.kron(images[k], np.ones((2, 2)))
            canvas = np.zeros((S, S))
            y0, x0 = rng.integers(0, S - 16 + 1, 2)
            canvas[y0:y0 + 16, x0:x0 + 16] = big
            canvas += rng.normal(0, 0.05, canvas.shape)
            frames[i, t, 0] = np.clip(canvas * 255, 0, 255).round().astype(np.uint8)
    return frames, labels.astype(np.int64)


train_pool, test_pool = np.arange(1200), np.arange(1200, len(targets))
for name, n, pool in [("train", 2000, train_pool), ("valid", 500, train_pool),
                      ("test", 1000, test_pool)]:
    f, y = clips(n, pool)
    save_file({"frames": f, "labels": y}, f"{out}/{name}.safetensors",
              metadata={"classes": "[" + ",".join(f'"{c}"' for c in range(10)) + "]"})
    print(f"{out}/{name}.safetensors: {n} clips")
