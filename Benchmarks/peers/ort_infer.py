#!/usr/bin/env python3
"""ONNX Runtime peer for the inference benchmarks: builds an ONNX graph from a .kdb bundle
(read with tools/kdb_reader.py; conv2d, batchnorm, relu, maxpool, avgpool, globalavgpool, add,
concat, flatten, linear, dropout), checks it against kdtool's output when given, and times
inference at a fixed batch size.

    ort_infer.py MODEL.kdb --batch 64 --threads 2 --seconds 3 [--check INPUT.npy OUTPUT.npy]
prints one JSON line: {"images_per_second": ..., "max_abs_diff": ...}
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import kdb_reader  # noqa: E402


def to_onnx(b, batch):
    g = b.section("GRPH")
    inits = [numpy_helper.from_array(b.dequantized(t["name"]).astype(np.float32), t["name"]) for t in b.tensors]
    nodes = []
    for n in g["nodes"]:
        a, op, ins, out = n["attrs"], n["op"], n["inputs"], n["outputs"]
        if op == "conv2d":
            nodes.append(helper.make_node("Conv", ins, out, strides=a["stride"], pads=a["pads"], dilations=a["dilation"],
                                          group=int(a["groups"])))
        elif op == "batchnorm":
            nodes.append(helper.make_node("BatchNormalization", ins, out, epsilon=a["epsilon"], momentum=1 - a["momentum"]))
        elif op == "relu":
            nodes.append(helper.make_node("Relu", ins, out))
        elif op == "maxpool":
            nodes.append(helper.make_node("MaxPool", ins, out, kernel_shape=a["kernel"], strides=a["stride"], pads=a["pads"],
                                          dilations=a["dilation"], ceil_mode=int(a["ceil_mode"])))
        elif op == "avgpool":
            nodes.append(helper.make_node("AveragePool", ins, out, kernel_shape=a["kernel"], strides=a["stride"], pads=a["pads"],
                                          ceil_mode=int(a["ceil_mode"]), count_include_pad=int(a["count_include_pad"])))
        elif op == "globalavgpool":
            nodes.append(helper.make_node("GlobalAveragePool", ins, out))
        elif op == "add":
            nodes.append(helper.make_node("Add", ins, out))
        elif op == "concat":
            nodes.append(helper.make_node("Concat", ins, out, axis=a["axis"]))
        elif op == "flatten":
            nodes.append(helper.make_node("Flatten", ins, out, axis=a["axis"]))
        elif op == "linear":
            nodes.append(helper.make_node("Gemm", ins, out, transB=1))
        elif op == "dropout":
            nodes.append(helper.make_node("Identity", ins[:1], out))
        else:
            raise SystemExit("op %s has no ONNX mapping in this peer" % op)
    inp = g["inputs"][0]
    shape = [batch] + inp["shape"][1:]
    graph = helper.make_graph(nodes, "kdtool", [helper.make_tensor_value_info(inp["name"], TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(g["outputs"][0], TensorProto.FLOAT, [batch, None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model, inp["name"], shape


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--check", nargs=2)
    a = ap.parse_args()
    model, name, shape = to_onnx(kdb_reader.read(a.bundle), a.batch)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    doc = {}
    if a.check:
        x = np.load(a.check[0]).astype(np.float32)
        want = np.load(a.check[1])
        got = sess.run(None, {name: x})[0]
        doc["max_abs_diff"] = float(np.max(np.abs(got - want)))
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(3):
        sess.run(None, {name: x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds:
        sess.run(None, {name: x})
        n += 1
    doc["images_per_second"] = n * a.batch / (time.perf_counter() - start)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
