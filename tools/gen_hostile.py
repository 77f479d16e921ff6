#!/usr/bin/env python3
"""Writes the hostile-input regression corpus into Tests/KDToolTests/Hostile/.

Every field of every parser kdtool has that says how big something is, where something
is, or which axis is meant gets a lie: ONNX models (initializer dims, constant folding,
external data), safetensors and npz state dicts, .npy inputs, PNG and JPEG images, MNIST IDX
files, CSV, CIFAR tarballs, YAML configs and model bundles whose graph attributes are absurd
but correctly checksummed. Files that git cannot hold (FIFOs, symbolic links, names that are
not UTF-8) are made by the replay test from `setup` steps in manifest.json.

The replay test (Tests/KDToolTests/HostileInputTests.swift) runs each case's command under a
memory limit and a time limit and checks: no signal, an exit code from the README's table
(the case's `expect`), and for output cases that the old file is intact.

    .build/venv-onnx/bin/python tools/gen_hostile.py        # needs numpy and onnx
"""
import gzip
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(__file__))
import gen_fixtures as gf  # noqa: E402  (the independent bundle writer)

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "KDToolTests", "Hostile")
cases = []
files = {}


def case(name, args, expect=(2,), setup=(), fsize=None, keep=None, note="", seconds=60):
    """fsize: RLIMIT_FSIZE in bytes (a multiple of 1024), so writes past it fail with EFBIG.
    seconds: the time limit (work that grows quadratically with a file's size is a hang too)."""
    cases.append({"name": name, "args": list(args), "expect": list(expect), "setup": list(setup),
                  "fsize_limit": fsize, "keep": keep, "note": note, "seconds": seconds})


def put(path, data):
    files[path] = data if isinstance(data, bytes) else data.encode()


# --- ONNX ---------------------------------------------------------------------------------

def onnx_model(nodes, inits, inp=("x", [1, 1, 8, 8]), out="y", opset=17, extra_inputs=()):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(inp[0], TensorProto.FLOAT, inp[1])] + list(extra_inputs),
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def raw_tensor(name, dtype, dims, raw=b"", **kw):
    t = TensorProto()
    t.name = name
    t.data_type = dtype
    t.dims.extend(dims)
    if raw is not None:
        t.raw_data = raw
    for k, v in kw.items():
        getattr(t, k).extend(v)
    return t


def fw(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def good_onnx_nodes():
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], fw((4, 1, 3, 3)).ravel())
    fcw = helper.make_tensor("fcw", TensorProto.FLOAT, [10, 4], fw((10, 4), 1).ravel())
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fcw"], ["y"], transB=1)]
    return nodes, [w, fcw]


