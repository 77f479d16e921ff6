#!/usr/bin/env python3
"""Regenerates the current performance table at the top of docs/performance.md.

    tools/perf_table.py [--rounds 2] [--models lenet5,shufflenetv2x0.5,...] [--no-write]

--models measures only the rows named and prints them; the table in docs/performance.md is only
ever rewritten whole (without --models or --no-write).

With .build-avx2 (KDTOOL_PORTABLE=1 swift build -c release --scratch-path .build-avx2 --product
kdtool) the AVX2 build is measured as well, in the same rounds, as its own rows; on a CPU with
AVX-512 it runs OpenBLAS's Haswell kernels (OPENBLAS_CORETYPE=Haswell), its PyTorch peer runs on PyTorch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2,
ONEDNN_MAX_CPU_ISA=AVX2) and their ONNX Runtime under .build/peers/python-avx2 (tools/setup-peers;
Benchmarks/peers/avx2_cpuid.c hides AVX-512 from it), as both would run on a CPU without AVX-512.

For each model of the zoo it measures, on this machine, 2 threads, side by side:
  - training: kdtool's images/s over one epoch of `kdtool train` (batch 128, no augmentation,
    data decoding and batching included) against PyTorch's training step on the same architecture
    (Benchmarks/peers/torch_train_step.py, batch 128, random data: the peer's most favourable
    case), when .build/venv-torch exists (tools/setup-peers);
  - inference: `kdtool bench --compare-onnxruntime` at batch 1 (600 passes) and 64 (30 passes),
    ONNX Runtime on the exported model, timed in alternating rounds in the same process tree.
Rounds alternate kdtool and the peer; the table gives medians. Needs the release build
(swift build -c release) and .build/venv-onnx (tools/setup). Only the standard library is used.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KDTOOL = os.path.join(ROOT, ".build", "release", "kdtool")
# The AVX2-only build, measured too when it exists (KDTOOL_PORTABLE=1 swift build -c release
# --scratch-path .build-avx2 --product kdtool): many users' CPUs have no AVX-512.
KDTOOL_AVX2 = os.path.join(ROOT, ".build-avx2", "release", "kdtool")
TORCH = os.path.join(ROOT, ".build", "venv-torch", "bin", "python3")
# ONNX Runtime seeing the CPU without AVX-512 (tools/setup-peers builds it where the CPU has AVX-512).
PYTHON_AVX2 = os.path.join(ROOT, ".build", "peers", "python-avx2")
MNIST = os.path.join(ROOT, "data", "mnist")
CIFAR = os.path.join(ROOT, "..", "shared", "data", "cifar10", "cifar-10-binary-subset.tar.gz")
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"

MODELS = [  # (zoo name, init flags, data, PyTorch peer name, the peer's timed seconds)
    ("lenet5", ["--arch", "lenet5", "--input", "1x28x28"], MNIST, "lenet5", 3),
    ("mlp 800-800", ["--arch", "mlp", "--hidden", "800,800", "--input", "1x28x28"], MNIST, "mlp800", 3),
    ("resnet8", ["--arch", "resnet8", "--input", "1x28x28"], MNIST, "resnet8", 3),
    ("resnet20", ["--arch", "resnet20", "--input", "3x32x32"], CIFAR, "resnet20", 3),
    # The mobile students of docs/zoo.md, CIFAR stem; a PyTorch step of these takes 0.6–3.5 s, so
    # the peer is timed longer.
    ("mobilenetv2 ×1.0", ["--arch", "mobilenetv2", "--input", "3x32x32"], CIFAR, "mobilenetv2@1.0", 10),
    ("mobilenetv2 ×0.5", ["--arch", "mobilenetv2", "--width", "0.5", "--input", "3x32x32"], CIFAR, "mobilenetv2@0.5", 10),
    ("shufflenetv2 ×1.0", ["--arch", "shufflenetv2", "--input", "3x32x32"], CIFAR, "shufflenetv2@1.0", 10),
    ("shufflenetv2 ×0.5", ["--arch", "shufflenetv2", "--width", "0.5", "--input", "3x32x32"], CIFAR, "shufflenetv2@0.5", 10),
    ("efficientnet-lite0", ["--arch", "efficientnet-lite0", "--input", "3x32x32"], CIFAR, "efficientnet-lite0@1.0", 10),
]


def key(name):
    """A model's name on the command line: "shufflenetv2 ×0.5" → shufflenetv2x0.5, "mlp 800-800" → mlp."""
    return name.split(" ")[0] + (name.split(" ")[1].replace("×", "x") if "×" in name else "")


