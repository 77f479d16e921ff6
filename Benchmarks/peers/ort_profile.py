#!/usr/bin/env python3
"""Per-node times of ONNX Runtime on an exported model, to set beside the per-layer table of
`kdtool bench` (same batch and threads):

    kdtool export MODEL.kdb -o MODEL.onnx --dynamic-batch
    ort_profile.py MODEL.onnx --batch 64 --threads 1 [--runs 60] [--json]

ONNX Runtime's profiler records every node of every run; the first fifth of the runs are
dropped as warm-up and each node's median is printed, largest first, with their sum. ONNX
Runtime fuses batch norm and ReLU into the convolution, so a node named `...bn2_nchwc` or
`...relu1_nchwc` is that convolution (NCHWc: its blocked layout).
"""
import argparse
import collections
import json
import os
import statistics
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--json", action="store_true", help="one JSON object: node -> median ms")
    args = ap.parse_args()
    if args.runs < 5:
        sys.exit("ort_profile.py: --runs must be at least 5")

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    folder = tempfile.mkdtemp(prefix="ort-profile-")
    so.profile_file_prefix = os.path.join(folder, "profile")
    try:
        session = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        os.rmdir(folder)
        sys.exit(f"ort_profile.py: {args.model}: {e}")
    inp = session.get_inputs()[0]
    if not isinstance(inp.shape[0], str) and inp.shape[0] != args.batch:
        os.remove(session.end_profiling())
        os.rmdir(folder)
        sys.exit(f"ort_profile.py: {args.model}: batch fixed at {inp.shape[0]}; export with --dynamic-batch")
    x = np.random.default_rng(0).random([args.batch] + list(inp.shape[1:]), dtype=np.float32)
    for _ in range(args.runs):
        session.run(None, {inp.name: x})
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    os.rmdir(folder)

    times = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1000)
    skip = args.runs // 5
    medians = {k: statistics.median(v[skip:] or v) for k, v in times.items()}
    if args.json:
        print(json.dumps(medians))
        return
    width = max(len(k) for k in medians)
    for k, ms in sorted(medians.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<{width}}  {ms:8.3f}")
    print(f"  {'sum':<{width}}  {sum(medians.values()):8.3f} ms (medians of {args.runs - skip} runs, batch {args.batch}, {args.threads} threads)")


if __name__ == "__main__":
    main()