def onnx_cases():
    nodes, inits = good_onnx_nodes()
    put("onnx/good.onnx", onnx_model(nodes, inits))
    case("onnx-good", ["import", "onnx/good.onnx", "-o", "out/onnx-good.kdb"], expect=(0,), note="control: a valid model imports")

    def imp(name, data, expect=(2,), setup=(), note=""):
        put("onnx/%s.onnx" % name, data)
        case("onnx-" + name, ["import", "onnx/%s.onnx" % name, "-o", "out/onnx-%s.kdb" % name], expect, setup, note=note)

    huge = raw_tensor("unused", TensorProto.FLOAT, [2 ** 32, 2 ** 32])
    imp("unused-huge-dims", onnx_model(nodes, inits + [huge]), note="dims [2^32, 2^32] on an unused initializer")
    imp("dims-int64-max", onnx_model(nodes, inits + [raw_tensor("u", TensorProto.FLOAT, [2 ** 62, 4])]))
    imp("negative-dims", onnx_model(nodes, inits + [raw_tensor("u", TensorProto.FLOAT, [-1, 4])]))
    # Gemm weights with fewer values than their dims say, as DOUBLE and INT64 (typed fields, no raw data).
    for dt, field in ((TensorProto.DOUBLE, "double_data"), (TensorProto.INT64, "int64_data"),
                      (TensorProto.INT32, "int32_data"), (TensorProto.FLOAT, "float_data")):
        short = raw_tensor("fcw", dt, [10, 4], raw=None, **{field: [1] * 7})
        imp("short-%s" % field, onnx_model(nodes, inits[:1] + [short]))
    imp("raw-short", onnx_model(nodes, inits[:1] + [raw_tensor("fcw", TensorProto.FLOAT, [10, 4], b"\0" * 12)]))
    fp16 = raw_tensor("fcw", TensorProto.FLOAT16, [10, 4], raw=None, int32_data=[1, 2])
    imp("short-float16", onnx_model(nodes, inits[:1] + [fp16]))

    def folded(extra_nodes, extra_inits, use, note=""):
        # The folded constant feeds a Reshape of the flattened features.
        ns = nodes[:4] + extra_nodes + [helper.make_node("Reshape", ["f", use], ["f2"]),
                                        helper.make_node("Gemm", ["f2", "fcw"], ["y"], transB=1)]
        return onnx_model(ns, inits + extra_inits)

    i64 = lambda name, vals, dims=None: helper.make_tensor(name, TensorProto.INT64, dims if dims is not None else [len(vals)], vals)
    imp("fold-mul-overflow", folded([helper.make_node("Mul", ["a", "b"], ["s"])], [i64("a", [2 ** 62]), i64("b", [4])], "s"))
    imp("fold-add-overflow", folded([helper.make_node("Add", ["a", "b"], ["s"])], [i64("a", [2 ** 63 - 1]), i64("b", [1])], "s"))
    imp("fold-sub-overflow", folded([helper.make_node("Sub", ["a", "b"], ["s"])], [i64("a", [-2 ** 63]), i64("b", [1])], "s"))
    imp("fold-div-min", folded([helper.make_node("Div", ["a", "b"], ["s"])], [i64("a", [-2 ** 63]), i64("b", [-1])], "s"))
    imp("fold-div-zero", folded([helper.make_node("Div", ["a", "b"], ["s"])], [i64("a", [4]), i64("b", [0])], "s"))
    for nm, shape in (("negative", [-5, 3]), ("huge", [2 ** 40, 2 ** 40]), ("1g", [1 << 20, 1 << 10]),
                      ("4t", [1 << 21, 1 << 21]), ("overflow", [2 ** 62, 2 ** 62])):
        imp("constantofshape-" + nm, folded([helper.make_node("ConstantOfShape", ["shp"], ["s"])], [i64("shp", shape)], "s"))
    # A big ConstantOfShape that is not even used.
    imp("constantofshape-unused", onnx_model(nodes + [helper.make_node("ConstantOfShape", ["shp"], ["zz"])],
                                             inits + [i64("shp", [1 << 16, 1 << 16])]))
    imp("unsqueeze-axis", folded([helper.make_node("Unsqueeze", ["a", "ax"], ["s"])], [i64("a", [1, 4]), i64("ax", [100])], "s"))
    imp("unsqueeze-neg-axis", folded([helper.make_node("Unsqueeze", ["a", "ax"], ["s"])], [i64("a", [1, 4]), i64("ax", [-100])], "s"))
    imp("unsqueeze-dup-axes", folded([helper.make_node("Unsqueeze", ["a", "ax"], ["s"])], [i64("a", [1, 4]), i64("ax", [0, 0])], "s"))
    imp("squeeze-axis", folded([helper.make_node("Squeeze", ["a", "ax"], ["s"])], [i64("a", [1, 4], [2, 1]), i64("ax", [7])], "s"))
    imp("squeeze-not-one", folded([helper.make_node("Squeeze", ["a", "ax"], ["s"])], [i64("a", [1, 4], [2, 1]), i64("ax", [0])], "s"))
    imp("flatten-axis", folded([helper.make_node("Flatten", ["a"], ["s"], axis=40)], [i64("a", [1, 4])], "s"))
    imp("flatten-neg-axis", folded([helper.make_node("Flatten", ["a"], ["s"], axis=-40)], [i64("a", [1, 4])], "s"))
    imp("reshape-zero-beyond", folded([helper.make_node("Reshape", ["a", "t"], ["s"])], [i64("a", [1, 4]), i64("t", [0, 0, 0])], "s"))
    imp("reshape-two-minus-one", folded([helper.make_node("Reshape", ["a", "t"], ["s"])], [i64("a", [1, 4]), i64("t", [-1, -1])], "s"))
    imp("reshape-count-mismatch", folded([helper.make_node("Reshape", ["a", "t"], ["s"])], [i64("a", [1, 4, 5]), i64("t", [7])], "s"))
    imp("reshape-target-huge", onnx_model(nodes[:4] + [helper.make_node("Reshape", ["f", "t"], ["f2"]),
                                                      helper.make_node("Gemm", ["f2", "fcw"], ["y"], transB=1)],
                                          inits + [i64("t", [2 ** 40, 2 ** 40])]))
    imp("reshape-target-negative", onnx_model(nodes[:4] + [helper.make_node("Reshape", ["f", "t"], ["f2"]),
                                                          helper.make_node("Gemm", ["f2", "fcw"], ["y"], transB=1)],
                                              inits + [i64("t", [-7, 4])]))
    imp("gather-huge-index", folded([helper.make_node("Gather", ["a", "i"], ["s"])], [i64("a", [1, 4]), i64("i", [2 ** 62])], "s"))
    imp("gather-min-index", folded([helper.make_node("Gather", ["a", "i"], ["s"])], [i64("a", [1, 4]), i64("i", [-2 ** 63])], "s"))
    imp("slice-extreme", folded([helper.make_node("Slice", ["a", "st", "en"], ["s"])],
                                [i64("a", [1, 4]), i64("st", [-2 ** 63]), i64("en", [2 ** 63 - 1])], "s"), expect=(0, 2),
        note="ONNX clamps slice bounds: valid")
    q = helper.make_tensor("q", TensorProto.INT8, [10, 4], [1] * 40)
    empty_scale = helper.make_tensor("sc", TensorProto.FLOAT, [0], [])
    dq_nodes = [helper.make_node("DequantizeLinear", ["q", "sc"], ["fcw2"], axis=0)] + nodes[:4] + [
        helper.make_node("Gemm", ["f", "fcw2"], ["y"], transB=1)]
    imp("dequantize-empty-scale", onnx_model(dq_nodes, inits[:1] + [q, empty_scale]))
    two_scale = helper.make_tensor("sc", TensorProto.FLOAT, [3], [0.1, 0.2, 0.3])
    dq_axis = [helper.make_node("DequantizeLinear", ["q", "sc"], ["fcw2"], axis=9)] + dq_nodes[1:]
    imp("dequantize-bad-axis", onnx_model(dq_axis, inits[:1] + [q, two_scale]))
    dq_zp = [helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["fcw2"], axis=0)] + dq_nodes[1:]
    imp("dequantize-zp-mismatch", onnx_model(dq_zp, inits[:1] + [q, two_scale, helper.make_tensor("zp", TensorProto.INT8, [2], [1, 2])]))
    gemm_bias = nodes[:4] + [helper.make_node("Gemm", ["f", "fcw", "b"], ["y"], transB=1)]
    imp("gemm-bias-short", onnx_model(gemm_bias, inits + [helper.make_tensor("b", TensorProto.FLOAT, [3], [1, 2, 3])]))
    imp("gemm-bias-empty", onnx_model(gemm_bias, inits + [helper.make_tensor("b", TensorProto.FLOAT, [0], [])]))
    imp("gemm-weight-rank1", onnx_model(nodes, inits[:1] + [helper.make_tensor("fcw", TensorProto.FLOAT, [40], [0.0] * 40)]))
    imp("gemm-weight-rank3", onnx_model(nodes, inits[:1] + [helper.make_tensor("fcw", TensorProto.FLOAT, [10, 4, 1], [0.0] * 40)]))
    imp("matmul-rank0", onnx_model(nodes[:4] + [helper.make_node("MatMul", ["f", "m"], ["y"])],
                                   inits[:1] + [helper.make_tensor("m", TensorProto.FLOAT, [], [1.0])]))
    imp("add-bias-short", onnx_model(nodes[:4] + [helper.make_node("MatMul", ["f", "m"], ["mm"]),
                                                  helper.make_node("Add", ["mm", "b"], ["y"])],
                                     inits[:1] + [helper.make_tensor("m", TensorProto.FLOAT, [4, 10], [0.0] * 40),
                                                  helper.make_tensor("b", TensorProto.FLOAT, [3], [1, 2, 3])]))
    imp("transpose-fold", folded([helper.make_node("Transpose", ["a"], ["s"])], [i64("a", [1, 4], [2, 1])], "s"), expect=(0, 2))

    def conv(name, note="", expect=(2,), **attrs):
        ns = [helper.make_node("Conv", ["x", "w"], ["c"], **attrs)] + nodes[1:]
        imp(name, onnx_model(ns, inits), expect=expect, note=note)
    conv("conv-pads-huge", pads=[2 ** 40, 2 ** 40, 2 ** 40, 2 ** 40])
    conv("conv-pads-negative", pads=[-5, -5, -5, -5])
    conv("conv-stride-zero", strides=[0, 0])
    conv("conv-stride-huge", strides=[2 ** 62, 2 ** 62], expect=(0, 2), note="a 1×1 output: valid")
    conv("conv-dilation-huge", dilations=[2 ** 40, 2 ** 40])
    conv("conv-group-zero", group=0)
    conv("conv-group-huge", group=2 ** 63 - 1)
    conv("conv-group-negative", group=-1)
    conv("conv-pads-short", pads=[1])
    w_big = raw_tensor("w", TensorProto.FLOAT, [2 ** 31, 1, 3, 3])
    imp("conv-weight-huge", onnx_model(nodes, [w_big, inits[1]]))
    imp("conv-weight-zero-kernel", onnx_model(nodes, [helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 0, 0], []), inits[1]]))
    for nm, attrs in (("kernel-zero", dict(kernel_shape=[0, 0])), ("stride-zero", dict(kernel_shape=[2, 2], strides=[0, 0])),
                      ("kernel-huge", dict(kernel_shape=[2 ** 40, 2 ** 40])), ("pads-huge", dict(kernel_shape=[2, 2], pads=[2 ** 50] * 4))):
        ns = nodes[:2] + [helper.make_node("MaxPool", ["r"], ["p0"], **attrs), helper.make_node("GlobalAveragePool", ["p0"], ["p"])] + nodes[3:]
        imp("maxpool-" + nm, onnx_model(ns, inits))
    imp("input-dims-huge", onnx_model(nodes, inits, inp=("x", [1, 1, 2 ** 31, 2 ** 31])))
    imp("input-dims-overflow", onnx_model(nodes, inits, inp=("x", [1, 2 ** 40, 2 ** 40, 2 ** 40])))
    imp("input-dims-negative", onnx_model(nodes, inits, inp=("x", [1, 1, -8, 8])))
    imp("concat-axis", onnx_model(nodes[:4] + [helper.make_node("Concat", ["f", "f"], ["cc"], axis=2 ** 40),
                                               helper.make_node("Gemm", ["cc", "fcw"], ["y"], transB=1)], inits))
    imp("softmax-axis", onnx_model(nodes + [helper.make_node("Softmax", ["y"], ["y2"], axis=2 ** 40)], inits))
    imp("flatten-node-axis", onnx_model(nodes[:3] + [helper.make_node("Flatten", ["p"], ["f"], axis=2 ** 40)] + nodes[4:], inits))
    imp("flatten-node-neg-axis", onnx_model(nodes[:3] + [helper.make_node("Flatten", ["p"], ["f"], axis=-1)] + nodes[4:], inits))
    # A Reshape whose target comes from float constants (NaN, ±inf, 1e30): found by tools/fuzz-parsers onnx.
    for nm, v in (("nan", float("nan")), ("inf", float("inf")), ("1e30", 1e30)):
        imp("reshape-float-target-" + nm, onnx_model(
            nodes[:4] + [helper.make_node("Cast", ["tf"], ["t"], to=TensorProto.INT64),
                         helper.make_node("Reshape", ["f", "t"], ["f2"]), helper.make_node("Gemm", ["f2", "fcw"], ["y"], transB=1)],
            inits + [helper.make_tensor("tf", TensorProto.FLOAT, [2], [1.0, v])]))
    # Size that costs quadratic time: 5000 nodes of one name, 5000 Add-by-constant nodes (each asks
    # for a channel count). Both took 1–50 s before shape inference and naming became linear.
    n = 5000
    chain = [helper.make_node("Relu", ["x" if i == 0 else "r%d" % (i - 1)], ["r%d" % i], name="same") for i in range(n)]
    put("onnx/many-same-names.onnx", onnx_model(chain + [helper.make_node("Flatten", ["r%d" % (n - 1)], ["y"])], [], out="y"))
    case("onnx-many-same-names", ["import", "onnx/many-same-names.onnx", "-o", "out/many-names.kdb"], expect=(0, 2), seconds=10)
    adds = [helper.make_node("Add", ["x" if i == 0 else "a%d" % (i - 1), "one"], ["a%d" % i]) for i in range(n)]
    put("onnx/many-adds.onnx", onnx_model(adds + [helper.make_node("Flatten", ["a%d" % (n - 1)], ["y"])],
                                          [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])], out="y"))
    case("onnx-many-adds", ["import", "onnx/many-adds.onnx", "-o", "out/many-adds.kdb"], expect=(0, 2), seconds=10)
    imp("truncated", onnx_model(nodes, inits)[:100])
    imp("garbage", bytes(range(256)) * 4)
    imp("empty", b"")
    imp("opset-huge", onnx_model(nodes, inits, opset=2 ** 62))
    imp("node-no-output", onnx_model([helper.make_node("Relu", ["x"], [])] + nodes, inits))
    imp("node-no-input", onnx_model([helper.make_node("Relu", [], ["zz"])] + nodes, inits))
    imp("gemm-no-inputs", onnx_model(nodes[:4] + [helper.make_node("Gemm", [], ["y"])], inits))
    imp("conv-one-input", onnx_model([helper.make_node("Conv", ["x"], ["c"])] + nodes[1:], inits))
    imp("batchnorm-one-input", onnx_model(nodes[:1] + [helper.make_node("BatchNormalization", ["c"], ["c2"]),
                                                       helper.make_node("Relu", ["c2"], ["r"])] + nodes[2:], inits))
    # External data: escapes, links and special files.
    ext = lambda loc, offset=None, length=None: _external("fcw", [10, 4], loc, offset, length)
    imp("external-abs", onnx_model(nodes, inits[:1] + [ext("/etc/passwd")]))
    imp("external-dotdot", onnx_model(nodes, inits[:1] + [ext("../secret")]))
    imp("external-symlink-file", onnx_model(nodes, inits[:1] + [ext("passwd.bin")]),
        setup=[{"symlink": ["onnx/passwd.bin", "/etc/passwd"]}])
    imp("external-symlink-relative", onnx_model(nodes, inits[:1] + [ext("rel.bin")]),
        setup=[{"symlink": ["onnx/rel.bin", "../secret.bin"]}])
    imp("external-symlink-dir", onnx_model(nodes, inits[:1] + [ext("up/secret.bin")]),
        setup=[{"symlink": ["onnx/up", ".."]}])
    imp("external-fifo", onnx_model(nodes, inits[:1] + [ext("fifo.bin")]), setup=[{"fifo": "onnx/fifo.bin"}])
    imp("external-dir", onnx_model(nodes, inits[:1] + [ext("subdir")]), setup=[{"mkdir": "onnx/subdir"}])
    put("secret.bin", b"\x00" * 160)
    put("onnx/weights.bin", b"\x00" * 160)
    imp("external-offset-huge", onnx_model(nodes, inits[:1] + [ext("weights.bin", 2 ** 63 - 1, 160)]))
    imp("external-length-huge", onnx_model(nodes, inits[:1] + [ext("weights.bin", 0, 2 ** 63 - 1)]))
    imp("external-offset-negative", onnx_model(nodes, inits[:1] + [ext("weights.bin", -160, 160)]))
    imp("external-good", onnx_model(nodes, inits[:1] + [ext("weights.bin", 0, 160)]), expect=(0,),
        note="control: external data inside the folder is read")
    put("onnx/fifo-model.onnx", b"")
    case("onnx-model-is-fifo", ["import", "onnx/model-fifo.onnx", "-o", "out/fifo.kdb"], setup=[{"fifo": "onnx/model-fifo.onnx"}])
    case("onnx-model-is-dir", ["import", "onnx", "-o", "out/dir.kdb"])


