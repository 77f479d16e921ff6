#!/usr/bin/env python3
"""Data-parallel training on this machine, and a scaling model from it (docs/distributed.md).

For each model, one epoch three ways, in alternating rounds (--repeat), all in the same run:
  A  1 rank  x 2 threads   (kdtool train)
  B  2 ranks x 1 thread    (mpirun -np 2 kdtool train --threads 1), gradients summed in buckets during backward
  C  2 ranks x 1 thread    the same with --bucket-kb 0: one sum after backward (nothing overlapped)
and the ring allreduce's latency and bandwidth between the ranks (mpirun -np 2 kdtool bench --allreduce).
From the per-step compute time, gradient bytes and link figures, it models a step on N nodes
(global batch fixed) for the loopback link and two stated datacentre links.

    python3 Benchmarks/distributed.py                       # resnet20 (CIFAR subset), mlp800 (MNIST), mobilenetv2 x0.5
    python3 Benchmarks/distributed.py --models mlp800 --epochs 2

Standard library only. Needs Open MPI (tools/setup --mpi) and a release build.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", "2"]

MODELS = {
    "resnet20": (["--arch", "resnet20", "--classes", "10", "--input", "3x32x32"], "cifar"),
    "mlp800": (["--arch", "mlp", "--hidden", "800,800", "--classes", "10", "--input", "1x28x28"], "mnist"),
    "mobilenetv2x0.5": (["--arch", "mobilenetv2", "--width", "0.5", "--classes", "10", "--input", "3x32x32"], "cifar"),
}

# Stated links for the model (not measured here): latency per message and bytes per second.
LINKS = {
    "25 GbE (TCP)": (25e-6, 25e9 / 8 * 0.9),
    "100 Gb/s InfiniBand (RDMA)": (2e-6, 100e9 / 8 * 0.9),
}


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r


def last_metrics(path):
    with open(path) as f:
        return json.loads(f.read().strip().split("\n")[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kdtool", default=os.path.join(ROOT, ".build", "release", "kdtool"))
    ap.add_argument("--cifar", default=os.path.join(ROOT, "..", "shared", "data", "cifar10", "cifar-10-binary-subset.tar.gz"))
    ap.add_argument("--mnist", default=os.path.join(ROOT, "data", "mnist"))
    ap.add_argument("--models", default="resnet20,mlp800,mobilenetv2x0.5")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of A, B, C in turn; the median of each is reported")
    ap.add_argument("--json", default=os.path.join(ROOT, ".build", "distributed.json"))
    a = ap.parse_args()
    k = a.kdtool
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    avx512 = "avx512f" in lscpu
    model_name = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
    print(f"CPU: {model_name}, {'AVX-512' if avx512 else 'AVX2 only'}; kdtool {k}")
    results = {"cpu": model_name, "avx512": avx512, "models": {}}
    work = tempfile.mkdtemp(prefix="kdtool-distributed-")
    for name in a.models.split(","):
        init, data = MODELS[name]
        data_path = a.cifar if data == "cifar" else a.mnist
        m = os.path.join(work, name + ".kdb")
        run([k, "init"] + init + ["--seed", "1", "-o", m])
        common = ["train", m, "--data", data_path, "--epochs", str(a.epochs), "--batch", str(a.batch), "--augment", "none", "--quiet"]
        rows = {}
        rounds = {}
        for label, cmd in [
            ("A 1x2", [k] + common + ["--threads", "2", "-o", os.path.join(work, name + "-a.kdb")]),
            ("B 2x1 buckets", MPI + [k] + common + ["--threads", "1", "--bucket-kb", "256", "-o", os.path.join(work, name + "-b.kdb")]),
            ("C 2x1 one sum", MPI + [k] + common + ["--threads", "1", "--bucket-kb", "0", "-o", os.path.join(work, name + "-c.kdb")]),
        ] * a.repeat:
            run(cmd)
            out = cmd[cmd.index("-o") + 1]
            mt = last_metrics(out[:-4] + ".metrics.jsonl")
            steps = mt["step"] / a.epochs  # the figures in a metrics line are its epoch's
            per = lambda key: mt.get(key, 0.0) / steps * 1e3
            rounds.setdefault(label, []).append({
                "images_per_second": mt["images_per_second"], "step_ms": mt["seconds"] / steps * 1e3,
                "compute_ms": per("compute_seconds"), "allreduce_ms": per("allreduce_seconds"),
                "exposed_ms": per("allreduce_wait_seconds") if "allreduce_wait_seconds" in mt else per("allreduce_seconds"),
                "bytes_per_step": mt.get("allreduce_bytes_per_step", 0), "steps": steps, "eval": mt.get("eval_accuracy"),
            })
        for label, rs in rounds.items():
            # The round with the median step time, so the figures of a row belong together.
            rows[label] = sorted(rs, key=lambda r: r["step_ms"])[len(rs) // 2]
            rows[label]["img_per_s_all"] = [round(r["images_per_second"]) for r in rs]
        bench = json.loads(run(MPI + [k, "bench", m, "--allreduce", "--json"]).stdout)
        results["models"][name] = {"runs": rows, "rounds": rounds, "allreduce": bench}
        print(f"\n{name}: {bench['gradient_bytes']:,} bytes of gradients; loopback ring allreduce "
              f"{bench['gradient_allreduce_seconds'] * 1e3:.3f} ms (alpha {bench['alpha_seconds'] * 1e6:.1f} us, "
              f"{1 / bench['beta_seconds_per_byte'] / 1e9:.2f} GB/s)")
        print(f"  {'run':<16}{'img/s':>9}{'step ms':>9}{'compute':>9}{'allreduce':>10}{'not hidden':>11}{'bytes/step':>12}")
        for label, r in rows.items():
            print(f"  {label:<16}{r['images_per_second']:>9.0f}{r['step_ms']:>9.2f}{r['compute_ms']:>9.2f}"
                  f"{r['allreduce_ms']:>10.2f}{r['exposed_ms']:>11.2f}{r['bytes_per_step']:>12,.0f}   img/s per round {r['img_per_s_all']}")
        # The scaling model: a node is this machine (2 cores); the global batch stays a.batch (and 8x that).
        node_step = rows["A 1x2"]["step_ms"] / 1e3
        per_image = node_step / a.batch
        backward_share = 2 / 3  # backward is about two thirds of a training step's compute
        S = bench["gradient_bytes"]
        links = {"loopback (measured)": (bench["alpha_seconds"], 1 / bench["beta_seconds_per_byte"])}
        links.update(LINKS)
        model = {}
        limits = {}

        def point(N, B, alpha, bw, size):
            compute = per_image * B / N
            comm = 0.0 if N == 1 else 2 * (N - 1) * alpha + 2 * (N - 1) / N * size / bw
            exposed = max(0.0, comm - backward_share * compute)  # buckets hide comm behind backward
            step = compute + exposed
            return {"N": N, "compute_ms": compute * 1e3, "comm_ms": comm * 1e3, "step_ms": step * 1e3,
                    "speedup": per_image * B / step, "efficiency": per_image * B / step / N}

        for link, (alpha, bw) in links.items():
            for B in (a.batch, 8 * a.batch):
                for fp16 in (False, True):
                    size = S / 2 if fp16 else S
                    key = f"{link} | batch {B}{' | fp16 grads' if fp16 else ''}"
                    model[key] = [point(N, B, alpha, bw, size) for N in (1, 2, 8, 64, 512)]
                    # Where it stops scaling: the first N whose efficiency falls below 50 %, or where a
                    # node's share of the batch falls below 8 images (kernels lose their efficiency).
                    n50 = next((N for N in range(2, 4097) if point(N, B, alpha, bw, size)["efficiency"] < 0.5), None)
                    limits[key] = {"efficiency_below_half_at": n50, "per_node_batch_below_8_at": B // 8 + 1}
        results["models"][name]["model"] = model
        results["models"][name]["limits"] = limits
        print(f"  scaling model (node = this machine; global batch fixed; comm hidden behind backward up to 2/3 of compute):")
        print(f"  {'link | global batch':<52}" + "".join(f"{'N=' + str(n):>16}" for n in (8, 64, 512)))
        for key, line in model.items():
            cells = "".join(f"{l['speedup']:>8.1f}x {100 * l['efficiency']:>4.0f}%" for l in line if l["N"] in (8, 64, 512))
            lim = limits[key]
            stop = lim["efficiency_below_half_at"]
            print(f"  {key:<52}{cells}   < 50 % from N = {stop if stop else '> 4096'}; batch/node < 8 from N = {lim['per_node_batch_below_8_at']}")
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