def run(cmd, env=None):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=None if env is None else dict(os.environ, **env))
    if r.returncode != 0:
        raise SystemExit("perf_table: %s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-400:]))
    return r.stdout


def cpu():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = " " + info.get("flags", "") + " "
    units = "AVX-512" if " avx512f " in flags else ("AVX2" if " avx2 " in flags else "no AVX2")
    return "%s (family %s, model %s), %d vCPUs, %s" % (
        info.get("model name", platform.processor() or "unknown CPU"), info.get("cpu family", "?"), info.get("model", "?"),
        os.cpu_count() or 0, units)


# OpenBLAS's own switch to its Haswell (AVX2) kernels, for kdtool's AVX2 build on a CPU with AVX-512: the
# system OpenBLAS picks its core from CPUID as ONNX Runtime does (kdtool calls it for linear layers and
# NCHW convolutions in training).
KDTOOL_AVX2_ENV = {"OPENBLAS_CORETYPE": "Haswell"}


def kdtool_env(kdtool):
    return KDTOOL_AVX2_ENV if kdtool == KDTOOL_AVX2 and "AVX-512" in cpu() else None


def kdtool_train(model, data, kdtool=KDTOOL):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "t.kdb")
        run([kdtool, "train", model, "--data", data, "--epochs", "1", "--batch", "128", "--augment", "none", "--threads", "2",
             "--quiet", "-o", out], kdtool_env(kdtool))
        doc = json.loads(run([kdtool, "inspect", out, "--json"]))
        return doc["provenance"]["metrics"]["images_per_second"]


# PyTorch's own switches to its AVX2 kernels (ATen's and oneDNN's), for the peer of kdtool's AVX2 build
# on a CPU with AVX-512: both then run what a CPU without AVX-512 would. ONNX Runtime has no such
# switch (its kernels are chosen from CPUID); PYTHON_AVX2 hides AVX-512 from it.
TORCH_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def torch_train(name, seconds, env=None):
    if not os.path.exists(TORCH):
        return None
    out = run([TORCH, os.path.join(ROOT, "Benchmarks", "peers", "torch_train_step.py"), name, "--threads", "2", "--seconds",
               str(seconds)], env)
    return json.loads(out.strip().splitlines()[-1])["images_per_second"]


# Timed passes per batch size: about a second of each side at batch 1 (30 passes of a 1.5 ms model
# were 45 ms, and a cell swung by 10 % or more between tables), a few at batch 64.
BENCH_RUNS = {1: 600, 64: 30}


def bench(model, kdtool=KDTOOL, python=None):
    out = {}
    for batch, runs in BENCH_RUNS.items():
        doc = json.loads(run([kdtool, "bench", model, "--batch", str(batch), "--threads", "2", "--runs", str(runs),
                              "--compare-onnxruntime", "--json"] + (["--python", python] if python else []), kdtool_env(kdtool)))
        out.update({b["batch"]: (b["images_per_second"], b.get("onnxruntime_images_per_second")) for b in doc["batches"]})
    return out