def _external(name, dims, loc, offset, length):
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", loc), ("offset", offset), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key = k
            e.value = str(v)
    return t


# --- safetensors / npz / npy ---------------------------------------------------------------

def safetensors(header, data=b""):
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(h)) + h + data


def state_dict_cases():
    def st(name, data, expect=(2,)):
        put("sd/%s.safetensors" % name, data)
        case("safetensors-" + name, ["import", "sd/%s.safetensors" % name, "--arch", "mlp", "--hidden", "16", "--classes", "10",
                                      "--input", "1x8x8", "-o", "out/sd-%s.kdb" % name], expect)
    st("shape-1e12", safetensors({"w": {"dtype": "F32", "shape": [10 ** 12 - 1, 10 ** 12 - 1], "data_offsets": [0, 16]}}, b"\0" * 16))
    st("shape-overflow", safetensors({"w": {"dtype": "F32", "shape": [2 ** 62, 2 ** 62, 4], "data_offsets": [0, 0]}}))
    st("shape-float", safetensors({"w": {"dtype": "F32", "shape": [1e300], "data_offsets": [0, 4]}}, b"\0" * 4))
    st("shape-negative", safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4))
    st("offsets-huge", safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [2 ** 70, 2 ** 70 + 4]}}, b"\0" * 4))
    st("offsets-negative", safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, b"\0" * 4))
    st("offsets-reversed", safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4))
    st("header-length-huge", struct.pack("<Q", 2 ** 64 - 1) + b"{}")
    st("header-length-past-end", struct.pack("<Q", 1000) + b"{}")
    st("header-not-json", safetensors(b"{\"w\": [1, 2"))
    st("header-nested", safetensors(b"[" * 50000 + b"]" * 50000))
    st("header-nested-objects", safetensors(b"{\"a\":" * 20000 + b"1" + b"}" * 20000))
    st("header-huge-number", safetensors(b"{\"w\": {\"dtype\": \"F32\", \"shape\": [1" + b"0" * 5000 + b"], \"data_offsets\": [0, 4]}}"))
    st("dtype-unknown", safetensors({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16))
    st("overlap", safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12))
    st("truncated", b"\x10\x00")

    def npz_member(name, npy, method=0, declared=None, zip64=None):
        return (name, npy, method, declared, zip64)
    def zipfile_bytes(members, count_override=None, cd_offset_override=None):
        out = b""
        central = b""
        for name, data, method, declared, zip64 in members:
            nb = name.encode()
            payload = zlib.compress(data)[2:-4] if method == 8 else data
            size = declared if declared is not None else len(data)
            crc = zlib.crc32(data)
            extra = b""
            csize, usize, off = len(payload), size, len(out)
            if zip64:
                extra = struct.pack("<HHQQQ", 1, 24, size, len(payload), len(out))
                csize = usize = off = 0xFFFFFFFF
            local = struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, 0, method, 0, 0x21, crc,
                                min(len(payload), 0xFFFFFFFF), min(size, 0xFFFFFFFF), len(nb), 0) + nb
            cent = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 20, 20, 0, method, 0, 0x21, crc, csize, usize, len(nb),
                               len(extra), 0, 0, 0, 0, off) + nb + extra
            out += local + payload
            central += cent
        cd = len(out)
        n = count_override if count_override is not None else len(members)
        eocd = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF), len(central),
                           cd_offset_override if cd_offset_override is not None else cd, 0)
        return out + central + eocd

    npy_ok = npy_bytes("<f4", "(2,)", b"\0" * 8)
    def nz(name, data):
        put("sd/%s.npz" % name, data)
        case("npz-" + name, ["import", "sd/%s.npz" % name, "--arch", "mlp", "--hidden", "16", "--classes", "10",
                              "--input", "1x8x8", "-o", "out/npz-%s.kdb" % name])
    nz("zip64-4gib", zipfile_bytes([npz_member("w.npy", npy_ok, 8, declared=4 << 30, zip64=True)]))
    nz("declared-4gib-stored", zipfile_bytes([npz_member("w.npy", npy_ok, 0, declared=0xFFFFFFF0)]))
    nz("deflate-bomb", zipfile_bytes([npz_member("w.npy", npy_bytes("<f4", "(%d,)" % (16 << 20), b"\0" * (64 << 20)), 8)]))
    nz("count-huge", zipfile_bytes([npz_member("w.npy", npy_ok)], count_override=0xFFFF))
    nz("cd-offset-past-end", zipfile_bytes([npz_member("w.npy", npy_ok)], cd_offset_override=0x7FFFFFFF))
    nz("member-npy-huge-shape", zipfile_bytes([npz_member("w.npy", npy_bytes("<f4", "(4611686018427387904,)", b""))]))
    nz("not-zip", b"PK\x03\x04" + b"\xff" * 40)

    # .npy inputs to `kdtool run`.
    def npy(name, data, expect=(2,)):
        put("npy/%s.npy" % name, data)
        case("npy-" + name, ["run", "model.kdb", "--input", "npy/%s.npy" % name, "-o", "out/npy-%s.npy" % name], expect)
    npy("good", npy_bytes("<f4", "(1, 1, 8, 8)", b"\0" * 256), expect=(0,))
    npy("shape-2e62", npy_bytes("<f4", "(4611686018427387904,)", b""))
    npy("shape-overflow", npy_bytes("<f4", "(4611686018427387904, 4611686018427387904)", b""))
    npy("shape-2e31-square", npy_bytes("<f4", "(2147483648, 2147483648)", b""))
    npy("shape-negative", npy_bytes("<f4", "(-1, 64)", b"\0" * 256))
    npy("shape-huge-digits", npy_bytes("<f4", "(1" + "0" * 400 + ",)", b""))
    npy("shape-wrong-for-model", npy_bytes("<f4", "(1, 3, 8, 8)", b"\0" * 768))
    npy("shape-batch-zero", npy_bytes("<f4", "(0, 1, 8, 8)", b""), expect=(0, 2))
    npy("header-len-past-end", b"\x93NUMPY\x01\x00\xff\xff{}")
    npy("v2-header-huge", b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{}")
    npy("truncated-data", npy_bytes("<f4", "(1, 1, 8, 8)", b"\0" * 10))
    npy("dtype-object", npy_bytes("|O", "(1, 1, 8, 8)", b"\0" * 512))
    npy("fortran", npy_bytes("<f4", "(1, 1, 8, 8)", b"\0" * 256, fortran=True))
    npy("rank-huge", npy_bytes("<f4", "(" + "1, " * 5000 + ")", b"\0" * 4))
    case("npy-input-fifo", ["run", "model.kdb", "--input", "npy/fifo.npy", "-o", "out/fifo.npy"], setup=[{"fifo": "npy/fifo.npy"}])


def npy_bytes(descr, shape, data, fortran=False):
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", shape)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    if len(header) < 65536:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + data


# --- images --------------------------------------------------------------------------------

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(w, h):
    """A PNG signature and IHDR claiming w × h, then IEND: no pixel data at all."""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + png_chunk(b"IEND", b"")


def png(w, h, raw=None, color=0):
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    if raw is None:
        raw = b"".join(b"\0" + bytes([x * 16 % 256 for x in range(w)]) for _ in range(h))
    return sig + ihdr + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def jpeg_header(w, h, progressive=True):
    """A JPEG that ends after its frame header: SOI, DQT, SOF2/SOF0 with the given size, DHT, SOS, EOI-less."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = (b"\xff\xc2" if progressive else b"\xff\xc0") + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    dht = b"\xff\xc4" + struct.pack(">H", 20) + b"\x00" + bytes([1] + [0] * 15) + b"\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + (b"\x00\x00\x00" if progressive else b"\x00\x3f\x00")
    return b"\xff\xd8" + dqt + sof + dht + sos + b"\x00" * 16


def jpeg_many_scans(scans):
    """An 8×8 grey progressive JPEG whose AC band is coded `scans` times (each scan a pass over the image)."""
    seg = lambda marker, body: b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body
    out = b"\xff\xd8" + seg(0xDB, b"\x00" + bytes([1] * 64))
    out += seg(0xC2, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
    out += seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00") + seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    out += seg(0xDA, b"\x01\x01\x00\x00\x00\x00") + b"\x7f"
    out += (seg(0xDA, b"\x01\x01\x00\x01\x3f\x00") + b"\x7f") * scans
    return out + b"\xff\xd9"


def image_cases(real_jpeg):
    put("img/good/ok.png", png(8, 8))
    put("img/good/ok.jpg", real_jpeg)
    case("infer-good", ["infer", "model.kdb", "img/good", "--quiet"], expect=(0,), note="control")

    def one(name, data, expect=(3,), setup=(), fname=None):
        d = "img/%s" % name
        put("%s/ok.png" % d, png(8, 8))
        if data is not None:
            put("%s/%s" % (d, fname or "bad.png"), data)
        case("infer-" + name, ["infer", "model.kdb", d, "--quiet"], expect, setup)
    one("png-ihdr-max", png_header(0xFFFFFFFF, 0xFFFFFFFF))
    one("png-ihdr-2e31", png_header(0x7FFFFFFF, 0x7FFFFFFF))
    one("png-ihdr-zero", png_header(0, 0))
    one("png-ihdr-wide", png_header(1 << 24, 1))
    one("png-truncated", png(64, 64)[:60])
    one("png-bad-crc", png(8, 8)[:30] + b"\x00\x00\x00\x00" + png(8, 8)[34:])
    one("png-short-idat", png(64, 64, raw=b"\0" * 10))
    one("png-only-signature", b"\x89PNG\r\n\x1a\n")
    one("jpeg-progressive-10000", jpeg_header(10000, 10000), fname="bad.jpg")
    one("jpeg-baseline-65535", jpeg_header(65535, 65535, progressive=False), fname="bad.jpg")
    one("jpeg-zero-size", jpeg_header(0, 0), fname="bad.jpg")
    one("jpeg-truncated-60", real_jpeg[: len(real_jpeg) * 60 // 100], fname="bad.jpg")
    one("jpeg-truncated-95", real_jpeg[: len(real_jpeg) * 95 // 100], fname="bad.jpg")
    one("jpeg-soi-only", b"\xff\xd8\xff", fname="bad.jpg")
    one("jpeg-600-scans", jpeg_many_scans(600), fname="bad.jpg")
    one("jpeg-400-scans", jpeg_many_scans(400), fname="fine.jpg", expect=(0,))
    one("gif", b"GIF89a" + b"\0" * 20, fname="bad.gif")
    one("empty-file", b"")
    one("text-as-png", b"hello, world\n")
    one("fifo", None, setup=[{"fifo": "img/fifo/bad.png"}])
    one("socketlike-dir", None, setup=[{"mkdir": "img/socketlike-dir/dir.png"}], expect=(0, 3))
    one("dangling-link", None, setup=[{"symlink": ["img/dangling-link/bad.png", "does-not-exist.png"]}])
    one("link-loop", None, setup=[{"symlink": ["img/link-loop/loop", "."]}], expect=(0, 3))
    one("devnull-link", None, setup=[{"symlink": ["img/devnull-link/bad.png", "/dev/zero"]}])
    # Names: CR/LF and comma (quoted in the CSV), and bytes that are not UTF-8 (opened as they are).
    one("name-crlf", None, expect=(0,), setup=[{"copy_name_hex": ["img/name-crlf/", (b"cr\r\nlf,\".png").hex(), "img/good/ok.png"]}])
    one("name-not-utf8", None, expect=(0,), setup=[{"copy_name_hex": ["img/name-not-utf8/", (b"caf\xe9\xff.png").hex(), "img/good/ok.png"]}])
    case("infer-csv-crlf-quoted", ["infer", "model.kdb", "img/name-crlf", "--quiet", "-o", "out/crlf.csv"], expect=(0,),
         setup=[{"copy_name_hex": ["img/name-crlf/", (b"cr\r\nlf,\".png").hex(), "img/good/ok.png"]}],
         keep={"csv_rows": "out/crlf.csv", "rows": 2})
    case("infer-jsonl-not-utf8", ["infer", "model.kdb", "img/name-not-utf8", "--quiet", "--format", "jsonl", "-o", "out/n.jsonl"],
         expect=(0,), setup=[{"copy_name_hex": ["img/name-not-utf8/", (b"caf\xe9\xff.png").hex(), "img/good/ok.png"]}],
         keep={"jsonl_b64": "out/n.jsonl"})
    # `eval`/`train` on an image folder with one bad image: a clear error (exit 2), no crash.
    put("imgcls/0/a.png", png(8, 8))
    put("imgcls/1/b.png", png_header(0x7FFFFFFF, 0x7FFFFFFF))
    case("eval-folder-bad-image", ["eval", "model.kdb", "--data", "imgcls", "--split", "all"])
    case("distill-nolabels-fifo", ["distill", "model.kdb", "model.kdb", "--data", "img/fifo", "--no-labels", "--epochs", "1",
                                   "-o", "out/nl.kdb", "--quiet"], expect=(0, 2, 3), setup=[{"fifo": "img/fifo/bad.png"}])


# --- IDX, CSV, CIFAR ---------------------------------------------------------------------

def data_cases():
    def idx_images(n, h, w, data):
        return struct.pack(">IIII", 0x803, n, h, w) + data
    def idx_labels(n, data):
        return struct.pack(">II", 0x801, n) + data

    def mnist(name, img, lbl, expect=(2,), gz=False):
        d = "mnist/%s" % name
        wrap = (lambda b: gzip.compress(b, mtime=0)) if gz else (lambda b: b)
        sfx = ".gz" if gz else ""
        put("%s/t10k-images-idx3-ubyte%s" % (d, sfx), wrap(img))
        put("%s/t10k-labels-idx1-ubyte%s" % (d, sfx), wrap(lbl))
        case("eval-mnist-" + name, ["eval", "model8.kdb", "--data", d, "--split", "all"], expect)
    mnist("ok", idx_images(4, 8, 8, b"\0" * 256), idx_labels(4, b"\x01\x02\x03\x04"), expect=(0,))
    mnist("dims-max", idx_images(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, b"\0" * 64), idx_labels(1, b"\x01"))
    mnist("rows-max", idx_images(1, 0xFFFFFFFF, 0xFFFFFFFF, b"\0" * 64), idx_labels(1, b"\x01"))
    mnist("count-max", idx_images(0xFFFFFFFF, 8, 8, b"\0" * 64), idx_labels(1, b"\x01"))
    mnist("zero-size", idx_images(1, 0, 0, b""), idx_labels(1, b"\x01"))
    mnist("labels-count-max", idx_images(1, 8, 8, b"\0" * 64), idx_labels(0xFFFFFFFF, b"\x01"))
    mnist("label-255", idx_images(2, 8, 8, b"\0" * 128), idx_labels(2, b"\x01\xff"))
    mnist("truncated-header", b"\x00\x00\x08", idx_labels(1, b"\x01"))
    mnist("gzip-bomb", idx_images(1, 8, 8, b"\0" * 64 + b"\0" * (300 << 20)), idx_labels(1, b"\x01"), gz=True)
    mnist("gzip-corrupt", gzip.compress(idx_images(1, 8, 8, b"\0" * 64))[:30] + b"\xff" * 20, idx_labels(1, b"\x01"))

    def csv(name, text, expect=(2,)):
        put("csv/%s.csv" % name, text)
        case("eval-csv-" + name, ["eval", "model8.kdb", "--data", "csv/%s.csv" % name, "--split", "all"], expect)
    csv("ok", "".join(",".join(["0"] * 64 + [str(i % 10)]) + "\n" for i in range(8)), expect=(0,))
    for nm, doc in (("class-1e300", {"verticals": [{"name": "a", "classes": [1e300]}]}),
                    ("class-negative", {"verticals": [{"name": "a", "classes": [-1]}]}),
                    ("class-fraction", {"verticals": [{"name": "a", "classes": [0.5]}]}),
                    ("not-json", None)):
        put("csv/verticals-%s.json" % nm, json.dumps(doc) if doc else "{\"verticals\": [")
        case("eval-verticals-" + nm, ["eval", "model8.kdb", "--data", "csv/ok.csv", "--split", "all", "--verticals",
                                       "csv/verticals-%s.json" % nm], expect=(1, 2))
    csv("label-255", "".join(",".join(["0"] * 64 + ["255"]) + "\n" for _ in range(4)), expect=(0, 1, 2))
    csv("ragged", "1,2,3\n1,2\n")
    csv("not-square", "".join(",".join(["0"] * 63 + ["1"]) + "\n" for _ in range(4)))
    csv("huge-field", "1" * 100000 + ",1\n")
    csv("nan", "nan," * 64 + "1\n")
    csv("one-column", "1\n2\n")
    csv("empty", "")
    csv("long-line", ",".join(["0"] * 100_000) + "\n")

    def tar_member(name, data, declared=None):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mtime = 0
        hdr = ti.tobuf(format=tarfile.GNU_FORMAT)
        if declared is not None:
            # Rewrite the size field (octal, 12 bytes at 124) and the header checksum.
            ti.size = declared
            hdr = ti.tobuf(format=tarfile.GNU_FORMAT)
        pad = (512 - len(data) % 512) % 512
        return hdr + data + b"\0" * pad

    def cifar(name, members, expect=(2,), gz=True):
        body = b"".join(members) + b"\0" * 1024
        put("cifar/%s.tar.gz" % name, gzip.compress(body, mtime=0) if gz else body)
        case("eval-cifar-" + name, ["eval", "model32.kdb", "--data", "cifar/%s.tar.gz" % name, "--split", "all"], expect)
    rec = bytes([3]) + bytes(3072)
    cifar("ok", [tar_member("cifar-10-batches-bin/test_batch.bin", rec * 2)], expect=(0,))
    cifar("declared-3gib", [tar_member("cifar-10-batches-bin/data_batch_1.bin", rec, declared=3 << 30)])
    cifar("declared-1tib", [tar_member("cifar-10-batches-bin/data_batch_1.bin", rec, declared=1 << 40)])
    cifar("label-255", [tar_member("cifar-10-batches-bin/test_batch.bin", bytes([255]) + bytes(3072))], expect=(1, 2))
    cifar("not-multiple", [tar_member("cifar-10-batches-bin/test_batch.bin", rec + b"\0")])
    cifar("meta-huge", [tar_member("cifar-10-batches-bin/batches.meta.txt", b"x\n" * (8 << 20)),
                        tar_member("cifar-10-batches-bin/test_batch.bin", rec)], expect=(0, 2))
    cifar("garbage", [b"\xff" * 3000], gz=True)


# --- YAML configs ---------------------------------------------------------------------------

def config_cases():
    def cfg(name, text, expect=(2, 64)):
        put("cfg/%s.yaml" % name, text)
        case("config-" + name, ["train", "model8.kdb", "--config", "cfg/%s.yaml" % name, "--data", "csv/ok.csv", "--epochs", "1",
                                "-o", "out/cfg-%s.kdb" % name, "--quiet"], expect)
    lol = ["a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"]
    prev = "a"
    for i, k in enumerate("bcdefghi"):
        lol.append("%s: &%s [%s]" % (k, k, ",".join(["*" + prev] * 9)))
        prev = k
    cfg("billion-laughs", "\n".join(lol) + "\n")
    cfg("sweep-1e9", "sweep:\n" + "".join("  %s: [%s]\n" % (k, ",".join(str(v) for v in range(1000)))
                                          for k in ("seed", "lr", "batch")))
    case("config-value-20mb", ["train", "model8.kdb", "--config", "cfg/big.yaml", "--data", "csv/ok.csv", "--epochs", "1",
                               "-o", "out/cfg-big.kdb", "--quiet"], expect=(2, 64),
         setup=[{"repeat": ["cfg/big.yaml", "note: \"", "x" * 1024, 20 * 1024, "\"\n"]}])
    case("config-value-600kb", ["train", "model8.kdb", "--config", "cfg/600k.yaml", "--data", "csv/ok.csv", "--epochs", "1",
                                "-o", "out/cfg-600k.kdb", "--quiet"], expect=(2, 64),
         setup=[{"repeat": ["cfg/600k.yaml", "tag: \"", "x" * 1024, 600, "\"\n"]}])
    cfg("deep", "a: " + "[" * 20000 + "]" * 20000 + "\n")
    cfg("not-a-map", "- 1\n- 2\n")
    # Keys that are not scalars: Yams force-unwraps them into strings (found by tools/fuzz-parsers config).
    cfg("sequence-key", "\n?\r- z")
    cfg("mapping-key", "? {a: 1}\n: 2\n")
    cfg("set-of-lists", "!!set {? [1, 2]}\n")
    cfg("merge-of-scalar", "a: &x 1\nb:\n  <<: *x\n")
    cfg("binary", "\x00\xff\xfe garbage")
    cfg("unknown-keys", "epochz: 3\nlearning_rate: 1\n")
    cfg("epochs-huge", "epochs: 99999999999999999999999\n")
    cfg("threads-huge", "threads: 4294967296\n", expect=(0, 2, 64))
    case("config-fifo", ["train", "model8.kdb", "--config", "cfg/fifo.yaml", "--data", "csv/ok.csv", "-o", "out/f.kdb"],
         expect=(2, 64), setup=[{"fifo": "cfg/fifo.yaml"}])


# --- bundles ---------------------------------------------------------------------------------

def bundle_cases():
    def mlp_graph(mutate):
        r = np.random.default_rng(0)
        tensors = [gf.Tensor("fc.weight", "f32", r.standard_normal((10, 64)).astype(np.float32)),
                   gf.Tensor("fc.bias", "f32", np.zeros(10, np.float32)),
                   gf.Tensor("conv.weight", "f32", r.standard_normal((4, 1, 3, 3)).astype(np.float32))]
        pool = {"ceil_mode": False, "dilation": gf.I64s([1, 1]), "kernel": gf.I64s([2, 2]), "pads": gf.I64s([0, 0, 0, 0]),
                "stride": gf.I64s([2, 2])}
        nodes = [gf.conv_node("conv", "x", "conv.weight", None, "c", pads=(1, 1, 1, 1)),
                 gf.node("pool", "maxpool", ["c"], "p", pool),
                 gf.node("flat", "flatten", ["p"], "f", {"axis": gf.I(1)}),
                 gf.node("fc", "linear", ["f", "fc.weight", "fc.bias"], "logits")]
        graph = {"inputs": [{"name": "x", "shape": gf.I64s([-1, 1, 8, 8])}], "nodes": nodes, "opset": gf.U(1),
                 "output_kind": "softmax", "outputs": ["logits"]}
        mutate(graph, nodes, pool)
        return gf.Layout(tensors, {"GRPH": graph, "LABL": {"classes": [str(i) for i in range(10)]}}).assemble()

    def b(name, mutate, expect=(2,)):
        put("kdb/%s.kdb" % name, mlp_graph(mutate))
        case("verify-" + name, ["inspect", "kdb/%s.kdb" % name, "--verify"], expect)
        case("run-" + name, ["run", "kdb/%s.kdb" % name, "--input", "npy/good.npy", "-o", "out/b-%s.npy" % name], expect)
        case("infer-" + name, ["infer", "kdb/%s.kdb" % name, "img/good", "--quiet"], expect)

    def setattr_(node, key, value):
        return lambda g, n, p: n[node]["attrs"].__setitem__(key, value)
    b("good", lambda g, n, p: None, expect=(0,))
    b("conv-pads-2e40", setattr_(0, "pads", gf.I64s([2 ** 40] * 4)))
    b("conv-pads-2e62", setattr_(0, "pads", gf.I64s([2 ** 62] * 4)))
    b("conv-stride-2e62", setattr_(0, "stride", gf.I64s([2 ** 62] * 2)))
    b("conv-dilation-2e40", setattr_(0, "dilation", gf.I64s([2 ** 40] * 2)))
    b("conv-groups-2e63", setattr_(0, "groups", gf.U(2 ** 63)))
    b("conv-groups-3", setattr_(0, "groups", gf.U(3)))
    b("pool-kernel-2e40", lambda g, n, p: p.__setitem__("kernel", gf.I64s([2 ** 40] * 2)))
    b("pool-stride-zero", lambda g, n, p: p.__setitem__("stride", gf.I64s([0, 0])))
    b("pool-pads-huge", lambda g, n, p: p.__setitem__("pads", gf.I64s([2 ** 50] * 4)))
    b("flatten-axis-2e40", setattr_(2, "axis", gf.I(2 ** 40)))
    b("flatten-axis-minus1", setattr_(2, "axis", gf.I(-1)))
    b("flatten-axis-min", setattr_(2, "axis", gf.I(-2 ** 63)))
    b("input-2e31", lambda g, n, p: g["inputs"][0].__setitem__("shape", gf.I64s([-1, 1, 2 ** 31, 2 ** 31])))
    b("input-2e20-square", lambda g, n, p: g["inputs"][0].__setitem__("shape", gf.I64s([-1, 1, 2 ** 20, 2 ** 20])))
    b("input-huge-channels", lambda g, n, p: g["inputs"][0].__setitem__("shape", gf.I64s([-1, 2 ** 40, 8, 8])))
    b("input-negative", lambda g, n, p: g["inputs"][0].__setitem__("shape", gf.I64s([-1, 1, -8, 8])))
    b("input-rank1", lambda g, n, p: g["inputs"][0].__setitem__("shape", gf.I64s([-1])))
    b("reshape-two-minus-one", lambda g, n, p: n.__setitem__(2, gf.node("flat", "reshape", ["p"], "f", {"shape": gf.I64s([-1, -1])})))
    b("reshape-huge", lambda g, n, p: n.__setitem__(2, gf.node("flat", "reshape", ["p"], "f", {"shape": gf.I64s([2 ** 62, 2 ** 62])})))
    b("split-linear-huge", lambda g, n, p: n.__setitem__(3, gf.node("fc", "split_linear", ["f", "fc.weight", "fc.bias"], "logits",
                                                                     {"in_splits": gf.I64s([2 ** 62, 2 ** 62]), "shared": gf.U(2 ** 63)})))
    b("l2norm-groups-huge", lambda g, n, p: n.append(gf.node("l2", "l2norm_scale", ["logits", "fc.bias"], "l2",
                                                               {"groups": gf.I64s([2 ** 62, 2 ** 62]), "epsilon": 1e-6})) or
      g.__setitem__("outputs", ["l2"]))
    # A recorded command line is data too: `rerun` must write only where it is told.
    prov = {"data": {"source": "csv/ok.csv", "split": "train"}, "method": "train", "metrics": {}, "parents": [], "seed": gf.I(0),
            "tool": "kdtool 0.1.0",
            "hyperparameters": {"argv": ["train", "model8.kdb", "--data", "csv/ok.csv", "--epochs", "1", "--quiet",
                                         "--output=out/evil.kdb", "-oout/evil2.kdb", "--teacher-cache-dir", "out/evil-cache"]}}
    r = np.random.default_rng(2)
    put("kdb/rerun-evil-output.kdb", gf.Layout(
        [gf.Tensor("fc.weight", "f32", r.standard_normal((10, 64)).astype(np.float32)), gf.Tensor("fc.bias", "f32", np.zeros(10, np.float32))],
        {"GRPH": {"inputs": [{"name": "x", "shape": gf.I64s([-1, 1, 8, 8])}],
                  "nodes": [gf.node("flat", "flatten", ["x"], "f", {"axis": gf.I(1)}), gf.node("fc", "linear", ["f", "fc.weight", "fc.bias"], "logits")],
                  "opset": gf.U(1), "output_kind": "softmax", "outputs": ["logits"]},
         "LABL": {"classes": [str(i) for i in range(10)]}, "PROV": prov}).assemble())
    case("rerun-writes-only-its-target", ["rerun", "kdb/rerun-evil-output.kdb", "-o", "out/rerun.kdb"], expect=(0, 1),
         keep={"absent": ["out/evil.kdb", "out/evil2.kdb", "out/evil-cache"]})
    # Valid but large: 48 M values an image pass the proof; a batch of 64 of them does not fit, and says so.
    r = np.random.default_rng(1)
    put("kdb/input-48m.kdb", gf.Layout(
        [gf.Tensor("conv3.weight", "f32", r.standard_normal((1, 3, 3, 3)).astype(np.float32))],
        {"GRPH": {"inputs": [{"name": "x", "shape": gf.I64s([-1, 3, 4000, 4000])}],
                  "nodes": [gf.conv_node("conv", "x", "conv3.weight", None, "c", pads=(1, 1, 1, 1)),
                            gf.node("gap", "globalavgpool", ["c"], "g"), gf.node("flat", "flatten", ["g"], "logits", {"axis": gf.I(1)})],
                  "opset": gf.U(1), "output_kind": "softmax", "outputs": ["logits"]}}).assemble())
    case("verify-input-48m", ["inspect", "kdb/input-48m.kdb", "--verify"], expect=(0,))
    case("infer-input-48m-batch-64", ["infer", "kdb/input-48m.kdb", "img/good", "--quiet"], expect=(1,))


def main():
    # A real photo (../shared/data/images/china.jpg), scaled down and re-encoded by libjpeg through Pillow.
    from PIL import Image
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "images",
                                                               "china.jpg")
    buf = io.BytesIO()
    Image.open(src).convert("RGB").resize((96, 64)).save(buf, "JPEG", quality=90)
    real_jpeg = buf.getvalue()
    onnx_cases()
    state_dict_cases()
    image_cases(real_jpeg)
    data_cases()
    config_cases()
    bundle_cases()
    # Output loss: a write that fails part-way (RLIMIT_FSIZE) must exit 5 and leave the old file.
    case("infer-output-efbig", ["infer", "model.kdb", "img/many", "--quiet", "--top-k", "10", "-o", "out/keep.csv"], expect=(5,),
         setup=[{"write": ["out/keep.csv", "old,content\n" * 40]}] + [{"copy": ["img/good/ok.png", "img/many/%02d.png" % i]} for i in range(24)],
         fsize=1024,
         keep={"unchanged": "out/keep.csv"})
    case("infer-output-missing-dir", ["infer", "model.kdb", "img/good", "--quiet", "-o", "out/no/such/dir/p.csv"], expect=(5,))
    case("run-output-missing-dir", ["run", "model.kdb", "--input", "npy/good.npy", "-o", "out/no/such/x.npy"], expect=(5,))
    case("train-output-missing-dir", ["train", "model8.kdb", "--data", "csv/ok.csv", "--epochs", "1", "-o", "out/no/dir/m.kdb",
                                      "--quiet"], expect=(5,))
    case("export-output-missing-dir", ["export", "model.kdb", "-o", "out/no/dir/m.onnx"], expect=(5,))
    case("bundle-output-efbig", ["import", "onnx/good.onnx", "-o", "out/keep.kdb"], expect=(5,),
         setup=[{"write": ["out/keep.kdb", "previous bundle\n"]}], fsize=1024, keep={"unchanged": "out/keep.kdb"})
    case("model-is-fifo", ["inspect", "kdb/fifo.kdb"], setup=[{"fifo": "kdb/fifo.kdb"}])
    case("model-is-dir", ["inspect", "kdb"])

    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for path, data in files.items():
        full = os.path.join(OUT, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(OUT, "out"), exist_ok=True)
    with open(os.path.join(OUT, "out", ".keep"), "w") as f:
        f.write("")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"setup": [
            ["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "1x8x8", "-o", "model.kdb"],
            ["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "1x8x8", "-o", "model8.kdb"],
            ["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "3x32x32", "-o", "model32.kdb"]],
            "cases": cases}, f, indent=1)
    total = sum(len(d) for d in files.values())
    print("%d cases, %d files, %d bytes in %s" % (len(cases), len(files), total, OUT))


if __name__ == "__main__":
    main()
