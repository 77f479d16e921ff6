#!/usr/bin/env python3
"""Exports torchvision classifiers to ONNX with PyTorch's two exporters, for kdtool's import tests
and benchmarks, with ONNX Runtime's output on a fixed input beside each file.

    .build/venv-torch/bin/python3 tools/export_torchvision.py OUT_DIR [--models a,b] [--size 224]
        [--exporters torchscript,dynamo] [--opset 17] [--batch 1] [--dynamic]

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


def build(name, seed):
    torch.manual_seed(seed)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    m = getattr(M, name)(weights=None, **kwargs).eval()
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
    a = ap.parse_args()
    import onnxruntime as ort
    os.makedirs(a.out, exist_ok=True)
    manifest = []
    for name in a.models.split(","):
        m = build(name, a.seed)
        x = torch.from_numpy(np.random.default_rng(a.seed).standard_normal((a.batch, 3, a.size, a.size)).astype(np.float32))
        for exporter in a.exporters.split(","):
            stem = os.path.join(a.out, f"{name}.{exporter}")
            t0 = time.time()
            try:
                kw = dict(input_names=["input"], output_names=["logits"], opset_version=a.opset)
                if exporter == "torchscript":
                    if a.dynamic:
                        kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
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
