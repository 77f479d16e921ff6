#!/usr/bin/env python3
"""ONNX models built the way exporters emit them, with ONNX Runtime's outputs, for the import tests.

Each fixture is NAME.onnx, NAME.input.npy and NAME.output.npy (ONNX Runtime's answer) in
Tests/KDInteropTests/Fixtures/. Written once and committed, so `swift test` needs no Python:

    .build/venv-onnx/bin/python tools/gen_onnx_fixtures.py
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "KDInteropTests", "Fixtures")
R = np.random.default_rng(11)


def init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def conv_w(o, i, k):
    return (R.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)


def bn(prefix, c, x, y, nodes, inits):
    inits += [init(prefix + ".weight", (1 + 0.1 * R.standard_normal(c)).astype(np.float32)),
              init(prefix + ".bias", (0.1 * R.standard_normal(c)).astype(np.float32)),
              init(prefix + ".running_mean", (0.1 * R.standard_normal(c)).astype(np.float32)),
              init(prefix + ".running_var", (1 + 0.2 * R.random(c)).astype(np.float32))]
    nodes.append(helper.make_node("BatchNormalization", [x, prefix + ".weight", prefix + ".bias", prefix + ".running_mean",
                                                          prefix + ".running_var"], [y], name=prefix, epsilon=1e-5, momentum=0.9))


def resnet_like():
    """Conv-BN-Relu stem, a residual block joined by Sum, a strided block with a 1×1 projection,
    GlobalAveragePool and the Shape→Gather→Unsqueeze→Concat→Reshape flatten of x.view(x.size(0), -1), Gemm."""
    nodes, inits = [], []
    inits.append(init("conv1.weight", conv_w(8, 3, 3)))
    nodes.append(helper.make_node("Conv", ["input", "conv1.weight"], ["c1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
    bn("bn1", 8, "c1", "b1", nodes, inits)
    nodes.append(helper.make_node("Relu", ["b1"], ["r1"], name="relu1"))
    inits.append(init("layer1.0.conv1.weight", conv_w(8, 8, 3)))
    nodes.append(helper.make_node("Conv", ["r1", "layer1.0.conv1.weight"], ["l1c1"], name="layer1.0.conv1", pads=[1, 1, 1, 1]))
    bn("layer1.0.bn1", 8, "l1c1", "l1b1", nodes, inits)
    nodes.append(helper.make_node("Relu", ["l1b1"], ["l1r1"], name="layer1.0.relu"))
    inits.append(init("layer1.0.conv2.weight", conv_w(8, 8, 3)))
    nodes.append(helper.make_node("Conv", ["l1r1", "layer1.0.conv2.weight"], ["l1c2"], name="layer1.0.conv2", pads=[1, 1, 1, 1]))
    bn("layer1.0.bn2", 8, "l1c2", "l1b2", nodes, inits)
    nodes.append(helper.make_node("Sum", ["l1b2", "r1"], ["l1s"], name="layer1.0.sum"))
    nodes.append(helper.make_node("Relu", ["l1s"], ["l1o"], name="layer1.0.relu2"))
    inits.append(init("layer2.0.conv1.weight", conv_w(16, 8, 3)))
    nodes.append(helper.make_node("Conv", ["l1o", "layer2.0.conv1.weight"], ["l2c1"], name="layer2.0.conv1", pads=[1, 1, 1, 1], strides=[2, 2]))
    bn("layer2.0.bn1", 16, "l2c1", "l2b1", nodes, inits)
    nodes.append(helper.make_node("Relu", ["l2b1"], ["l2r1"], name="layer2.0.relu"))
    inits.append(init("layer2.0.conv2.weight", conv_w(16, 16, 3)))
    nodes.append(helper.make_node("Conv", ["l2r1", "layer2.0.conv2.weight"], ["l2c2"], name="layer2.0.conv2", pads=[1, 1, 1, 1]))
    bn("layer2.0.bn2", 16, "l2c2", "l2b2", nodes, inits)
    inits.append(init("layer2.0.downsample.0.weight", conv_w(16, 8, 1)))
    nodes.append(helper.make_node("Conv", ["l1o", "layer2.0.downsample.0.weight"], ["ds"], name="layer2.0.downsample.0", strides=[2, 2]))
    bn("layer2.0.downsample.1", 16, "ds", "dsb", nodes, inits)
    nodes.append(helper.make_node("Add", ["l2b2", "dsb"], ["l2s"], name="layer2.0.add"))
    nodes.append(helper.make_node("Relu", ["l2s"], ["l2o"], name="layer2.0.relu2"))
    nodes.append(helper.make_node("GlobalAveragePool", ["l2o"], ["gap"], name="avgpool"))
    # x.view(x.size(0), -1) as torch.onnx emits it
    nodes.append(helper.make_node("Shape", ["gap"], ["shp"], name="shape"))
    nodes.append(helper.make_node("Constant", [], ["zero"], name="c0", value=numpy_helper.from_array(np.array(0, dtype=np.int64))))
    nodes.append(helper.make_node("Gather", ["shp", "zero"], ["batch"], name="gather", axis=0))
    nodes.append(helper.make_node("Constant", [], ["ax"], name="c1", value=numpy_helper.from_array(np.array([0], dtype=np.int64))))
    nodes.append(helper.make_node("Unsqueeze", ["batch", "ax"], ["batch1"], name="unsqueeze"))
    nodes.append(helper.make_node("Constant", [], ["minus1"], name="c2", value=numpy_helper.from_array(np.array([-1], dtype=np.int64))))
    nodes.append(helper.make_node("Concat", ["batch1", "minus1"], ["newshape"], name="concat_shape", axis=0))
    nodes.append(helper.make_node("Reshape", ["gap", "newshape"], ["flat"], name="reshape"))
    inits += [init("fc.weight", (R.standard_normal((10, 16)) * 0.3).astype(np.float32)), init("fc.bias", (0.1 * R.standard_normal(10)).astype(np.float32))]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    g = helper.make_graph(nodes, "resnet_like", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="gen_onnx_fixtures"), (3, 3, 16, 16)


def inception_like():
    """Two branches (1×1 conv; 3×3 conv after max pool) joined by Concat, a Mul/Add per-channel
    scale-shift (a folded batch norm), AveragePool, Flatten, MatMul + Add, trailing Softmax; opset 11."""
    nodes, inits = [], []
    inits.append(init("b1.weight", conv_w(4, 1, 1)))
    inits.append(init("b1.bias", (0.1 * R.standard_normal(4)).astype(np.float32)))
    nodes.append(helper.make_node("Conv", ["x", "b1.weight", "b1.bias"], ["y1"], name="branch1"))
    nodes.append(helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]))
    inits.append(init("b2.weight", conv_w(6, 1, 3)))
    nodes.append(helper.make_node("Conv", ["p", "b2.weight"], ["y2"], name="branch2", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Concat", ["y1", "y2"], ["cat"], name="concat", axis=1))
    inits.append(init("scale", (1 + 0.2 * R.standard_normal((10, 1, 1))).astype(np.float32)))
    inits.append(init("shift", (0.1 * R.standard_normal((1, 10, 1, 1))).astype(np.float32)))
    nodes.append(helper.make_node("Mul", ["cat", "scale"], ["scaled"], name="mul"))
    nodes.append(helper.make_node("Add", ["scaled", "shift"], ["shifted"], name="add"))
    nodes.append(helper.make_node("Relu", ["shifted"], ["r"], name="relu"))
    nodes.append(helper.make_node("AveragePool", ["r"], ["ap"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Flatten", ["ap"], ["flat"], name="flatten", axis=1))
    inits.append(init("W", (R.standard_normal((10 * 6 * 6, 5)) * 0.05).astype(np.float32)))
    inits.append(init("B", (0.1 * R.standard_normal(5)).astype(np.float32)))
    nodes.append(helper.make_node("MatMul", ["flat", "W"], ["mm"], name="matmul"))
    nodes.append(helper.make_node("Add", ["mm", "B"], ["z"], name="bias"))
    nodes.append(helper.make_node("Dropout", ["z"], ["zd"], name="dropout", ratio=0.3))
    nodes.append(helper.make_node("Softmax", ["zd"], ["prob"], name="softmax", axis=1))
    g = helper.make_graph(nodes, "inception_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 12, 12])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)], producer_name="gen_onnx_fixtures"), (1, 1, 12, 12)


def lenet_external():
    """LeNet-style: Conv/Relu/MaxPool twice, Reshape to a constant shape, Gemm/Relu/Gemm, Identity;
    weights stored as external data next to the model (opset 17)."""
    nodes, inits = [], []
    inits += [init("conv1.weight", conv_w(4, 1, 5)), init("conv1.bias", np.zeros(4, np.float32))]
    nodes.append(helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[2, 2, 2, 2]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    nodes.append(helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]))
    inits += [init("conv2.weight", conv_w(8, 4, 5)), init("conv2.bias", (0.05 * R.standard_normal(8)).astype(np.float32))]
    nodes.append(helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2"))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"], name="relu2"))
    nodes.append(helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Constant", [], ["shape"], name="shape", value=numpy_helper.from_array(np.array([-1, 8 * 5 * 5], dtype=np.int64))))
    nodes.append(helper.make_node("Reshape", ["p2", "shape"], ["flat"], name="flatten"))
    inits += [init("fc1.weight", (R.standard_normal((32, 200)) * 0.1).astype(np.float32)), init("fc1.bias", np.zeros(32, np.float32))]
    nodes.append(helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["f1"], name="fc1", transB=1))
    nodes.append(helper.make_node("Relu", ["f1"], ["fr1"], name="relu3"))
    inits += [init("fc2.weight", (R.standard_normal((32, 10)) * 0.2).astype(np.float32))]
    nodes.append(helper.make_node("Gemm", ["fr1", "fc2.weight"], ["f2"], name="fc2", alpha=0.5))
    nodes.append(helper.make_node("Identity", ["f2"], ["out"], name="identity"))
    g = helper.make_graph(nodes, "lenet_external", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="gen_onnx_fixtures"), (2, 1, 28, 28)


def unsupported():
    """Two ops kdtool does not have (Softplus, Softsign): the import error must list both."""
    nodes = [helper.make_node("Softplus", ["x"], ["a"], name="softplus"), helper.make_node("Softsign", ["a"], ["b"], name="softsign")]
    g = helper.make_graph(nodes, "unsupported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def resnet8_state_dict():
    """A torchvision-style CIFAR ResNet-8 state_dict for 1×28×28 inputs (layerS.0.*, downsample.0/1, linear.*,
    num_batches_tracked counters), as PyTorch would save it."""
    sd = {"conv1.weight": conv_w(16, 1, 3)}

    def bn_(p, c):
        sd[p + ".weight"] = (1 + 0.1 * R.standard_normal(c)).astype(np.float32)
        sd[p + ".bias"] = (0.1 * R.standard_normal(c)).astype(np.float32)
        sd[p + ".running_mean"] = (0.1 * R.standard_normal(c)).astype(np.float32)
        sd[p + ".running_var"] = (1 + 0.2 * R.random(c)).astype(np.float32)
        sd[p + ".num_batches_tracked"] = np.array(100, dtype=np.int64)
    bn_("bn1", 16)
    cin = 16
    for s in (1, 2, 3):
        c = 16 << (s - 1)
        p = "layer%d.0" % s
        sd[p + ".conv1.weight"] = conv_w(c, cin, 3)
        bn_(p + ".bn1", c)
        sd[p + ".conv2.weight"] = conv_w(c, c, 3)
        bn_(p + ".bn2", c)
        if s > 1:
            sd[p + ".downsample.0.weight"] = conv_w(c, cin, 1)
            bn_(p + ".downsample.1", c)
        cin = c
    sd["linear.weight"] = (R.standard_normal((10, 64)) * 0.1).astype(np.float32)
    sd["linear.bias"] = (np.round(R.standard_normal(10) * 8) / 8).astype(np.float32)  # exact in float16
    return sd


def write_safetensors(path, sd, f16=()):
    """safetensors by hand (the format is an 8-byte header length, JSON, then the bytes), float16 for `f16` names."""
    header, blobs, off = {}, [], 0
    for name in sorted(sd):
        a = sd[name]
        if name in f16:
            a, dt = a.astype(np.float16), "F16"
        else:
            dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[a.dtype]
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def save(name, model, shape, external=False):
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(OUT, name + ".onnx")
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=name + ".weights",
                        size_threshold=0)
    else:
        onnx.save_model(model, path)
    x = R.standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.save(os.path.join(OUT, name + ".input.npy"), x)
    np.save(os.path.join(OUT, name + ".output.npy"), y.astype(np.float32))
    print("%s: %s -> %s" % (name, x.shape, y.shape))


def main():
    os.makedirs(OUT, exist_ok=True)
    m, s = resnet_like()
    save("resnet_like", m, s)
    m, s = inception_like()
    save("inception_like", m, s)
    m, s = lenet_external()
    save("lenet_external", m, s, external=True)
    sd = resnet8_state_dict()
    np.savez_compressed(os.path.join(OUT, "resnet8_state.npz"), **sd)
    write_safetensors(os.path.join(OUT, "resnet8_state.safetensors"), sd, f16={"linear.bias"})
    m = unsupported()
    onnx.checker.check_model(m)
    onnx.save_model(m, os.path.join(OUT, "unsupported.onnx"))
    print("onnx %s, onnxruntime %s" % (onnx.__version__, ort.__version__), file=sys.stderr)


if __name__ == "__main__":
    main()
