#!/usr/bin/env python3
"""Writes the conformance fixtures of Spec/bundle-format.md into Spec/fixtures/.

This is an independent writer of the format (standard library + numpy), written from
the spec: the Swift test suite checks that its reader accepts every valid fixture and
that its writer reproduces each one byte for byte, and that every invalid fixture is
rejected with the code in its file name.

    tools/gen_fixtures.py [OUT_DIR]      # default: Spec/fixtures
"""
import hashlib
import os
import struct
import sys
import zlib

import numpy as np

MAGIC = b"\x89KDB\r\n\x1a\n"
DATA_OFFSET = 4096
CRITICAL, DEFLATED = 1, 2
KNOWN_ORDER = ["TDIR", "GRPH", "LABL", "PREP", "VMAP", "FSPP", "HINT", "QNTP", "PROV", "META"]
CRITICAL_SECTIONS = {"TDIR", "GRPH", "LABL", "PREP", "QNTP"}
DTYPES = {"f32": (1, "<f4"), "f16": (2, "<f2"), "bf16": (3, None), "i8": (4, "i1"), "u8": (5, "u1"),
          "i32": (6, "<i4"), "i64": (7, "<i8"), "bool": (8, "u1")}


# --- the value encoding (Spec §6) -------------------------------------------------------

class U(int):
    """uint"""


class I(int):
    """int"""


class F32s(list):
    """f32[]"""


class I64s(list):
    """i64[]"""


class RawMap(list):
    """A map written in the given key order (to build unsorted-key fixtures)."""


class RawStr(bytes):
    """A string written as these exact bytes (to build invalid UTF-8 fixtures)."""


def enc(v):
    if isinstance(v, bool):
        return b"\x04" + (b"\x01" if v else b"\x00")
    if isinstance(v, U):
        return b"\x01" + struct.pack("<Q", v)
    if isinstance(v, I):
        return b"\x02" + struct.pack("<q", v)
    if isinstance(v, float):
        return b"\x03" + struct.pack("<d", v)
    if isinstance(v, RawStr):
        return b"\x05" + struct.pack("<I", len(v)) + bytes(v)
    if isinstance(v, str):
        b = v.encode()
        return b"\x05" + struct.pack("<I", len(b)) + b
    if isinstance(v, F32s):
        return b"\x08" + struct.pack("<I", len(v)) + struct.pack("<%df" % len(v), *v)
    if isinstance(v, I64s):
        return b"\x09" + struct.pack("<I", len(v)) + struct.pack("<%dq" % len(v), *v)
    if isinstance(v, RawMap):
        out = b"\x07" + struct.pack("<I", len(v))
        for k, x in v:
            kb = k.encode()
            out += struct.pack("<H", len(kb)) + kb + enc(x)
        return out
    if isinstance(v, dict):
        return enc(RawMap(sorted(v.items(), key=lambda kv: kv[0].encode())))
    if isinstance(v, list):
        return b"\x06" + struct.pack("<I", len(v)) + b"".join(enc(x) for x in v)
    raise TypeError(type(v))


# --- the layout (Spec §2–§5) -------------------------------------------------------------

def align(x, a):
    return (x + a - 1) // a * a


class Tensor:
    def __init__(self, name, dtype, array, quant=None):
        self.name, self.dtype, self.quant = name, dtype, quant
        self.shape = list(array.shape)
        if dtype == "bf16":
            bits = np.ascontiguousarray(array, dtype="<f4").view("<u4")
            self.data = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
        else:
            self.data = np.ascontiguousarray(array, dtype=DTYPES[dtype][1]).tobytes()


