#!/usr/bin/env python3
"""An independent reader of the .kdb bundle format, written from Spec/bundle-format.md
(standard library + numpy only). It shares no code with the Swift implementation and is
used by the test suite to cross-check tensors and digests of bundles written by Swift.

    tools/kdb_reader.py FILE [--json] [--tensors]     # prints digests (and tensor stats)

As a library:  b = kdb_reader.read("model.kdb"); b.tensor("fc.weight"); b.content_digest
A rejected file raises KdbError whose .code is the spec's error code (E01 ... E43).
"""
import hashlib
import json
import math
import struct
import sys
import zlib

import numpy as np

MAGIC = b"\x89KDB\r\n\x1a\n"
KNOWN = ["TDIR", "GRPH", "LABL", "PREP", "VMAP", "FSPP", "HINT", "QNTP", "PROV", "META"]
DTYPES = {1: ("f32", "<f4", 4), 2: ("f16", "<f2", 2), 3: ("bf16", "<u2", 2), 4: ("i8", "i1", 1), 5: ("u8", "u1", 1),
          6: ("i32", "<i4", 4), 7: ("i64", "<i8", 8), 8: ("bool", "u1", 1)}
CAP = 256 << 20
I64_MAX = (1 << 63) - 1
OPS = {  # op -> (min inputs, max inputs, {attr: kind})
    "conv2d": (2, 3, {"stride": ("ints", 2, 1), "pads": ("ints", 4, 0), "dilation": ("ints", 2, 1), "groups": ("uint", 1)}),
    "linear": (2, 3, {}),
    "batchnorm": (5, 5, {"epsilon": ("float", 0.0, None, True), "momentum": ("float", 0.0, 1.0, False)}),
    "relu": (1, 1, {}), "sigmoid": (1, 1, {}), "globalavgpool": (1, 1, {}),
    "maxpool": (1, 1, {"kernel": ("ints", 2, 1), "stride": ("ints", 2, 1), "pads": ("ints", 4, 0),
                       "dilation": ("ints", 2, 1), "ceil_mode": ("bool",)}),
    "avgpool": (1, 1, {"kernel": ("ints", 2, 1), "stride": ("ints", 2, 1), "pads": ("ints", 4, 0),
                       "ceil_mode": ("bool",), "count_include_pad": ("bool",)}),
    "add": (2, 2, {}), "concat": (1, 1 << 30, {"axis": ("int",)}), "flatten": (1, 1, {"axis": ("int",)}),
    "reshape": (1, 1, {"shape": ("ints", None, -1)}), "dropout": (1, 1, {"ratio": ("float", 0.0, 1.0, "upper-open")}),
    "softmax": (1, 1, {"axis": ("int",)}),
    "split_linear": (3, 1 << 30, {"in_splits": ("ints", None, 0), "shared": ("uint", 0)}),
    "l2norm_scale": (2, 2, {"groups": ("ints", None, 1), "epsilon": ("float", 0.0, None, True)}),
    # op set 2 (format 1.1)
    "mul": (2, 2, {}), "sub": (2, 2, {}), "div": (2, 2, {}),
    "reduce_mean": (1, 1, {"axes": ("ints", None, -8), "keepdims": ("bool",)}),
    "transpose": (1, 1, {"perm": ("ints", None, 0)}),
    "pad": (1, 1, {"pads": ("ints", None, 0), "value": ("float", None, None, False)}),
    "slice": (1, 1, {"axes": ("ints", None, -8), "starts": ("ints", None, -(1 << 63)), "ends": ("ints", None, -(1 << 63))}),
    "layernorm": (2, 3, {"axis": ("int",), "epsilon": ("float", 0.0, None, True)}),
    "clip": (1, 1, {"min": ("float", None, None, False), "max": ("float", None, None, False)}),
    "hardsigmoid": (1, 1, {"alpha": ("float", None, None, False), "beta": ("float", None, None, False)}),
    "hardswish": (1, 1, {}), "silu": (1, 1, {}), "gelu": (1, 1, {"tanh": ("bool",)}), "erf": (1, 1, {}), "tanh": (1, 1, {}),
    "leaky_relu": (1, 1, {"alpha": ("float", None, None, False)}), "sqrt": (1, 1, {}),
}
OPSET1 = {"conv2d", "linear", "batchnorm", "relu", "sigmoid", "globalavgpool", "maxpool", "avgpool", "add", "concat", "flatten",
          "reshape", "dropout", "softmax", "split_linear", "l2norm_scale"}


