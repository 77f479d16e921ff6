#!/usr/bin/env python3
"""Exports torchvision classifiers to ONNX with PyTorch's two exporters, for kdtool's import tests
and benchmarks, with ONNX Runtime's output on a fixed input beside each file.

    .build/venv-torch/bin/python3 tools/export_torchvision.py OUT_DIR [--models a,b] [--size 224]
        [--exporters torchscript,dynamo] [--opset 18] [--batch 1] [--dynamic] [--tiny]

--tiny writes narrow versions of the op-set-2 architectures (Tests/KDInteropTests/Fixtures/torchvision,
generated with `--tiny --size 32 --batch 2 --dynamic` for torchscript at opset 13 and dynamo at 18).

Writes OUT_DIR/<model>.<exporter>.onnx, <model>.<exporter>.input.npy (seeded normal input) and
<model>.<exporter>.output.npy (ONNX Runtime on the file), and OUT_DIR/manifest.json. Weights are
torchvision's seeded random initialisation (no download); batch-norm statistics are perturbed so
that folding them is tested. Needs torch (the CPU wheel), torchvision (--no-deps), onnx,
onnxscript and onnxruntime (tools/setup-peers --torchvision installs them).
"""
import argparse, json, os, sys, types, time

# torchvision's compiled ops are built for the CUDA wheel and do not load against the CPU one; the
# model definitions are pure Python and need only that its fake-kernel registrations be skipped.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

import numpy as np
import torch
import torchvision.models as M

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
          "shufflenet_v2_x1_0", "squeezenet1_1", "densenet121", "googlenet", "mnasnet1_0", "regnet_y_400mf",
          "convnext_tiny"]


def tiny(name):
    """Narrow versions of the architectures that need op set 2, from torchvision's own definitions
    (10 classes, 32×32 inputs): small enough to commit as test fixtures, exported by the same exporters."""
    from torchvision.models import efficientnet, mobilenetv3, regnet, shufflenetv2, convnext
    if name == "mobilenet_v2":
        return M.mobilenet_v2(width_mult=0.25, num_classes=10)
    if name == "mobilenet_v3_small":
        setting, last = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
        return mobilenetv3.MobileNetV3(setting, 64, num_classes=10)
    if name == "efficientnet_b0":
        setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
        return efficientnet.EfficientNet(setting, 0.2, last_channel=64, num_classes=10)
    if name == "shufflenet_v2":
        return shufflenetv2.ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 64], num_classes=10)
    if name == "regnet_y":
        params = regnet.BlockParams.from_init_params(depth=3, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
        return regnet.RegNet(params, num_classes=10)
    if name == "convnext":
        cfg = [convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)]
        return convnext.ConvNeXt(cfg, num_classes=10)
    if name == "mnasnet":
        return M.MNASNet(0.2, num_classes=10)
    raise ValueError(name)


TINY = ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2", "regnet_y", "convnext", "mnasnet"]


def build(name, seed, small=False):
    torch.manual_seed(seed)
    if small:
        m = tiny(name).eval()
        return perturb(m, seed)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return perturb(getattr(M, name)(weights=None, **kwargs).eval(), seed)


def perturb(m, seed):
    """Batch-norm statistics and affine parameters drawn away from 0/1, so folding them is tested."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 0.5 + 0.75)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--exporters", default="torchscript,dynamo")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--dynamic", action="store_true", help="a dynamic batch dimension")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-batchnorm", action="store_true",
                    help="TorchScript exporter: training=TrainingMode.PRESERVE, so BatchNorm stays (for fine-tuning)")
    ap.add_argument("--tiny", action="store_true", help="the narrow fixtures of tiny() instead (default models: all of TINY)")
    a = ap.parse_args()
    import onnxruntime as ort
    os.makedirs(a.out, exist_ok=True)
    manifest = []
    names = (TINY if a.models == ",".join(MODELS) else a.models.split(",")) if a.tiny else a.models.split(",")
    for name in names:
        m = build(name, a.seed, small=a.tiny)
        x = torch.from_numpy(np.random.default_rng(a.seed).standard_normal((a.batch, 3, a.size, a.size)).astype(np.float32))
        for exporter in a.exporters.split(","):
            stem = os.path.join(a.out, f"{name}.{exporter}")
            t0 = time.time()
            try:
                kw = dict(input_names=["input"], output_names=["logits"], opset_version=a.opset)
                if exporter == "torchscript":
                    if a.dynamic:
                        kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
                    if a.keep_batchnorm:
                        kw["training"] = torch.onnx.TrainingMode.PRESERVE
                        kw["do_constant_folding"] = False
                    torch.onnx.export(m, (x,), stem + ".onnx", dynamo=False, **kw)
                else:
                    if a.dynamic:
                        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=1024)},)
                    torch.onnx.export(m, (x,), stem + ".onnx", dynamo=True, external_data=False, **kw)
                sess = ort.InferenceSession(stem + ".onnx", providers=["CPUExecutionProvider"])
                y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
                np.save(stem + ".input.npy", x.numpy())
                np.save(stem + ".output.npy", y)
                with torch.no_grad():
                    ref = m(x).numpy()
                err = float(np.abs(ref - y).max())
                manifest.append({"model": name, "exporter": exporter, "file": os.path.basename(stem) + ".onnx",
                                 "size": a.size, "batch": a.batch, "opset": a.opset, "dynamic": a.dynamic,
                                 "torch_vs_ort": err})
                print(f"{name:22s} {exporter:11s} ok  {time.time() - t0:5.1f}s  |torch - ort| {err:.2e}", flush=True)
            except Exception as e:  # noqa: BLE001 - the manifest records the failure
                manifest.append({"model": name, "exporter": exporter, "error": f"{type(e).__name__}: {e}"[:500]})
                print(f"{name:22s} {exporter:11s} FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