def main(argv):
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 2
    chosen = argv[argv.index("--models") + 1].split(",") if "--models" in argv else [key(m[0]) for m in MODELS]
    unknown = set(chosen) - {key(m[0]) for m in MODELS}
    if unknown:
        raise SystemExit("perf_table: unknown models %s (known: %s)" % (
            ", ".join(sorted(unknown)), ", ".join(key(m[0]) for m in MODELS)))
    if not os.path.exists(KDTOOL):
        raise SystemExit("perf_table: build first: swift build -c release")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, flags, data, peer, seconds in MODELS:
            if key(name) not in chosen:
                continue
            if not os.path.exists(data):
                print("perf_table: %s skipped (%s is not there)" % (name, data), file=sys.stderr)
                continue
            model = os.path.join(d, key(name) + ".kdb")
            run([KDTOOL, "init", "--classes", "10", "-o", model] + flags)
            builds = [("AVX-512" if "AVX-512" in cpu() else "AVX2", KDTOOL)]
            if os.path.exists(KDTOOL_AVX2) and "AVX-512" in cpu():
                if not os.path.exists(PYTHON_AVX2):
                    raise SystemExit("perf_table: the AVX2 rows need their peer: tools/setup-peers (it writes %s)" % PYTHON_AVX2)
                builds.append(("AVX2", KDTOOL_AVX2))
            ours = {b: [] for b, _ in builds}
            inf = {b: [] for b, _ in builds}
            theirs = {b: [] for b, _ in builds}
            for _ in range(rounds):  # kdtool's builds and the peers alternate, so drift hits them alike
                for b, exe in builds:
                    ours[b].append(kdtool_train(model, data, exe))
                    # The AVX2 build's peer is PyTorch on its AVX2 kernels where the CPU has more.
                    t = torch_train(peer, seconds, TORCH_AVX2 if b == "AVX2" and "AVX-512" in cpu() else None)
                    if t:
                        theirs[b].append(t)
                for b, exe in builds:
                    inf[b].append(bench(model, exe, PYTHON_AVX2 if b == "AVX2" and "AVX-512" in cpu() else None))
            med = statistics.median
            for b, _ in builds:
                row = {"model": name, "build": b, "train": med(ours[b]), "torch": med(theirs[b]) if theirs[b] else None}
                for n_ in (1, 64):
                    row["infer%d" % n_] = med([x[n_][0] for x in inf[b]])
                    ort = [x[n_][1] for x in inf[b] if x[n_][1]]
                    row["ort%d" % n_] = med(ort) if ort else None
                rows.append(row)
            print("perf_table: %s done" % name, file=sys.stderr)

    def n(v):
        return "—" if v is None else "{:,.0f}".format(v)

    def ratio(a, b):
        return "—" if not a or not b else "×%.2f" % (a / b)

    lines = [
        BEGIN,
        "**Current figures** — %s, 2 threads, %s, medians of %d alternating rounds. Regenerate with "
        "`swift build -c release && tools/setup-peers && tools/perf_table.py` (this table is written by it)." % (
            cpu(), time.strftime("%Y-%m-%d"), rounds),
        "",
        "| model | kdtool build | train img/s kdtool | PyTorch | kdtool ÷ PyTorch | infer b1 kdtool | ORT | ÷ ORT | infer b64 kdtool | ORT | ÷ ORT |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["model"], r["build"], n(r["train"]), n(r["torch"]), ratio(r["train"], r["torch"]), n(r["infer1"]), n(r["ort1"]),
            ratio(r["infer1"], r["ort1"]), n(r["infer64"]), n(r["ort64"]), ratio(r["infer64"], r["ort64"])))
    lines += [
        "",
        "Training: kdtool's figure is a whole epoch of `kdtool train` on the committed MNIST images (resnet20 and the mobile "
        "students, CIFAR stem: the CIFAR-10 subset in `../shared`), batch 128, data decoding and batching included; PyTorch's is its training step alone on "
        "random tensors (`Benchmarks/peers/torch_train_step.py`, `torch.set_num_threads(2)`). Inference: `kdtool bench "
        "--compare-onnxruntime` (600 passes at batch 1, 30 at batch 64), ONNX Runtime on the exported model with 2 intra-op threads. The peers run on the same "
        "CPU with their own kernels (PyTorch's and ONNX Runtime's AVX-512 paths where the CPU has them); the AVX2 rows "
        "are kdtool compiled for AVX2 + FMA only, with OpenBLAS on its Haswell kernels (`OPENBLAS_CORETYPE=Haswell`), as on a CPU "
        "without AVX-512. Their PyTorch is PyTorch on its AVX2 kernels "
        "too (`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`, as PyTorch runs on such a CPU), and so is their ONNX "
        "Runtime (`--python .build/peers/python-avx2`: `Benchmarks/peers/avx2_cpuid.c` hides AVX-512 from it through the "
        "kernel's CPUID faulting). Batch 1 on two threads: `kdtool bench` first lets the layers "
        "that split slower run on one thread (`InferencePlan.tuneThreads`).",
        END,
    ]
    table = "\n".join(lines)
    print(table)
    if "--no-write" not in argv and "--models" not in argv:
        with open(DOC) as f:
            text = f.read()
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + table + text[text.index(END) + len(END):]
        else:
            head, _, rest = text.partition("\n")
            text = head + "\n\n" + table + "\n\n" + rest.lstrip("\n")
        with open(DOC + ".tmp", "w") as f:
            f.write(text)
        os.replace(DOC + ".tmp", DOC)
        print("perf_table: wrote the table into docs/performance.md", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