class KdbError(Exception):
    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code


class U(int):
    pass


class I(int):
    pass


def fail(code, msg):
    raise KdbError(code, msg)


# --- value decoding (Spec §6) ------------------------------------------------------------

class Cursor:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, n):
        if n < 0 or n > len(self.d) - self.p:
            fail("E30", "value needs %d bytes, %d left" % (n, len(self.d) - self.p))
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def left(self):
        return len(self.d) - self.p


def decode_value(c, depth=0):
    if depth >= 16:
        fail("E41", "values nest deeper than 16")
    tag = c.take(1)[0]
    if tag == 1:
        return U(struct.unpack("<Q", c.take(8))[0])
    if tag == 2:
        return I(struct.unpack("<q", c.take(8))[0])
    if tag == 3:
        v = struct.unpack("<d", c.take(8))[0]
        if v != v or v in (float("inf"), float("-inf")):
            fail("E15", "non-finite float")
        return v
    if tag == 4:
        b = c.take(1)[0]
        if b > 1:
            fail("E33", "bool byte %d" % b)
        return b == 1
    if tag == 5:
        n = struct.unpack("<I", c.take(4))[0]
        if n > 1024:
            fail("E40", "string of %d bytes" % n)
        return utf8(c.take(n))
    if tag == 6:
        n = struct.unpack("<I", c.take(4))[0]
        if n > c.left():
            fail("E30", "array count %d exceeds bytes left" % n)
        return [decode_value(c, depth + 1) for _ in range(n)]
    if tag == 7:
        n = struct.unpack("<I", c.take(4))[0]
        if n > c.left():
            fail("E30", "map count %d exceeds bytes left" % n)
        out, prev = {}, None
        for _ in range(n):
            kn = struct.unpack("<H", c.take(2))[0]
            if kn == 0 or kn > 255:
                fail("E40", "key of %d bytes" % kn)
            kb = c.take(kn)
            key = utf8(kb)
            if prev is not None and not prev < kb:
                fail("E42", "key %r after %r" % (key, prev))
            prev = kb
            out[key] = decode_value(c, depth + 1)
        return out
    if tag == 8:
        n = struct.unpack("<I", c.take(4))[0]
        arr = np.frombuffer(c.take(4 * n), dtype="<f4")
        if not np.all(np.isfinite(arr)):
            fail("E15", "non-finite f32[] element")
        return [float(x) for x in arr]
    if tag == 9:
        n = struct.unpack("<I", c.take(4))[0]
        return [int(x) for x in np.frombuffer(c.take(8 * n), dtype="<i8")]
    fail("E30", "unknown tag 0x%02x" % tag)


def is_digest(s):
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def float_in(v, spec):
    """A float attribute's range: (kind, low, high, open) where open is True (low excluded),
    "upper-open" (high excluded) or False (both included); high None means no upper bound."""
    if len(spec) == 1:
        return True
    _, lo, hi, open_ = spec
    if lo is None:  # any finite value
        return math.isfinite(v)
    if open_ is True and not v > lo:
        return False
    if open_ is not True and not v >= lo:
        return False
    if hi is not None and (v > hi or (open_ == "upper-open" and v == hi)):
        return False
    return True