class Layout:
    """Every field of a file, filled in canonically by build(); fixtures tamper with it,
    then assemble() writes bytes with all checksums recomputed unless told otherwise."""

    def __init__(self, tensors, sections, deflate=(), unknown=()):
        self.tensors = tensors
        self.sections = sections            # fourcc -> value
        self.deflate = set(deflate)
        self.unknown = list(unknown)        # (fourcc, flags, payload)
        self.build()

    def build(self):
        self.infos, end = [], 0
        for t in self.tensors:
            off = align(end, 64)
            info = {"crc32": U(zlib.crc32(t.data)), "dtype": U(DTYPES[t.dtype][0]), "length": U(len(t.data)),
                    "name": t.name, "offset": U(off), "shape": I64s(t.shape)}
            if t.quant is not None:
                info["quant"] = U(t.quant)
            self.infos.append(info)
            end = off + len(t.data)
        self.data_length = align(end, 64)
        self.header = {"major": 1, "minor": 0, "header_size": 128,
                       "required": 1 if any(t.quant is not None for t in self.tensors) else 0,
                       "optional": 0, "data_offset": DATA_OFFSET, "entry_size": 48, "reserved": b"\0" * 52}
        self.tdir_value = None  # None: encode from self.infos
        self.entries = []
        for fourcc in KNOWN_ORDER:
            if fourcc == "TDIR" or fourcc in self.sections:
                flags = CRITICAL if fourcc in CRITICAL_SECTIONS else 0
                self.entries.append({"fourcc": fourcc.encode(), "flags": flags | (DEFLATED if fourcc in self.deflate else 0)})
        for fourcc, flags, payload in self.unknown:
            self.entries.append({"fourcc": fourcc.encode(), "flags": flags, "payload": payload})
        self.patches = []         # (offset, bytes) applied after assembly, before the trailer
        self.keep_crc = set()     # fourccs whose stored CRC is not recomputed after patching
        self.fixed = {}           # explicit header/entry overrides

    def payload(self, e):
        if "payload" in e:
            return e["payload"]
        fourcc = e["fourcc"].decode()
        if fourcc == "TDIR":
            return enc(self.tdir_value if self.tdir_value is not None else {"tensors": self.infos})
        v = self.sections[fourcc]
        return v if isinstance(v, bytes) else enc(v)

    def assemble(self, header_crc=True, file_sha=True, trailing=b""):
        infos = self.infos
        data = bytearray(self.data_length)
        for t, info in zip(self.tensors, infos):
            off = int(info["offset"])
            if off + len(t.data) <= len(data):
                data[off:off + len(t.data)] = t.data
        stored = []
        for e in self.entries:
            p = self.payload(e)
            if e["flags"] & DEFLATED and "stored" not in e:
                s = zlib.compress(p, 9)
            else:
                s = e.get("stored", p)
            stored.append((e, s, e.get("length", len(p))))
        pos = DATA_OFFSET + self.data_length
        sections_bytes = b""
        directory = b""
        for e, s, length in stored:
            off = e.get("offset", pos)
            crc = e.get("crc", zlib.crc32(s))
            directory += (e["fourcc"] + struct.pack("<IQQQI", e["flags"], off, e.get("stored_length", len(s)), length, crc)
                          + e.get("reserved", b"\0" * 12))
            sections_bytes += s
            pos += len(s)
        h = self.header
        dir_off = self.fixed.get("directory_offset", DATA_OFFSET + self.data_length + len(sections_bytes))
        file_length = self.fixed.get("file_length", DATA_OFFSET + self.data_length + len(sections_bytes) + len(directory) + 32)
        head = (MAGIC + struct.pack("<HHIQQQQQQII", h["major"], h["minor"], h["header_size"], h["required"], h["optional"]
                                    | (1 if any(e["flags"] & DEFLATED for e in self.entries) else 0),
                                    file_length, h["data_offset"], self.fixed.get("data_length", self.data_length), dir_off,
                                    self.fixed.get("section_count", len(self.entries)), h["entry_size"]) + h["reserved"])
        head += struct.pack("<I", zlib.crc32(head) if header_crc else 0xDEADBEEF)
        body = bytearray(head + b"\0" * (DATA_OFFSET - 128) + bytes(data) + sections_bytes + directory)
        for off, b in self.patches:
            body[off:off + len(b)] = b
        digest = hashlib.sha256(bytes(body)).digest()
        if not file_sha:
            digest = bytes(x ^ 0xFF for x in digest[:1]) + digest[1:]
        return bytes(body) + digest + trailing

    def section_offset(self, fourcc):
        pos = DATA_OFFSET + self.data_length
        for e in self.entries:
            if e["fourcc"] == fourcc.encode():
                return pos
            p = self.payload(e)
            pos += len(zlib.compress(p, 9) if e["flags"] & DEFLATED else p)
        raise KeyError(fourcc)


