#!/usr/bin/env python3
"""Handwritten digits as 28 x 28 images for sequential / permuted "MNIST" (Le et al. 2015,
Arjovsky et al. 2016) where MNIST cannot be downloaded: scikit-learn's bundled digits (1,797
8 x 8 scans, nothing downloaded), each scaled 3x to 24 x 24 (bilinear) and centred on a
28 x 28 canvas. Written as rnnlab `tensors` files (frames u8 [N, 1, 1, 28, 28], labels [N]):
train from the first 1,200 scans, valid the next 297, test the last 300 (no scan in two).
configs/pixel-digits-lstm.toml reads them with data.image_sequence = "pixels" (784 steps) or
"rows" (28 steps).

    python3 make_pixel_digits.py [OUT_DIR]   # needs numpy, scikit-learn, safetensors
                                             # (default results/pixel-digits/data)
"""
import os, sys
import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits

out = sys.argv[1] if len(sys.argv) > 1 else "results/pixel-digits/data"
os.makedirs(out, exist_ok=True)
d = load_digits()
images, targets = d.images / 16.0, d.target


def upsample(img, factor=3):
    """Bilinear scaling of an 8 x 8 image to 8 * factor, pixel centres aligned."""
    n = img.shape[0] * factor
    pos = (np.arange(n) + 0.5) / factor - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, img.shape[0] - 1)
    hi = np.clip(lo + 1, 0, img.shape[0] - 1)
    w = np.clip(pos - lo, 0, 1)
    rows = img[lo] * (1 - w)[:, None] + img[hi] * w[:, None]
    return rows[:, lo] * (1 - w)[None, :] + rows[:, hi] * w[None, :]


def split(idx):
    frames = np.zeros((len(idx), 1, 1, 28, 28), dtype=np.uint8)
    for i, k in enumerate(idx):
        frames[i, 0, 0, 2:26, 2:26] = np.clip(upsample(images[k]) * 255, 0, 255).round()
    return frames, targets[idx].astype(np.int64)


for name, idx in [("train", np.arange(1200)), ("valid", np.arange(1200, 1497)),
                  ("test", np.arange(1497, len(targets)))]:
    f, y = split(idx)
    save_file({"frames": f, "labels": y}, f"{out}/{name}.safetensors",
              metadata={"classes": "[" + ",".join(f'"{c}"' for c in range(10)) + "]"})
    print(f"{out}/{name}.safetensors: {len(idx)} images")