def utf8(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        fail("E23", "invalid UTF-8 %r" % b[:16])


def decode_section(payload, fourcc):
    c = Cursor(payload)
    v = decode_value(c)
    if not isinstance(v, dict):
        fail("E30", "%s payload is not a map" % fourcc)
    if c.left():
        fail("E30", "%s has %d trailing bytes" % (fourcc, c.left()))
    return v


def fields(m, ctx, required, optional=()):
    for k in m:
        if k not in required and k not in optional:
            fail("E32", "%s: unexpected key %r" % (ctx, k))
    for k, kind in required.items():
        if k not in m:
            fail("E31", "%s: missing key %r" % (ctx, k))
    for k, kind in list(required.items()) + [(k, optional[k]) for k in optional if k in m]:
        if not typed(m[k], kind):
            fail("E33", "%s.%s: expected %s" % (ctx, k, kind))
    return m


def typed(v, kind):
    return {"uint": lambda: type(v) is U, "int": lambda: type(v) is I, "float": lambda: type(v) is float,
            "bool": lambda: type(v) is bool, "str": lambda: isinstance(v, str), "list": lambda: isinstance(v, list),
            "map": lambda: isinstance(v, dict),
            "strs": lambda: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "ints": lambda: isinstance(v, list) and all(type(x) is int for x in v),
            "floats": lambda: isinstance(v, list) and all(type(x) is float for x in v)}[kind]()


# --- the file ----------------------------------------------------------------------------

class Bundle:
    def __init__(self, data, name="<bytes>"):
        self.name, self.data = name, data
        self._decoded = {}
        self._header()
        self._directory()
        self._tensor_table()

    def _header(self):
        d = self.data
        if len(d) < 128:
            fail("E02", "%d bytes, fewer than the header" % len(d))
        if d[:8] != MAGIC:
            fail("E01", "bad magic")
        if struct.unpack_from("<I", d, 124)[0] != zlib.crc32(d[:124]):
            fail("E04", "header CRC mismatch")
        (self.major, self.minor, hsize, self.required, self.optional, self.file_length, data_off, self.data_length,
         self.dir_off, self.count, esize) = struct.unpack_from("<HHIQQQQQQII", d, 8)
        if self.major != 1:
            fail("E05", "major version %d" % self.major)
        if self.required & ~1:
            fail("E06", "unknown required features 0x%x" % self.required)
        if hsize != 128 or data_off != 4096 or esize != 48 or not 1 <= self.count <= 1024 or any(d[72:124]):
            fail("E37", "invalid fixed header fields")
        if len(d) < self.file_length:
            fail("E02", "file has %d of %d bytes" % (len(d), self.file_length))
        if len(d) > self.file_length:
            fail("E03", "%d trailing bytes" % (len(d) - self.file_length))
        for v in (self.file_length, self.data_length, self.dir_off):
            if v > I64_MAX:
                fail("E08", "size field above 2^63")
        if self.data_length % 64:
            fail("E37", "data_length not a multiple of 64")
        data_end = 4096 + self.data_length
        end = self.dir_off + 48 * self.count + 32
        if data_end > self.file_length or end > self.file_length:
            fail("E07", "regions past the end of the file")
        if self.dir_off < data_end:
            fail("E10", "directory overlaps data")
        if end != self.file_length:
            fail("E11", "bytes between directory and trailer")

    def _directory(self):
        d, self.sections, seen = self.data, [], set()
        expected = 4096 + self.data_length
        for i in range(self.count):
            at = self.dir_off + 48 * i
            fourcc = d[at:at + 4]
            if not all(48 <= c <= 57 or 65 <= c <= 90 for c in fourcc):
                fail("E33", "bad fourcc %r" % fourcc)
            fourcc = fourcc.decode()
            flags, off, stored, length, crc = struct.unpack_from("<IQQQI", d, at + 4)
            if flags & ~3:
                fail("E43", "%s flags 0x%x" % (fourcc, flags))
            if any(d[at + 36:at + 48]):
                fail("E37", "%s reserved bytes" % fourcc)
            if fourcc in seen:
                fail("E12", "section %s twice" % fourcc)
            seen.add(fourcc)
            if flags & 1 and fourcc not in KNOWN:
                fail("E19", "unknown critical section %s" % fourcc)
            if off > I64_MAX or stored > I64_MAX or length > I64_MAX or off + stored > I64_MAX:
                fail("E08", "%s offset/length overflow" % fourcc)
            if off < expected:
                fail("E10", "%s overlaps" % fourcc)
            if off > expected:
                fail("E11", "gap before %s" % fourcc)
            if off + stored > self.file_length:
                fail("E07", "%s past the end" % fourcc)
            if off + stored > self.dir_off:
                fail("E10", "%s overlaps the directory" % fourcc)
            if not flags & 2 and length != stored:
                fail("E33", "%s length != stored" % fourcc)
            if flags & 2 and length > CAP:
                fail("E22", "%s declares %d inflated bytes" % (fourcc, length))
            expected = off + stored
            self.sections.append({"fourcc": fourcc, "critical": bool(flags & 1), "deflated": bool(flags & 2),
                                  "offset": off, "stored": stored, "length": length, "crc32": crc})
        if expected != self.dir_off:
            fail("E11", "gap before the directory")
        if "TDIR" not in seen:
            fail("E34", "no TDIR")

    def payload(self, fourcc):
        e = next((s for s in self.sections if s["fourcc"] == fourcc), None)
        if e is None:
            return None
        raw = self.data[e["offset"]:e["offset"] + e["stored"]]
        if zlib.crc32(raw) != e["crc32"]:
            fail("E20", "%s CRC mismatch" % fourcc)
        if not e["deflated"]:
            return raw
        z = zlib.decompressobj()
        try:
            out = z.decompress(raw, e["length"] + 1)
        except zlib.error as err:
            fail("E36", "%s: %s" % (fourcc, err))
        if len(out) > e["length"]:
            fail("E21", "%s inflates past its declared size" % fourcc)
        if not z.eof or z.unused_data or len(out) != e["length"]:
            fail("E36", "%s stream truncated or wrong size" % fourcc)
        return out

    def section(self, fourcc):
        if fourcc not in self._decoded:
            p = self.payload(fourcc)
            self._decoded[fourcc] = None if p is None else decode_section(p, fourcc)
        return self._decoded[fourcc]

    def _tensor_table(self):
        t = fields(self.section("TDIR"), "TDIR", {"tensors": "list"})
        self.tensors, names, end = [], set(), 0
        for i, e in enumerate(t["tensors"]):
            if not isinstance(e, dict):
                fail("E33", "TDIR entry %d" % i)
            fields(e, "TDIR.tensors[%d]" % i, {"crc32": "uint", "dtype": "uint", "length": "uint", "name": "str",
                                               "offset": "uint", "shape": "ints"}, {"quant": "uint"})
            # Range checks of the fields themselves come first, in key order (Spec §9.1).
            if e["crc32"] >= 1 << 32:
                fail("E33", "crc32 %d is not below 2^32" % e["crc32"])
            if e["dtype"] > 255:
                fail("E33", "dtype %d above 255" % e["dtype"])
            for k in ("length", "offset", "quant"):
                if k in e and e[k] > I64_MAX:
                    fail("E33", "%s %d above 2^63 - 1" % (k, e[k]))
            name = e["name"]
            if not name:
                fail("E33", "empty tensor name")
            if name in names:
                fail("E12", "tensor %r twice" % name)
            names.add(name)
            if e["dtype"] not in DTYPES:
                fail("E13", "dtype %d" % e["dtype"])
            if len(e["shape"]) > 8:
                fail("E27", "rank %d" % len(e["shape"]))
            if any(x < 0 for x in e["shape"]):
                fail("E33", "negative dimension")
            n = DTYPES[e["dtype"]][2]
            for x in e["shape"]:
                n *= x
                if n > I64_MAX:
                    fail("E08", "size of %r overflows" % name)
            if n != e["length"]:
                fail("E14", "%r needs %d bytes, declares %d" % (name, n, e["length"]))
            off = e["offset"]
            if off % 64:
                fail("E09", "%r at %d" % (name, off))
            if off < end:
                fail("E10", "%r overlaps" % name)
            if off > (end + 63) // 64 * 64:
                fail("E11", "gap before %r" % name)
            if off + e["length"] > self.data_length:
                fail("E07", "%r past the data region" % name)
            end = off + e["length"]
            self.tensors.append(e)
        if self.data_length != (end + 63) // 64 * 64:
            fail("E11", "data_length does not match the tensors")
        if any("quant" in e for e in self.tensors) != bool(self.required & 1):
            fail("E37", "QUANTIZED bit disagrees with the tensor table")
        self.by_name = {e["name"]: e for e in self.tensors}

    def raw(self, name):
        e = self.by_name[name]
        start = 4096 + e["offset"]
        return self.data[start:start + e["length"]]

    def tensor(self, name):
        """The tensor as numpy, in its stored dtype (bf16 widened to float32)."""
        e = self.by_name[name]
        _, np_dtype, _ = DTYPES[e["dtype"]]
        arr = np.frombuffer(self.raw(name), dtype=np_dtype).reshape(e["shape"])
        if e["dtype"] == 3:
            arr = (arr.astype("<u4") << 16).view("<f4")
        return arr

    def dequantized(self, name):
        e = self.by_name[name]
        arr = self.tensor(name).astype(np.float64)
        if "quant" not in e:
            return arr
        p = self.section("QNTP")["params"][e["quant"]]
        scale, zp = np.array(p["scale"]), np.array(p["zero_point"])
        if p["axis"] >= 0:
            shape = [1] * arr.ndim
            shape[p["axis"]] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return scale * (arr - zp)

    # --- cross-checks and verify (Spec §7, §9) ---

    def validate(self):
        g = self.section("GRPH")
        if g is not None:
            self._graph(g)
        labl = self.section("LABL")
        if labl is not None:
            fields(labl, "LABL", {"classes": "strs"})
            if not labl["classes"]:
                fail("E33", "LABL lists no class")
            if len(set(labl["classes"])) != len(labl["classes"]):
                fail("E12", "duplicate class names")
            if any(not c for c in labl["classes"]):
                fail("E33", "empty class name")
        prep = self.section("PREP")
        if prep is not None:
            fields(prep, "PREP", {"alpha": "str", "channels": "uint", "height": "uint", "invert": "bool",
                                  "mean": "floats", "resize": "str", "scale": "float", "std": "floats", "width": "uint"})
            if prep["channels"] not in (1, 3) or prep["alpha"] not in ("white", "black", "drop") or \
                    prep["resize"] not in ("stretch", "shorter-side-crop") or \
                    not (1 <= prep["height"] <= 65535 and 1 <= prep["width"] <= 65535) or \
                    len(prep["mean"]) != prep["channels"] or len(prep["std"]) != prep["channels"] or \
                    any(s <= 0 for s in prep["std"]) or not 0 < prep["scale"] <= 1:
                fail("E33", "PREP values out of range")
        nodes = {n["name"] for n in (g or {}).get("nodes", [])}
        vmap = self.section("VMAP")
        if vmap is not None:
            fields(vmap, "VMAP", {"verticals": "list"})
            for v in vmap["verticals"]:
                fields(v, "VMAP.verticals[]", {"classes": "ints", "name": "str", "teacher": "str"})
                if v["teacher"] and not is_digest(v["teacher"]):
                    fail("E33", "vertical teacher %r is neither empty nor a 64-hex digest" % v["teacher"])
                if not v["classes"]:
                    fail("E33", "vertical %r owns no class" % v["name"])
                if len(set(v["classes"])) != len(v["classes"]):
                    fail("E33", "repeated class index")
            if labl is None:
                fail("E24", "VMAP without LABL")
            k = len(labl["classes"])
            for v in vmap["verticals"]:
                if any(c < 0 or c >= k for c in v["classes"]):
                    fail("E24", "vertical %r class index out of range" % v["name"])
        fspp = self.section("FSPP")
        if fspp is not None:
            fields(fspp, "FSPP", {"pairs": "list"})
            for p in fspp["pairs"]:
                fields(p, "FSPP.pairs[]", {"first": "str", "second": "str"})
                if p["first"] not in nodes or p["second"] not in nodes:
                    fail("E25", "FSP pair names an unknown node")
        hint = self.section("HINT")
        if hint is not None:
            fields(hint, "HINT", {"guided": "strs", "hints": "strs", "regressor": "strs"})
            if any(n not in nodes for n in hint["hints"] + hint["guided"]):
                fail("E25", "hint names an unknown node")
            if any(n not in self.by_name for n in hint["regressor"]):
                fail("E16", "regressor tensor missing")
        self._quantization()
        prov = self.section("PROV")
        if prov is not None:
            fields(prov, "PROV", {"data": "map", "hyperparameters": "map", "method": "str", "metrics": "map",
                                  "parents": "list", "tool": "str"}, {"seed": "int"})
            for p in prov["parents"]:
                fields(p, "PROV.parents[]", {"digest": "str", "role": "str"})
                if not is_digest(p["digest"]):
                    fail("E33", "parent digest %r is not 64 hex" % p["digest"])
        self.section("META")

    def _graph(self, g):
        fields(g, "GRPH", {"inputs": "list", "nodes": "list", "opset": "uint", "output_kind": "str", "outputs": "strs"})
        avail = set(self.by_name)
        for inp in g["inputs"]:
            fields(inp, "GRPH.inputs[]", {"name": "str", "shape": "ints"})
            if not inp["name"]:
                fail("E33", "empty graph input name")
            if inp["name"] in avail:
                fail("E12", "graph input shadows a tensor")
            avail.add(inp["name"])
        producer, names = {}, set()
        for i, n in enumerate(g["nodes"]):
            fields(n, "GRPH.nodes[%d]" % i, {"attrs": "map", "inputs": "strs", "name": "str", "op": "str",
                                             "outputs": "strs"})
            if n["op"] not in OPS:
                fail("E18", "op %r" % n["op"])
        if g["opset"] not in (1, 2) or g["output_kind"] not in ("softmax", "sigmoid", "none"):
            fail("E33", "opset or output_kind")
        if g["opset"] == 1 and any(n["op"] not in OPSET1 for n in g["nodes"]):
            fail("E33", "an op-set-2 op in a graph that says op set 1")
        for i, n in enumerate(g["nodes"]):
            if not n["name"] or "" in n["outputs"]:
                fail("E33", "node %d has an empty name or output name" % i)
            if n["name"] in names:
                fail("E12", "node %r twice" % n["name"])
            names.add(n["name"])
            lo, hi, attrs = OPS[n["op"]]
            if not lo <= len(n["inputs"]) <= hi or len(n["outputs"]) != 1 or set(n["attrs"]) != set(attrs):
                fail("E35", "node %r arity or attributes" % n["name"])
            for k, spec in attrs.items():
                v = n["attrs"][k]
                ok = {"ints": lambda: typed(v, "ints") and (spec[1] is None or len(v) == spec[1]) and all(x >= spec[2] for x in v),
                      "uint": lambda: type(v) is U and v >= spec[1], "int": lambda: type(v) is I,
                      "float": lambda: type(v) is float and float_in(v, spec), "bool": lambda: type(v) is bool}[spec[0]]()
                if not ok:
                    fail("E35", "node %r attribute %r" % (n["name"], k))
            if n["op"] == "split_linear" and len(n["inputs"]) != 1 + 2 * len(n["attrs"]["in_splits"]):
                fail("E35", "split_linear %r needs 1 + 2 x %d inputs" % (n["name"], len(n["attrs"]["in_splits"])))
            for o in n["outputs"]:
                if o in avail or o in producer:
                    fail("E12", "output %r defined twice" % o)
                producer[o] = i
        for n in g["nodes"]:
            for x in n["inputs"]:
                if x not in avail and x not in producer:
                    fail("E16", "node %r reads missing %r" % (n["name"], x))
        for o in g["outputs"]:
            if o not in producer:
                fail("E35", "output %r is not a node output" % o)
        state = {}

        def visit(i):  # iterative DFS colouring would do; graphs here are small
            stack = [(i, iter(g["nodes"][i]["inputs"]))]
            state[i] = 1
            while stack:
                j, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[j] = 2
                    stack.pop()
                    continue
                p = producer.get(nxt)
                if p is None:
                    continue
                if state.get(p) == 1:
                    fail("E17", "cycle through %r" % g["nodes"][p]["name"])
                if p not in state:
                    state[p] = 1
                    stack.append((p, iter(g["nodes"][p]["inputs"])))

        for i in range(len(g["nodes"])):
            if i not in state:
                visit(i)
        # The part of the shape proof (§7.2) that needs no shape inference: graph input dimensions.
        for inp in g["inputs"]:
            s = inp["shape"]
            if len(s) < 2 or not (s[0] == -1 or s[0] >= 1) or any(x < 1 for x in s[1:]):
                fail("E35", "graph input %r has shape %s (rank >= 2, sizes >= 1, batch may be -1)" % (inp["name"], s))
        for n in g["nodes"]:
            if n["op"] == "reshape" and list(n["attrs"]["shape"]).count(-1) > 1:
                fail("E35", "reshape %r has more than one -1" % n["name"])

    def _quantization(self):
        q = self.section("QNTP")
        params = []
        if q is not None:
            fields(q, "QNTP", {"params": "list"})
            for p in q["params"]:
                fields(p, "QNTP.params[]", {"axis": "int", "scale": "floats", "zero_point": "ints"})
            params = q["params"]
            for i, p in enumerate(params):  # every entry, referenced or not
                n = 1 if p["axis"] == -1 else len(p["scale"])
                if p["axis"] < -1 or n < 1 or len(p["scale"]) != n or len(p["zero_point"]) != n or \
                        any(not s > 0 for s in p["scale"]):
                    fail("E38", "QNTP.params[%d]" % i)
        ranges = {4: (-128, 127), 5: (0, 255), 6: (-(1 << 31), (1 << 31) - 1)}
        for e in self.tensors:
            if "quant" not in e:
                continue
            if e["quant"] >= len(params) or e["dtype"] not in ranges:
                fail("E38", "tensor %r quantization reference" % e["name"])
            p = params[e["quant"]]
            want = 1 if p["axis"] == -1 else (e["shape"][p["axis"]] if 0 <= p["axis"] < len(e["shape"]) else None)
            lo, hi = ranges[e["dtype"]]
            if want is None or len(p["scale"]) != want or len(p["zero_point"]) != want or \
                    any(not s > 0 for s in p["scale"]) or any(not lo <= z <= hi for z in p["zero_point"]):
                fail("E38", "tensor %r quantization parameters" % e["name"])

    def verify(self):
        d = self.data
        if any(d[128:4096]):
            fail("E26", "header padding")
        for s in self.sections:
            if s["fourcc"] in KNOWN:
                self.payload(s["fourcc"])
            elif zlib.crc32(self.data[s["offset"]:s["offset"] + s["stored"]]) != s["crc32"]:
                fail("E20", "%s CRC mismatch" % s["fourcc"])  # unknown sections: CRC only, never inflated
        for i, e in enumerate(self.tensors):
            raw = self.raw(e["name"])
            if zlib.crc32(raw) != e["crc32"]:
                fail("E29", "tensor %r CRC" % e["name"])
            if e["dtype"] in (1, 2, 3) and not np.all(np.isfinite(self.tensor(e["name"]))):
                fail("E15", "tensor %r has NaN/Inf" % e["name"])
            if e["dtype"] == 8 and np.any(np.frombuffer(raw, dtype="u1") > 1):
                fail("E33", "bool tensor %r" % e["name"])
            nxt = self.tensors[i + 1]["offset"] if i + 1 < len(self.tensors) else self.data_length
            if any(d[4096 + e["offset"] + e["length"]:4096 + nxt]):
                fail("E26", "padding after %r" % e["name"])
        self.validate()
        if hashlib.sha256(d[:-32]).digest() != d[-32:]:
            fail("E28", "SHA-256 trailer mismatch")

    @property
    def file_digest(self):
        return self.data[-32:].hex()

    @property
    def content_digest(self):
        h = hashlib.sha256(b"KDB-CONTENT-1\n")
        for fourcc in ("GRPH", "LABL", "PREP"):
            p = self.payload(fourcc)
            h.update(fourcc.encode() + (b"\x00" if p is None else b"\x01" + struct.pack("<Q", len(p)) + p))
        h.update(struct.pack("<Q", len(self.tensors)))
        qntp = self.section("QNTP")
        for e in self.tensors:
            m = encode_map({"dtype": ("u", e["dtype"]), "name": ("s", e["name"]), "shape": ("i64s", e["shape"])} |
                           ({"quant": ("m", qntp["params"][e["quant"]])} if "quant" in e else {}))
            raw = self.raw(e["name"])
            h.update(struct.pack("<Q", len(m)) + m + struct.pack("<Q", len(raw)) + raw)
        return h.hexdigest()


def encode_map(m):
    """The §6 encoding of the small maps the content digest needs (written here again so the
    reader stays independent of any writer)."""
    out = b"\x07" + struct.pack("<I", len(m))
    for k in sorted(m, key=lambda k: k.encode()):
        kind, v = m[k]
        out += struct.pack("<H", len(k.encode())) + k.encode()
        if kind == "u":
            out += b"\x01" + struct.pack("<Q", v)
        elif kind == "s":
            out += b"\x05" + struct.pack("<I", len(v.encode())) + v.encode()
        elif kind == "i64s":
            out += b"\x09" + struct.pack("<I", len(v)) + struct.pack("<%dq" % len(v), *v)
        elif kind == "m":  # a QNTP params map
            out += encode_map({"axis": ("i", v["axis"]), "scale": ("f32s", v["scale"]),
                               "zero_point": ("i64s", v["zero_point"])})
        elif kind == "i":
            out += b"\x02" + struct.pack("<q", v)
        elif kind == "f32s":
            out += b"\x08" + struct.pack("<I", len(v)) + struct.pack("<%df" % len(v), *v)
    return out


def read(path, verify=True):
    with open(path, "rb") as fh:
        b = Bundle(fh.read(), path)
    if verify:
        b.verify()
    return b


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    path = argv[0]
    try:
        b = read(path)
    except KdbError as e:
        print("%s: %s" % (path, e), file=sys.stderr)
        return 2
    doc = {"file": path, "version": "%d.%d" % (b.major, b.minor), "file_digest": b.file_digest,
           "content_digest": b.content_digest, "sections": [s["fourcc"] for s in b.sections],
           "tensors": len(b.tensors)}
    if "--tensors" in argv:
        doc["tensor_stats"] = {}
        for e in b.tensors:
            x = b.dequantized(e["name"])
            doc["tensor_stats"][e["name"]] = {
                "dtype": DTYPES[e["dtype"]][0], "shape": e["shape"],
                "sum": float(np.sum(x, dtype=np.float64)), "sha256": hashlib.sha256(b.raw(e["name"])).hexdigest()}
    if "--json" in argv:
        print(json.dumps(doc, sort_keys=True))
    else:
        for k, v in doc.items():
            print("%s: %s" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
