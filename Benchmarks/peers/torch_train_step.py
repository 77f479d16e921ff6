#!/usr/bin/env python3
"""PyTorch peer for the training-step benchmark: the same architectures as kdtool's zoo
(ResNet option B, PyTorch default init), SGD momentum 0.9 + weight decay 5e-4, batch 128.

    torch_train_step.py resnet8|resnet20|lenet5|mlp800|mobilenetv2@1.0|mobilenetv2@0.5|shufflenetv2@1.0|shufflenetv2@0.5|efficientnet-lite0@1.0 --threads 2 --seconds 3
prints one JSON line: {"model": ..., "images_per_second": ..., "steps": ...}
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, n, cin, classes=10, base=16):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, base, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        layers, c = [], base
        for stage in range(3):
            out = base << stage
            for b in range(n):
                layers.append(Block(c, out, 2 if stage > 0 and b == 0 else 1))
                c = out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def lenet5():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def mlp800():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 800), nn.ReLU(), nn.Linear(800, 800), nn.ReLU(), nn.Linear(800, 10))


def zoo(arch, width):
    """torchvision's build of a mobile student with kdtool's CIFAR stem (tools/zoo_reference.py)."""
    import importlib.util, os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("zoo_reference", os.path.join(root, "tools", "zoo_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda: module.build(arch, 10, width, True)


MODELS = {"resnet8": (lambda: ResNet(1, 1), (1, 28, 28)), "resnet20": (lambda: ResNet(3, 3), (3, 32, 32)),
          "lenet5": (lenet5, (1, 28, 28)), "mlp800": (mlp800, (1, 28, 28))}
for _arch, _width in [("mobilenetv2", 1.0), ("mobilenetv2", 0.5), ("shufflenetv2", 1.0), ("shufflenetv2", 0.5),
                      ("efficientnet-lite0", 1.0)]:
    MODELS["%s@%s" % (_arch, _width)] = (zoo(_arch, _width), (3, 32, 32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    build, shape = MODELS[a.model]
    model = build()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(a.batch, *shape)
    y = torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"model": a.model, "images_per_second": steps * a.batch / elapsed, "steps": steps,
                      "params": sum(p.numel() for p in model.parameters()), "threads": a.threads}))


if __name__ == "__main__":
    main()
