#!/usr/bin/env python3
"""torchvision's builds of kdtool's mobile architectures, as references for `kdtool init --arch`:
parameter counts, convolution + linear FLOPs (PyTorch's FlopCounterMode: 2 per multiply-add), and a
seeded state dict with its output on a fixed input, which `kdtool import --arch A sd.npz` must
load without a name map and reproduce.

    .build/venv-torch/bin/python3 tools/zoo_reference.py OUT_DIR [--archs a,b] [--size 32]
        [--classes 10] [--width 0.5] [--stem cifar|imagenet] [--counts-only]

Writes OUT_DIR/<arch>.npz (state dict, float32), <arch>.input.npy, <arch>.output.npy and
OUT_DIR/manifest.json ({arch: {params, flops, width, size, classes, stem}}). A CIFAR stem is
torchvision's model with the strides kdtool changes (first convolution and first stride-2 block at
stride 1; no max pool), since torchvision has none. EfficientNet-Lite0 is not in torchvision: it is
EfficientNet-B0's definition with ReLU6, no squeeze-and-excitation and stem/head fixed at 32/1280.
"""
import argparse, json, os, sys, types

sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

import numpy as np
import torch
from torch import nn
import torchvision.models as M
from torchvision.models import efficientnet, mobilenetv3, shufflenetv2

ARCHS = ["mobilenetv2", "mobilenetv3-small", "mobilenetv3-large", "shufflenetv2", "efficientnet-lite0",
         "efficientnet-b0", "resnet18"]


def first_strided(blocks, stride_of, set_stride):
    for b in blocks:
        if stride_of(b) == 2:
            set_stride(b)
            return


def build(arch, classes, width, cifar):
    if arch == "mobilenetv2":
        m = M.mobilenet_v2(width_mult=width, num_classes=classes)
        if cifar:
            m.features[0][0].stride = (1, 1)
            first_strided(m.features[1:-1], lambda b: b.stride,
                          lambda b: setattr(b.conv[-3][0], "stride", (1, 1)) or setattr(b, "stride", 1))
        return m
    if arch.startswith("mobilenetv3"):
        name = "mobilenet_v3_small" if arch.endswith("small") else "mobilenet_v3_large"
        setting, last = mobilenetv3._mobilenet_v3_conf(name, width_mult=width)
        m = mobilenetv3.MobileNetV3(setting, last, num_classes=classes)
        if cifar:
            m.features[0][0].stride = (1, 1)
            def dw(b):
                return [c for c in b.block if isinstance(c, nn.Sequential) and c[0].groups > 1][0][0]
            first_strided(m.features[1:-1], lambda b: dw(b).stride[0], lambda b: setattr(dw(b), "stride", (1, 1)))
        return m
    if arch == "shufflenetv2":
        ctor = {0.5: M.shufflenet_v2_x0_5, 1.0: M.shufflenet_v2_x1_0, 1.5: M.shufflenet_v2_x1_5, 2.0: M.shufflenet_v2_x2_0}[width]
        m = ctor(num_classes=classes)
        if cifar:
            m.conv1[0].stride = (1, 1)
            m.maxpool = nn.Identity()
        return m
    if arch.startswith("efficientnet"):
        setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=1.0)
        if arch == "efficientnet-lite0":
            m = lite0(setting, classes)
        else:
            m = efficientnet.EfficientNet(setting, 0.2, stochastic_depth_prob=0.2, last_channel=last, num_classes=classes)
        if cifar:
            m.features[0][0].stride = (1, 1)
            def dw(b):
                return [c for c in b.block if isinstance(c, nn.Sequential) and c[0].groups > 1][0][0]
            blocks = [b for stage in m.features[1:-1] for b in stage]
            first_strided(blocks, lambda b: dw(b).stride[0], lambda b: setattr(dw(b), "stride", (1, 1)))
        return m
    if arch == "resnet18":
        m = M.resnet18(num_classes=classes)
        if cifar:
            m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            m.maxpool = nn.Identity()
        return m
    raise ValueError(arch)


