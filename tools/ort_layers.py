#!/usr/bin/env python3
"""ONNX Runtime's time per node of an exported model, to set beside `kdtool bench`'s per-layer table.

    kdtool export student.kdb --output /tmp/student.onnx
    .build/venv-torch/bin/python tools/ort_layers.py /tmp/student.onnx --batch 64 --threads 2
    .build/venv-torch/bin/python tools/ort_layers.py /tmp/student.onnx --batch 64 --json

ONNX Runtime runs the model (CPU provider, all graph optimisations, the given intra-op threads)
with its profiler on: a few warm-up passes, then --runs timed ones. Each node's kernel time is
averaged over all passes and printed longest first, under the node's name (ONNX Runtime's fused
nodes keep the name of the convolution they start from, plus a suffix such as `_nchwc`). The
profiler adds a few microseconds per node, so at batch 1 the sum overstates the pass; at batch 64
it is within a few percent. docs/performance.md (thirteenth session) joins these to
`kdtool bench --json`'s layers.
"""
import argparse
import collections
import json
import os
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("model", help="an ONNX file (kdtool export M --output M.onnx)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    a = ap.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        sys.exit("ort_layers: %s (run it with the venv that tools/setup-peers creates)" % e)
    if not os.path.isfile(a.model):
        sys.exit("ort_layers: %s: not a file" % a.model)
    if a.batch < 1 or a.threads < 1 or a.runs < 1:
        sys.exit("ort_layers: --batch, --threads and --runs must be at least 1")
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "ort")
        s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
        inp = s.get_inputs()[0]
        shape = [a.batch] + [int(v) for v in inp.shape[1:]]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        warmup = 3
        for _ in range(warmup):
            s.run(None, {inp.name: x})
        t = time.perf_counter()
        for _ in range(a.runs):
            s.run(None, {inp.name: x})
        wall = (time.perf_counter() - t) / a.runs * 1000
        with open(s.end_profiling()) as f:
            events = json.load(f)
    total = collections.defaultdict(float)
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            total[name] += e["dur"]
            ops[name] = e.get("args", {}).get("op_name", "")
    passes = warmup + a.runs
    nodes = sorted(((n, ops[n], us / passes / 1000) for n, us in total.items()), key=lambda r: -r[2])
    if a.json:
        print(json.dumps({"model": a.model, "batch": a.batch, "threads": a.threads, "runs": a.runs,
                          "wall_ms_per_pass": wall,
                          "nodes": [{"node": n, "op": o, "ms": ms} for n, o, ms in nodes]}))
        return
    print("%s: batch %d, %d threads, %d passes: %.3f ms a pass (profiled), nodes %.3f ms" % (
        a.model, a.batch, a.threads, a.runs, wall, sum(r[2] for r in nodes)))
    for n, o, ms in nodes:
        print("  %-56s %-20s %8.3f" % (n, o, ms))


if __name__ == "__main__":
    main()
