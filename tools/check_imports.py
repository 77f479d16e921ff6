#!/usr/bin/env python3
"""Imports every ONNX file that tools/export_torchvision.py wrote with kdtool, runs it on the saved
input and compares with ONNX Runtime's saved output; then exports the bundle back to ONNX and
runs that in ONNX Runtime too. Prints one line per model and exits non-zero on any failure.

    python3 tools/check_imports.py DIR [--kdtool .build/release/kdtool] [--tolerance 1e-4]
"""
import argparse, glob, json, os, subprocess, sys
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--kdtool", default=".build/release/kdtool")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max |kdtool − ORT| / max |ORT|")
    ap.add_argument("--no-export", action="store_true")
    a = ap.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    failures = 0
    rows = []
    for f in sorted(glob.glob(os.path.join(a.dir, "*.onnx"))):
        if f.endswith(".kdtool.onnx"):
            continue
        stem = f[:-5]
        x, ref = np.load(stem + ".input.npy"), np.load(stem + ".output.npy")
        kdb, out = stem + ".kdb", stem + ".kdtool.npy"
        r = subprocess.run([a.kdtool, "import", f, "-o", kdb], capture_output=True, text=True)
        row = {"model": os.path.basename(stem), "import": r.returncode == 0}
        if r.returncode != 0:
            row["error"] = r.stderr.strip().splitlines()[-1][:300] if r.stderr.strip() else "exit %d" % r.returncode
        else:
            r = subprocess.run([a.kdtool, "run", kdb, "--input", stem + ".input.npy", "-o", out], capture_output=True, text=True)
            if r.returncode != 0:
                row["error"] = r.stderr.strip()[-300:]
            else:
                y = np.load(out)
                scale = float(np.abs(ref).max()) or 1.0
                row["run_rel_err"] = float(np.abs(y.reshape(ref.shape) - ref).max()) / scale
            if ort is not None and not a.no_export and "error" not in row:
                exported = stem + ".kdtool.onnx"
                r = subprocess.run([a.kdtool, "export", kdb, "-o", exported], capture_output=True, text=True)
                if r.returncode != 0:
                    row["error"] = "export: " + r.stderr.strip()[-300:]
                else:
                    sess = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
                    z = sess.run(None, {sess.get_inputs()[0].name: x})[0]
                    row["export_rel_err"] = float(np.abs(z.reshape(ref.shape) - ref).max()) / scale
        ok = "error" not in row and row.get("run_rel_err", 1) <= a.tolerance and row.get("export_rel_err", 0) <= a.tolerance
        failures += not ok
        row["ok"] = ok
        rows.append(row)
        print("%-34s %s  run %s  export %s  %s" % (row["model"], "ok  " if ok else "FAIL",
              "%.1e" % row["run_rel_err"] if "run_rel_err" in row else "-",
              "%.1e" % row["export_rel_err"] if "export_rel_err" in row else "-", row.get("error", "")), flush=True)
    with open(os.path.join(a.dir, "check.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    print("%d of %d pass" % (len(rows) - failures, len(rows)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