def lite0(setting, classes):
    """EfficientNet-B0's layers with ReLU6 for SiLU and no squeeze-and-excitation; stem 32, head 1280."""
    from torchvision.ops.misc import Conv2dNormActivation
    act = nn.ReLU6
    layers = [Conv2dNormActivation(3, 32, kernel_size=3, stride=2, norm_layer=nn.BatchNorm2d, activation_layer=act)]
    setting[0].input_channels = 32
    for cnf in setting:
        stage = []
        for i in range(cnf.num_layers):
            inp = cnf.input_channels if i == 0 else cnf.out_channels
            stride = cnf.stride if i == 0 else 1
            stage.append(LiteMBConv(inp, cnf.out_channels, cnf.expand_ratio, cnf.kernel, stride, act))
        layers.append(nn.Sequential(*stage))
    layers.append(Conv2dNormActivation(setting[-1].out_channels, 1280, kernel_size=1, norm_layer=nn.BatchNorm2d,
                                       activation_layer=act))
    m = nn.Module()
    m.features = nn.Sequential(*layers)
    m.avgpool = nn.AdaptiveAvgPool2d(1)
    m.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))
    m.forward = lambda x: m.classifier(torch.flatten(m.avgpool(m.features(x)), 1))
    return m


class LiteMBConv(nn.Module):
    def __init__(self, inp, out, expand, kernel, stride, act):
        super().__init__()
        from torchvision.ops.misc import Conv2dNormActivation
        from torchvision.models._utils import _make_divisible
        self.use_res = stride == 1 and inp == out
        hidden = _make_divisible(inp * expand, 8)
        layers = []
        if hidden != inp:
            layers.append(Conv2dNormActivation(inp, hidden, kernel_size=1, activation_layer=act))
        layers.append(Conv2dNormActivation(hidden, hidden, kernel_size=kernel, stride=stride, groups=hidden, activation_layer=act))
        layers.append(Conv2dNormActivation(hidden, out, kernel_size=1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stride = stride

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


def perturb(m, seed):
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 0.5 + 0.75)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            elif isinstance(mod, nn.Linear):
                # torchvision draws classifiers from N(0, 0.01²), which leaves logits near 0.
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) / mod.in_features ** 0.5)
    return m


def flops(m, x):
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        m(x)
    return int(counter.get_total_flops())


def check(kdtool, out, arch, width, size, classes, stem):
    """`kdtool import --arch` of the state dict, `kdtool run` on the input: the largest difference from
    torchvision's output over its largest magnitude."""
    import subprocess
    base = os.path.join(out, arch)
    subprocess.run([kdtool, "import", base + ".npz", "--arch", arch, "--width", str(width), "--stem", stem,
                    "--input", f"3x{size}x{size}", "--classes", str(classes), "-o", base + ".kdb"],
                   check=True, capture_output=True)
    subprocess.run([kdtool, "run", base + ".kdb", "--input", base + ".input.npy", "-o", base + ".kdtool.npy"],
                   check=True, capture_output=True)
    got, want = np.load(base + ".kdtool.npy"), np.load(base + ".output.npy")
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
    if err > 1e-4:
        raise SystemExit(f"{arch}: kdtool differs from torchvision by {err:.2e} of the output's scale")
    return f"kdtool error {err:.1e}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--stem", choices=["cifar", "imagenet"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--counts-only", action="store_true", help="parameters and FLOPs only, no state dicts")
    ap.add_argument("--check", metavar="KDTOOL", help="also import each state dict with this kdtool, run it and compare")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "manifest.json")
    manifest = json.load(open(path)) if os.path.exists(path) else {}
    for arch in a.archs.split(","):
        cifar = (a.stem or ("cifar" if a.size <= 64 else "imagenet")) == "cifar"
        width = a.width if arch != "resnet18" else 1.0
        torch.manual_seed(a.seed)
        m = perturb(build(arch, a.classes, width, cifar), a.seed).eval()
        x = torch.randn(2, 3, a.size, a.size, generator=torch.Generator().manual_seed(a.seed + 2))
        params = sum(p.numel() for p in m.parameters())
        entry = {"params": params, "flops": flops(m, x[:1]), "width": width, "size": a.size, "classes": a.classes,
                 "stem": "cifar" if cifar else "imagenet"}
        key = f"{arch}@{width}x{a.size}c{a.classes}"
        if not a.counts_only:
            with torch.no_grad():
                y = m(x)
            sd = {k: v.detach().numpy().astype(np.float32) for k, v in m.state_dict().items() if v.dtype.is_floating_point}
            np.savez(os.path.join(a.out, f"{arch}.npz"), **sd)
            np.save(os.path.join(a.out, f"{arch}.input.npy"), x.numpy())
            np.save(os.path.join(a.out, f"{arch}.output.npy"), y.numpy())
            key = arch
        manifest[key] = entry
        line = f"{arch:20s} width {width:<4} {a.size}×{a.size} {entry['stem']:8s} params {params:>10,}  flops {entry['flops']:>14,}"
        if a.check and not a.counts_only:
            line += "  " + check(a.check, a.out, arch, width, a.size, a.classes, entry["stem"])
        print(line, flush=True)
    json.dump(manifest, open(path, "w"), indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
