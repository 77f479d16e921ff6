#!/usr/bin/env python3
"""Checks ONNX files that `kdtool export` wrote: onnx.checker, then ONNX Runtime on an input,
compared with kdtool's own output for the same input. Used by the export tests (venv from
tools/setup: onnx, onnxruntime, numpy).

    check_onnx.py [--rtol R] [--no-optimize] MODEL.onnx INPUT.npy EXPECTED.npy [MODEL2.onnx INPUT2.npy EXPECTED2.npy ...]

A model passes when max |ONNX Runtime − kdtool| ≤ R × max |kdtool| (R = 1e-4 by default).

Prints one JSON line per model: {"model", "max_abs_error", "scale", "ok"}; exits 1 if any fails.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(args):
    rtol = 1e-4
    options = ort.SessionOptions()
    while args[:1] in (["--rtol"], ["--no-optimize"]):
        if args[0] == "--rtol":
            rtol, args = float(args[1]), args[2:]
        else:
            # Run QuantizeLinear/DequantizeLinear as written instead of fused int8 kernels.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            args = args[1:]
    failed = False
    for i in range(0, len(args), 3):
        path, xin, expected = args[i:i + 3]
        rec = {"model": path}
        try:
            m = onnx.load(path)
            onnx.checker.check_model(m, full_check=True)
            sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            x = np.load(xin)
            y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            want = np.load(expected)
            err = float(np.abs(y - want).max())
            scale = float(max(np.abs(want).max(), 1e-6))
            rec.update({"max_abs_error": err, "scale": scale, "ok": err <= rtol * scale + 1e-6, "shape": list(y.shape)})
        except Exception as e:  # noqa: BLE001 - reported to the test
            rec.update({"ok": False, "error": str(e)[:2000]})
        failed |= not rec["ok"]
        print(json.dumps(rec), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
