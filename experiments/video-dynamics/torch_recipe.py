#!/usr/bin/env python3
"""The PyTorch side of the dynamics comparison: digits.toml's model and training in PyTorch.
Conv2d 3x3 padding 1 -> ReLU -> MaxPool2d(2) per width (16, 32, 64), global average pool per
frame, nn.LSTM(64, batch_first) over the frames, the mean output, nn.Linear to 10 classes,
PyTorch's default initialisation (the rule rnnlab uses); cross-entropy, clip_grad_norm_(5),
Adam(2e-3), batch 32 reshuffled each epoch, 12 epochs; the best validation epoch's weights
scored on test, as rnnlab does. One JSON line per epoch and one for the run.

    python3 torch_recipe.py DATA_DIR SEED [--threads 2]
"""
import argparse, copy, json, time
import torch, torch.nn as nn
from safetensors.torch import load_file

ap = argparse.ArgumentParser()
ap.add_argument("data"); ap.add_argument("seed", type=int)
ap.add_argument("--threads", type=int, default=2); ap.add_argument("--epochs", type=int, default=12)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


def split(name):
    t = load_file(f"{a.data}/{name}.safetensors")
    return t["frames"].float() / 255, t["labels"].long()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 1
        for k in [16, 32, 64]:
            layers += [nn.Conv2d(c, k, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = k
        self.encoder = nn.Sequential(*layers)
        self.rnn = nn.LSTM(c, 64, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        b, t = x.shape[:2]
        f = self.encoder(x.flatten(0, 1)).mean((2, 3)).view(b, t, -1)
        return self.head(self.rnn(f)[0].mean(1))


(xtr, ytr), (xva, yva), (xte, yte) = split("train"), split("valid"), split("test")
net = Net()
opt = torch.optim.Adam(net.parameters(), lr=2e-3)
gen = torch.Generator().manual_seed(a.seed)


def accuracy(x, y):
    net.eval()
    with torch.no_grad():
        hits = sum((net(x[i:i + 256]).argmax(1) == y[i:i + 256]).sum().item()
                   for i in range(0, len(y), 256))
    net.train()
    return hits / len(y)


best, best_state, best_epoch, start = -1.0, None, 0, time.time()
for epoch in range(1, a.epochs + 1):
    order = torch.randperm(len(ytr), generator=gen)
    total = 0.0
    for i in range(0, len(order), 32):
        idx = order[i:i + 32]
        loss = nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        total += loss.item() * len(idx)
    val = accuracy(xva, yva)
    if val > best:
        best, best_state, best_epoch = val, copy.deepcopy(net.state_dict()), epoch
    print(json.dumps({"seed": a.seed, "epoch": epoch, "train_loss": total / len(ytr), "val_acc": val}))
net.load_state_dict(best_state)
print(json.dumps({"seed": a.seed, "best_epoch": best_epoch, "best_val_acc": best,
                  "test_acc": accuracy(xte, yte), "seconds": time.time() - start}))