# --- model content ----------------------------------------------------------------------

def rng(seed):
    return np.random.default_rng(seed)


def conv_node(name, x, w, b, out, stride=(1, 1), pads=(0, 0, 0, 0)):
    return {"attrs": {"dilation": I64s([1, 1]), "groups": U(1), "pads": I64s(list(pads)), "stride": I64s(list(stride))},
            "inputs": [x, w] + ([b] if b else []), "name": name, "op": "conv2d", "outputs": [out]}


def node(name, op, inputs, out, attrs=None):
    return {"attrs": attrs or {}, "inputs": inputs, "name": name, "op": op, "outputs": [out]}


def small_cnn():
    """A small residual CNN that exercises most of op set 1: 1×8×8 input, 10 classes."""
    r = rng(7)
    f = lambda *s: (r.standard_normal(s) * 0.3).astype(np.float32)
    tensors = [
        Tensor("conv1.weight", "f32", f(4, 1, 3, 3)), Tensor("conv1.bias", "f32", f(4)),
        Tensor("bn1.weight", "f32", 1 + f(4)), Tensor("bn1.bias", "f32", f(4)),
        Tensor("bn1.running_mean", "f32", f(4)), Tensor("bn1.running_var", "f32", 1 + np.abs(f(4))),
        Tensor("conv2.weight", "f32", f(4, 4, 3, 3)),
        Tensor("fc.weight", "f32", f(10, 8)), Tensor("fc.bias", "f32", f(10)),
    ]
    pool = {"ceil_mode": False, "dilation": I64s([1, 1]), "kernel": I64s([2, 2]), "pads": I64s([0, 0, 0, 0]),
            "stride": I64s([2, 2])}
    nodes = [
        conv_node("conv1", "x", "conv1.weight", "conv1.bias", "conv1.out", pads=(1, 1, 1, 1)),
        node("bn1", "batchnorm", ["conv1.out", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"], "bn1.out",
             {"epsilon": 1e-5, "momentum": 0.1}),
        node("relu1", "relu", ["bn1.out"], "relu1.out"),
        node("pool1", "maxpool", ["relu1.out"], "pool1.out", pool),
        conv_node("conv2", "pool1.out", "conv2.weight", None, "conv2.out", pads=(1, 1, 1, 1)),
        node("add1", "add", ["conv2.out", "pool1.out"], "add1.out"),
        node("relu2", "relu", ["add1.out"], "relu2.out"),
        node("cat", "concat", ["relu2.out", "pool1.out"], "cat.out", {"axis": I(1)}),
        node("gap", "globalavgpool", ["cat.out"], "gap.out"),
        node("flat", "flatten", ["gap.out"], "flat.out", {"axis": I(1)}),
        node("drop", "dropout", ["flat.out"], "drop.out", {"ratio": 0.25}),
        node("fc", "linear", ["drop.out", "fc.weight", "fc.bias"], "logits"),
    ]
    graph = {"inputs": [{"name": "x", "shape": I64s([-1, 1, 8, 8])}], "nodes": nodes, "opset": U(1),
             "output_kind": "softmax", "outputs": ["logits"]}
    return tensors, graph


def all_sections():
    tensors, graph = small_cnn()
    labels = {"classes": [str(i) for i in range(10)]}
    prep = {"alpha": "white", "channels": U(1), "height": U(8), "invert": False, "mean": F32s([0.5]), "resize": "stretch",
            "scale": 1 / 16, "std": F32s([0.25]), "width": U(8)}
    vmap = {"verticals": [{"classes": I64s([0, 6, 8]), "name": "round", "teacher": ""},
                          {"classes": I64s([1, 4, 7]), "name": "straight", "teacher": "ab" * 32},
                          {"classes": I64s([2, 3, 5, 9]), "name": "curly", "teacher": ""}]}
    fspp = {"pairs": [{"first": "pool1", "second": "relu2"}]}
    hint = {"guided": ["relu1"], "hints": ["relu2"], "regressor": []}
    prov = {"data": {"source": "digits", "split": "train"}, "hyperparameters": {"epochs": U(3), "lr": 0.05},
            "method": "train", "metrics": {"accuracy": 0.875}, "parents": [{"digest": "cd" * 32, "role": "student"}],
            "seed": I(42), "tool": "kdtool 0.1.0"}
    meta = {"author": "gen_fixtures", "tags": ["a", "b"], "nested": {"depth": U(2), "ok": True}, "neg": I(-3)}
    sections = {"GRPH": graph, "LABL": labels, "PREP": prep, "VMAP": vmap, "FSPP": fspp, "HINT": hint, "PROV": prov,
                "META": meta}
    return tensors, sections


def dtype_tensors():
    r = rng(3)
    q = (r.integers(-128, 128, size=(4, 3))).astype(np.int8)
    return [
        Tensor("half", "f16", r.standard_normal((2, 5)).astype(np.float16)),
        Tensor("brain", "bf16", r.standard_normal((3,)).astype(np.float32)),
        Tensor("q.per_tensor", "i8", q, quant=0),
        Tensor("q.per_channel", "i8", q, quant=1),
        Tensor("q.uint", "u8", r.integers(0, 256, size=(6,)).astype(np.uint8), quant=2),
        Tensor("counts", "i32", np.arange(-3, 4, dtype=np.int32)),
        Tensor("big", "i64", np.array([2 ** 40, -(2 ** 40)], dtype=np.int64)),
        Tensor("mask", "bool", np.array([1, 0, 1], dtype=np.uint8)),
        Tensor("empty", "f32", np.zeros((0, 4), dtype=np.float32)),
        Tensor("scalar", "f32", np.array(3.5, dtype=np.float32)),
    ], {"QNTP": {"params": [
        {"axis": I(-1), "scale": F32s([0.02]), "zero_point": I64s([0])},
        {"axis": I(0), "scale": F32s([0.01, 0.02, 0.03, 0.04]), "zero_point": I64s([0, 1, -1, 2])},
        {"axis": I(-1), "scale": F32s([0.5]), "zero_point": I64s([128])}]}}


# --- fixtures -----------------------------------------------------------------------------

def valid_fixtures():
    f = {}
    f["minimal"] = Layout([Tensor("w", "f32", np.arange(6, dtype=np.float32).reshape(2, 3))], {}).assemble()
    tensors, sections = dtype_tensors()
    f["dtypes-f16-int8"] = Layout(tensors, sections).assemble()
    tensors, sections = all_sections()
    f["all-sections"] = Layout(tensors, sections).assemble()
    f["deflated"] = Layout(tensors, sections, deflate={"TDIR", "GRPH", "LABL", "PREP", "PROV", "META"}).assemble()
    r = rng(11)
    many = [Tensor("layer%04d.weight" % i, "f32", r.standard_normal((3, (i % 5) + 1)).astype(np.float32))
            for i in range(2000)]
    f["many-tensors"] = Layout(many, {"LABL": {"classes": ["cat", "dog"]}}, deflate={"TDIR"}).assemble()
    # An unknown non-critical DEFLATED section whose stored bytes are not a zlib stream: nothing
    # inflates a section it does not know, so the file opens and verifies.
    L = Layout([Tensor("w", "f32", np.ones((4,), dtype=np.float32))], {},
               unknown=[("XTRA", DEFLATED, b"not a zlib stream at all")])
    L.entries[-1]["stored"] = b"not a zlib stream at all"
    L.entries[-1]["length"] = 1 << 20
    f["unknown-optional-section-not-inflated"] = L.assemble()

    # Values nested exactly as deep as allowed: the META map (level 1), 14 arrays, a scalar at level 16.
    deep = U(1)
    for _ in range(14):
        deep = [deep]
    tensors, sections = all_sections()
    sections["META"] = {"d": deep}
    f["nesting-at-limit"] = Layout(tensors, sections).assemble()

    # Format 1.1: op set 2 — relu1 becomes a hardswish, a layer norm over the channels-last view, and the
    # header says minor 1.
    tensors, sections = all_sections()
    g = sections["GRPH"]
    g["opset"] = U(2)
    g["nodes"][2] = {"attrs": {}, "inputs": ["bn1.out"], "name": "relu1", "op": "hardswish", "outputs": ["relu1.out"]}
    L = Layout(tensors, sections)
    L.header["minor"] = 1
    f["opset2-hardswish"] = L.assemble()

    f["unknown-optional-section"] = Layout(
        [Tensor("w", "f32", np.ones((4,), dtype=np.float32))], {},
        unknown=[("XTRA", 0, enc({"note": "a later minor version wrote this"}))]).assemble()
    return f


def invalid_fixtures():
    out = {}

    def base():
        tensors, sections = all_sections()
        return Layout(tensors, sections)

    def mutated(data, off, b):
        data = bytearray(data)
        data[off:off + len(b)] = b
        return bytes(data)

    def resha(data):
        return data[:-32] + hashlib.sha256(data[:-32]).digest()

    def header_fix(data):
        data = bytearray(data)
        data[124:128] = struct.pack("<I", zlib.crc32(bytes(data[:124])))
        return resha(bytes(data))

    good = base().assemble()
    out["E01-bad-magic"] = mutated(good, 1, b"X")
    out["E02-truncated"] = good[: len(good) // 2]
    out["E02-truncated-short-header"] = good[:100]
    out["E03-trailing-bytes"] = good + b"\0" * 16
    out["E04-header-checksum"] = mutated(good, 10, b"\x07")
    out["E05-unsupported-version"] = header_fix(mutated(good, 8, struct.pack("<H", 2)))
    out["E06-unknown-required-feature"] = header_fix(mutated(good, 16, struct.pack("<Q", 1 << 5)))

    L = base()
    L.entries[2]["stored_length"] = 1 << 40  # LABL runs past the end of the file (length agrees: one fault)
    L.entries[2]["length"] = 1 << 40
    out["E07-out-of-bounds"] = L.assemble()

    L = base()
    last = L.infos[-1]  # the last tensor, correctly placed, declares more bytes than the data region holds
    last["shape"] = I64s([int(last["shape"][0]) * 64] + [int(x) for x in last["shape"][1:]])
    last["length"] = U(int(last["length"]) * 64)
    out["E07-out-of-bounds-tensor"] = L.assemble()

    L = base()
    L.fixed["file_length"] = 1 << 63  # never the size of a real file: truncated
    out["E02-truncated-file-length-above-2-63"] = L.assemble()

    L = base()
    L.fixed["directory_offset"] = 1 << 63
    out["E08-arithmetic-overflow-directory-offset"] = L.assemble()

    L = base()
    L.fixed["data_length"] = L.data_length + 8  # checked in the header, before the layout it also breaks
    out["E37-invalid-header-data-length"] = L.assemble()

    L = base()
    L.infos[0]["crc32"] = U(1 << 32)
    out["E33-invalid-field-tensor-crc32"] = L.assemble()

    L = base()
    L.infos[0]["dtype"] = U(257)
    out["E33-invalid-field-dtype-above-255"] = L.assemble()

    L = base()
    L.infos[0]["offset"] = U(1 << 63)
    out["E33-invalid-field-offset-above-2-63"] = L.assemble()

    L = base()
    L.infos[0]["shape"] = I64s([1 << 40, 1 << 40, 16])
    out["E08-arithmetic-overflow"] = L.assemble()

    L = base()
    L.infos[1]["offset"] = U(int(L.infos[1]["offset"]) + 8)
    out["E09-misaligned-tensor"] = L.assemble()

    L = base()
    L.infos[1]["offset"] = U(0)
    out["E10-overlapping-regions"] = L.assemble()

    L = base()
    L.entries[1]["offset"] = DATA_OFFSET + L.data_length - 1  # GRPH starts inside TDIR
    out["E10-overlapping-regions-section"] = L.assemble()

    L = base()
    L.infos[1]["offset"] = U(int(L.infos[1]["offset"]) + 64)
    out["E11-layout-gap"] = L.assemble()

    L = base()
    L.infos[1]["name"] = L.infos[0]["name"]
    out["E12-duplicate-name"] = L.assemble()

    L = base()
    L.entries.append({"fourcc": b"LABL", "flags": CRITICAL})
    out["E12-duplicate-name-section"] = L.assemble()

    L = base()
    L.infos[0]["dtype"] = U(99)
    out["E13-unknown-dtype"] = L.assemble()

    L = base()
    L.infos[0]["shape"] = I64s([4, 1, 3, 2])
    out["E14-shape-length-mismatch"] = L.assemble()

    L = base()
    L.tensors[0].data = struct.pack("<f", float("nan")) + L.tensors[0].data[4:]
    L.build()
    out["E15-non-finite"] = L.assemble()

    L = base()
    L.sections["PREP"] = dict(L.sections["PREP"], mean=F32s([float("inf")]))
    out["E15-non-finite-metadata"] = L.assemble()

    L = base()
    L.sections["GRPH"]["nodes"][0]["inputs"][1] = "conv1.missing"
    out["E16-missing-tensor"] = L.assemble()

    L = base()
    g = L.sections["GRPH"]
    g["nodes"][0]["inputs"][0] = "relu2.out"  # conv1 now depends on its own descendants
    out["E17-graph-cycle"] = L.assemble()

    L = base()
    L.sections["GRPH"]["nodes"][2]["op"] = "mish"
    out["E18-unknown-op"] = L.assemble()

    L = base()  # an op-set-2 op in a graph that says op set 1
    L.sections["GRPH"]["nodes"][2] = {"attrs": {}, "inputs": ["bn1.out"], "name": "relu1", "op": "hardswish", "outputs": ["relu1.out"]}
    out["E33-invalid-field-opset1-with-opset2-op"] = L.assemble()

    L = base()
    L.unknown = [("ZZZZ", CRITICAL, enc({"x": U(1)}))]
    L.build()
    out["E19-unknown-critical-section"] = L.assemble()

    L = base()
    labl = L.section_offset("LABL")
    L.patches.append((labl + 12, b"7"))  # a digit of a class name, CRC left stale
    out["E20-section-checksum"] = L.assemble()

    L = base()
    L.deflate = {"LABL"}
    L.build()
    L.entries[2]["length"] = 10  # inflates to far more than 10 bytes
    out["E21-deflate-bomb"] = L.assemble()

    L = base()
    L.deflate = {"META"}
    L.build()
    L.entries[-1]["length"] = 512 << 20
    out["E22-inflated-size-cap"] = L.assemble()

    L = base()
    L.sections["LABL"] = {"classes": [str(i) for i in range(9)] + [RawStr(b"\xff\xfe")]}
    out["E23-invalid-utf8"] = L.assemble()

    L = base()
    L.sections["VMAP"]["verticals"][0]["classes"] = I64s([0, 6, 12])
    out["E24-class-index-out-of-range"] = L.assemble()

    L = base()
    L.sections["FSPP"] = {"pairs": [{"first": "pool1", "second": "stage9"}]}
    out["E25-unknown-node"] = L.assemble()

    L = base()
    L.sections["HINT"] = {"guided": ["relu1"], "hints": ["nowhere"], "regressor": []}
    out["E25-unknown-node-hint"] = L.assemble()

    L = base()
    L.patches.append((DATA_OFFSET + int(L.infos[1]["offset"]) - 1, b"\x01"))  # padding after conv1.weight
    out["E26-nonzero-padding"] = L.assemble()

    L = base()
    L.patches.append((2000, b"\x01"))
    out["E26-nonzero-padding-header"] = L.assemble()

    L = base()
    L.infos[0]["shape"] = I64s([1] * 8 + [36])
    out["E27-rank-too-large"] = L.assemble()

    out["E28-file-checksum"] = mutated(good, len(good) - 1, bytes([good[-1] ^ 1]))

    L = base()
    L.patches.append((DATA_OFFSET + 5, b"\x42"))  # a byte of conv1.weight, CRC left stale
    out["E29-tensor-checksum"] = L.assemble()

    L = base()
    L.sections["LABL"] = b"\x07\x01\x00\x00\x00\x07\x00classes\x06\xff\xff\x00\x00"
    out["E30-malformed-section"] = L.assemble()

    L = base()
    L.sections["LABL"] = b"\x07\x01\x00\x00\x00\x07\x00classes\x06\x00\x00\x00\x00\x99"
    out["E30-malformed-section-trailing"] = L.assemble()

    L = base()
    del L.sections["PREP"]["scale"]
    out["E31-missing-field"] = L.assemble()

    L = base()
    L.sections["PREP"]["zoom"] = 2.0
    out["E32-unexpected-field"] = L.assemble()

    L = base()
    L.sections["PREP"]["channels"] = U(2)
    out["E33-invalid-field"] = L.assemble()

    L = base()
    L.sections = {}
    L.entries = [{"fourcc": b"META", "flags": 0, "payload": enc({"a": U(1)})}]
    out["E34-missing-section"] = L.assemble()

    L = base()
    del L.sections["GRPH"]["nodes"][0]["attrs"]["groups"]
    out["E35-invalid-graph"] = L.assemble()

    L = base()
    L.deflate = {"LABL"}
    L.build()
    raw = zlib.compress(enc(L.sections["LABL"]), 9)
    L.entries[2]["stored"] = raw[:-8]  # the stream stops before its end

    L.entries[2]["length"] = len(enc(L.sections["LABL"]))
    out["E36-inflate-failed"] = L.assemble()

    L = base()
    L.header["reserved"] = b"\0" * 51 + b"\x01"
    out["E37-invalid-header"] = L.assemble()

    tensors, sections = dtype_tensors()
    sections["QNTP"]["params"][1]["scale"] = F32s([0.01, 0.0, 0.03, 0.04])
    out["E38-invalid-quantization"] = Layout(tensors, sections).assemble()

    L = base()
    L.sections["META"] = {"long": "x" * 1025}
    out["E40-string-too-long"] = L.assemble()

    L = base()
    deep = U(1)
    for _ in range(20):
        deep = {"d": deep}
    L.sections["META"] = deep
    out["E41-nesting-too-deep"] = L.assemble()

    L = base()
    L.sections["META"] = RawMap([("b", U(1)), ("a", U(2))])
    out["E42-unsorted-keys"] = L.assemble()

    L = base()
    L.sections["META"] = RawMap([("", U(1))])
    out["E40-string-too-long-empty-key"] = L.assemble()

    L = base()
    deep = U(1)
    for _ in range(15):  # META map (level 1), 15 arrays (levels 2–16), the scalar at level 17
        deep = [deep]
    L.sections["META"] = {"d": deep}
    out["E41-nesting-too-deep-scalar"] = L.assemble()

    L = base()
    del L.sections["LABL"]
    L.build()
    out["E24-class-index-out-of-range-no-labels"] = L.assemble()

    L = base()
    L.sections["VMAP"]["verticals"][0]["classes"] = I64s([])
    out["E33-invalid-field-empty-vertical"] = L.assemble()

    L = base()
    L.sections["VMAP"]["verticals"][0]["teacher"] = "not-a-digest"
    out["E33-invalid-field-vertical-teacher"] = L.assemble()

    L = base()
    del L.sections["VMAP"]
    L.build()
    L.sections["LABL"] = {"classes": []}
    out["E33-invalid-field-empty-labels"] = L.assemble()

    L = base()
    L.sections["PREP"]["scale"] = 2.0
    out["E33-invalid-field-prep-scale"] = L.assemble()

    L = base()
    L.sections["PROV"]["parents"][0]["digest"] = "abc"
    out["E33-invalid-field-parent-digest"] = L.assemble()

    L = base()
    L.sections["GRPH"]["nodes"][10]["name"] = ""  # the dropout node, which no other section names
    out["E33-invalid-field-empty-node-name"] = L.assemble()

    L = base()
    L.sections["GRPH"]["outputs"] = ["x"]
    out["E35-invalid-graph-output-is-input"] = L.assemble()

    L = base()
    L.sections["GRPH"]["outputs"] = ["fc.bias"]
    out["E35-invalid-graph-output-is-tensor"] = L.assemble()

    L = base()
    n = L.sections["GRPH"]["nodes"][9]  # flatten → a reshape with two −1
    n["op"], n["attrs"] = "reshape", {"shape": I64s([-1, -1])}
    out["E35-invalid-graph-reshape-two-minus-one"] = L.assemble()

    L = base()
    L.sections["GRPH"]["nodes"][3]["attrs"]["stride"] = I64s([0, 2])
    out["E35-invalid-graph-pool-stride-zero"] = L.assemble()

    L = base()
    L.sections["GRPH"]["nodes"][10]["outputs"] = ["drop.out", "drop.mask"]
    out["E35-invalid-graph-two-outputs"] = L.assemble()

    L = base()
    L.sections["GRPH"]["nodes"][1]["attrs"]["epsilon"] = 0.0
    out["E35-invalid-graph-batchnorm-epsilon"] = L.assemble()

    L = base()
    L.sections["GRPH"]["nodes"][10]["attrs"]["ratio"] = 1.0
    out["E35-invalid-graph-dropout-ratio"] = L.assemble()

    L = base()
    L.sections["GRPH"]["inputs"][0]["shape"] = I64s([-1, 0, 8, 8])
    out["E35-invalid-graph-input-dimension"] = L.assemble()

    tensors, sections = dtype_tensors()
    sections["QNTP"]["params"].append({"axis": I(-1), "scale": F32s([0.0]), "zero_point": I64s([0])})
    out["E38-invalid-quantization-unreferenced-scale"] = Layout(tensors, sections).assemble()

    tensors, sections = dtype_tensors()
    sections["QNTP"]["params"].append({"axis": I(-2), "scale": F32s([0.5]), "zero_point": I64s([0])})
    out["E38-invalid-quantization-unreferenced-axis"] = Layout(tensors, sections).assemble()

    L = Layout([Tensor("w", "f32", np.ones((4,), dtype=np.float32))], {},
               unknown=[("XTRA", 0, enc({"note": "a later minor version wrote this"}))])
    L.entries[-1]["crc"] = 12345  # stale CRC of an unknown section: open skips it, verify checks it
    out["E20-section-checksum-unknown-section"] = L.assemble()

    L = base()
    L.entries[-1]["flags"] = 0x10
    out["E43-invalid-section-flags"] = L.assemble()
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "Spec", "fixtures")
    for kind, fixtures in (("valid", valid_fixtures()), ("invalid", invalid_fixtures())):
        d = os.path.join(root, kind)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            if old.endswith(".kdb"):
                os.remove(os.path.join(d, old))
        for name, data in sorted(fixtures.items()):
            with open(os.path.join(d, name + ".kdb"), "wb") as fh:
                fh.write(data)
        print("%s: %d fixtures in %s" % (kind, len(fixtures), d))


if __name__ == "__main__":
    main()
