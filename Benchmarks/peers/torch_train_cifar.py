#!/usr/bin/env python3
"""PyTorch peer for the mobile students of docs/results.md: torchvision's build of the same student
(tools/zoo_reference.py: CIFAR stem), trained with kdtool's `train` recipe on the same CIFAR-10
subset — SGD momentum 0.9, lr 0.05 with per-step cosine decay to 0, weight decay 5e-4, batch 128,
random crops from 4-pixel zero padding and horizontal flips, inputs normalised by the training
set's per-channel mean and std — then evaluated on the subset's test batch.

    torch_train_cifar.py DATA.tar.gz --arch mobilenetv2 --width 0.5 --epochs 15 --seed 0 --threads 2
prints one JSON line: {"eval_accuracy": ..., "seconds": ..., "images_per_second": ...}
"""
import argparse, importlib.util, io, json, math, os, tarfile, time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(path):
    train, test = [], []
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            base = os.path.basename(m.name)
            if not base.endswith(".bin"):
                continue
            raw = np.frombuffer(tf.extractfile(m).read(), dtype=np.uint8).reshape(-1, 3073)
            (test if base.startswith("test_batch") else train).append(raw)
    def split(rows):
        rows = np.concatenate(rows)
        return rows[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255, rows[:, 0].astype(np.int64)
    return split(train), split(test)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--arch", default="mobilenetv2")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    spec = importlib.util.spec_from_file_location("zoo_reference", os.path.join(ROOT, "tools", "zoo_reference.py"))
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    (xtr, ytr), (xte, yte) = load(a.data)
    mean, std = xtr.mean(axis=(0, 2, 3), keepdims=True), xtr.std(axis=(0, 2, 3), keepdims=True)
    xtr, xte = torch.from_numpy((xtr - mean) / std), torch.from_numpy((xte - mean) / std)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    model = zoo.build(a.arch, 10, a.width, True)
    decay = [p for p in model.parameters()]
    opt = torch.optim.SGD(decay, lr=a.lr, momentum=0.9, weight_decay=5e-4)
    n, batch = len(xtr), 128
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * a.epochs
    g = torch.Generator().manual_seed(a.seed)
    step, started = 0, time.time()
    for _ in range(a.epochs):
        model.train()
        order = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            padded = F.pad(xtr[idx], (4, 4, 4, 4))
            offsets = torch.randint(0, 9, (len(idx), 2), generator=g).tolist()
            x = torch.stack([padded[k, :, oy:oy + 32, ox:ox + 32] for k, (oy, ox) in enumerate(offsets)])
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            for group in opt.param_groups:
                group["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.zero_grad()
            F.cross_entropy(model(x), ytr[idx]).backward()
            opt.step()
            step += 1
    seconds = time.time() - started
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xte[i:i + 256]).argmax(1) == yte[i:i + 256]).sum()) for i in range(0, len(xte), 256))
    print(json.dumps({"eval_accuracy": correct / len(xte), "seconds": seconds, "images_per_second": n * a.epochs / seconds}))


if __name__ == "__main__":
    main()
