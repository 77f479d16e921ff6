#!/usr/bin/env python3
"""Golden values for every op of the engine, from an independent numpy implementation.

Forward passes are written directly from the op definitions (Spec/bundle-format.md §7.2,
METHODS.md for the losses) in float64; gradients come from central finite differences of
L = sum(y * dy) in float64, so they do not share a derivation with the Swift backward rules.
Written once and committed:

    tools/gen_golden.py --opset2   # only the op-set-2 cases, injected into ops.json
    tools/gen_golden.py            # -> Tests/KDTensorTests/Golden/ops.json, KDDistillTests/Golden/losses.json,
                                   #    KDQuantTests/Golden/quant.json
"""
import json
import os
import sys

import numpy as np

R = np.random.default_rng(2024)


def rnd(*shape):
    return R.standard_normal(shape)


# --- forward definitions (float64) ------------------------------------------------------

def out_size(n, k, s, p0, p1, d, ceil):
    span = n + p0 + p1 - d * (k - 1) - 1
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + p0:
        o -= 1
    return o


def conv2d(x, w, b, stride, pads, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = out_size(h, kh, stride[0], pads[0], pads[2], dilation[0], False)
    wo = out_size(wd, kw, stride[1], pads[1], pads[3], dilation[1], False)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2] + kh * dilation[0]), (pads[1], pads[3] + kw * dilation[1])))
    y = np.zeros((n, o, ho, wo))
    og = o // groups
    for g in range(groups):
        for ki in range(kh):
            for kj in range(kw):
                i0, j0 = ki * dilation[0], kj * dilation[1]
                patch = xp[:, g * cg:(g + 1) * cg, i0:i0 + stride[0] * ho:stride[0], j0:j0 + stride[1] * wo:stride[1]]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, ki, kj])
    if b is not None:
        y += b[None, :, None, None]
    return y


def pool(x, kernel, stride, pads, ceil, mode, dilation=(1, 1), count_include_pad=False):
    n, c, h, w = x.shape
    ho = out_size(h, kernel[0], stride[0], pads[0], pads[2], dilation[0], ceil)
    wo = out_size(w, kernel[1], stride[1], pads[1], pads[3], dilation[1], ceil)
    y = np.zeros((n, c, ho, wo))
    for oi in range(ho):
        for oj in range(wo):
            hs, ws = oi * stride[0] - pads[0], oj * stride[1] - pads[1]
            if mode == "max":
                vals = [x[:, :, hs + a * dilation[0], ws + b * dilation[1]] for a in range(kernel[0]) for b in range(kernel[1])
                        if 0 <= hs + a * dilation[0] < h and 0 <= ws + b * dilation[1] < w]
                y[:, :, oi, oj] = np.max(np.stack(vals), axis=0)
            else:
                he, we = min(hs + kernel[0], h + pads[2]), min(ws + kernel[1], w + pads[3])
                area = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                div = area if count_include_pad else (he - hs) * (we - ws)
                y[:, :, oi, oj] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / div
    return y


def batchnorm_train(x, gamma, beta, eps):
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    return gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) + beta.reshape(shape)


def softmax(z, t=1.0):
    e = np.exp((z - z.max(axis=-1, keepdims=True)) / t)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z, t=1.0):
    s = (z - z.max(axis=-1, keepdims=True)) / t
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def split_linear(x, ws, bs, in_splits, shared):
    outs, off = [], 0
    f = x.shape[1]
    for w, b, s in zip(ws, bs, in_splits):
        xk = np.concatenate([x[:, off:off + s], x[:, f - shared:]], axis=1)
        outs.append(xk @ w.T + b)
        off += s
    return np.concatenate(outs, axis=1)


def l2norm_scale(x, gamma, groups, eps):
    outs, off = [], 0
    for g, size in enumerate(groups):
        xg = x[:, off:off + size]
        # one gamma per group, or (class-level) one per feature
        scale = gamma[off:off + size] if len(gamma) == x.shape[1] and len(gamma) != len(groups) else gamma[g]
        if size == 1:
            outs.append(xg)
        else:
            outs.append(scale * xg / np.maximum(np.linalg.norm(xg, axis=1, keepdims=True), eps))
        off += size
    return np.concatenate(outs, axis=1)


# --- finite differences -------------------------------------------------------------------

def numeric_grads(f, inputs, dy, wrt):
    grads = {}
    for name in wrt:
        x = inputs[name]
        g = np.zeros_like(x)
        it = np.nditer(x, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            old = x[i]
            x[i] = old + 1e-6
            fp = np.sum(f(**inputs) * dy)
            x[i] = old - 1e-6
            fm = np.sum(f(**inputs) * dy)
            x[i] = old
            g[i] = (fp - fm) / 2e-6
        grads[name] = g
    return grads


def case(name, op, f, inputs, attrs, wrt, dy_shape=None):
    y = f(**inputs)
    dy = rnd(*y.shape) if dy_shape is None else rnd(*dy_shape)
    grads = numeric_grads(f, inputs, dy, wrt)
    enc = lambda a: {"shape": list(a.shape), "values": [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]}
    return {"name": name, "op": op, "attrs": attrs, "inputs": {k: enc(v) for k, v in inputs.items()},
            "output": enc(y), "dy": enc(dy), "grads": {k: enc(v) for k, v in grads.items()}}


def main():
    cases = []
    for (name, stride, pads, dil, groups, bias) in [
            ("conv2d-basic", (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
            ("conv2d-stride2-pad", (2, 2), (1, 1, 1, 1), (1, 1), 1, True),
            ("conv2d-asym-pad-dilation-groups", (1, 2), (2, 0, 1, 1), (2, 1), 2, False),
            ("conv2d-pointwise", (1, 1), (0, 0, 0, 0), (1, 1), 1, False)]:
        k = 1 if name.endswith("pointwise") else 3
        x, w = rnd(2, 4, 7, 6), rnd(6, 4 // groups, k, k)
        inputs = {"x": x, "w": w}
        if bias:
            inputs["b"] = rnd(6)
        f = (lambda x, w, b=None, s=stride, p=pads, d=dil, g=groups: conv2d(x, w, b, s, p, d, g))
        cases.append(case(name, "conv2d", f, inputs, {"stride": list(stride), "pads": list(pads), "dilation": list(dil),
                                                       "groups": groups}, list(inputs)))
    cases.append(case("linear", "linear", lambda x, w, b: x @ w.T + b, {"x": rnd(5, 7), "w": rnd(3, 7), "b": rnd(3)}, {},
                      ["x", "w", "b"]))
    for name, k, s, p, ceil, dil in [("maxpool-2x2", (2, 2), (2, 2), (0, 0, 0, 0), False, (1, 1)),
                                     ("maxpool-3x3-pad-ceil", (3, 3), (2, 2), (1, 1, 1, 1), True, (1, 1)),
                                     ("maxpool-dilated", (2, 2), (1, 1), (0, 0, 0, 0), False, (2, 2))]:
        cases.append(case(name, "maxpool", lambda x, k=k, s=s, p=p, c=ceil, d=dil: pool(x, k, s, p, c, "max", d),
                          {"x": rnd(2, 3, 7, 7)}, {"kernel": list(k), "stride": list(s), "pads": list(p),
                                                   "ceil_mode": ceil, "dilation": list(dil)}, ["x"]))
    for name, cip, ceil in [("avgpool-excl-pad", False, False), ("avgpool-incl-pad-ceil", True, True)]:
        cases.append(case(name, "avgpool", lambda x, c=cip, ce=ceil: pool(x, (3, 3), (2, 2), (1, 1, 1, 1), ce, "avg",
                                                                               count_include_pad=c),
                          {"x": rnd(2, 3, 6, 6)}, {"kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1],
                                                   "ceil_mode": ceil, "count_include_pad": cip}, ["x"]))
    cases.append(case("globalavgpool", "globalavgpool", lambda x: x.mean(axis=(2, 3), keepdims=True),
                      {"x": rnd(2, 3, 4, 5)}, {}, ["x"]))
    cases.append(case("batchnorm-train-nchw", "batchnorm", lambda x, g, b: batchnorm_train(x, g, b, 1e-5),
                      {"x": rnd(4, 3, 3, 3), "g": rnd(3), "b": rnd(3)}, {"epsilon": 1e-5}, ["x", "g", "b"]))
    cases.append(case("batchnorm-train-nc", "batchnorm", lambda x, g, b: batchnorm_train(x, g, b, 1e-5),
                      {"x": rnd(6, 4), "g": rnd(4), "b": rnd(4)}, {"epsilon": 1e-5}, ["x", "g", "b"]))
    x = rnd(3, 8)
    x[np.abs(x) < 0.05] = 0.3  # keep inputs away from the kink at 0
    cases.append(case("relu", "relu", lambda x: np.maximum(x, 0), {"x": x}, {}, ["x"]))
    cases.append(case("sigmoid", "sigmoid", lambda x: 1 / (1 + np.exp(-x)), {"x": rnd(3, 8) * 3}, {}, ["x"]))
    cases.append(case("softmax", "softmax", lambda x: softmax(x), {"x": rnd(4, 6) * 2}, {}, ["x"]))
    cases.append(case("add", "add", lambda a, b: a + b, {"a": rnd(2, 3, 4), "b": rnd(2, 3, 4)}, {}, ["a", "b"]))
    cases.append(case("concat-axis1", "concat", lambda a, b: np.concatenate([a, b], axis=1),
                      {"a": rnd(2, 3, 2, 2), "b": rnd(2, 5, 2, 2)}, {"axis": 1}, ["a", "b"]))
    ws, bs = [rnd(2, 3 + 2), rnd(4, 4 + 2)], [rnd(2), rnd(4)]
    cases.append(case("split_linear-shared", "split_linear",
                      lambda x, w0, b0, w1, b1: split_linear(x, [w0, w1], [b0, b1], [3, 4], 2),
                      {"x": rnd(3, 9), "w0": ws[0], "b0": bs[0], "w1": ws[1], "b1": bs[1]},
                      {"in_splits": [3, 4], "shared": 2}, ["x", "w0", "b0", "w1", "b1"]))
    cases.append(case("l2norm_scale", "l2norm_scale", lambda x, gamma: l2norm_scale(x, gamma, [3, 1, 4], 1e-6),
                      {"x": rnd(4, 8), "gamma": np.abs(rnd(3)) + 0.5}, {"groups": [3, 1, 4], "epsilon": 1e-6},
                      ["x", "gamma"]))
    labels = np.array([1, 0, 4, 2])

    def ce(z):
        return np.array(-log_softmax(z)[np.arange(4), labels].mean())

    c = case("cross_entropy", "cross_entropy", lambda z: ce(z), {"z": rnd(4, 5) * 2}, {"labels": labels.tolist()}, ["z"],
             dy_shape=())
    cases.append(c)
    q = softmax(rnd(4, 5), 1.0)
    for t in (1.0, 4.0):
        cases.append(case("soft_cross_entropy-T%g" % t, "soft_cross_entropy",
                          lambda z, t=t: np.array(-(q * log_softmax(z, t)).sum(axis=1).mean()),
                          {"z": rnd(4, 5) * 2}, {"temperature": t, "targets": [float(v) for v in q.ravel()]}, ["z"],
                          dy_shape=()))
    write_losses()
    cases.append(case("l2norm_scale-per-feature", "l2norm_scale", lambda x, gamma: l2norm_scale(x, gamma, [3, 1, 4], 1e-6),
                      {"x": rnd(4, 8), "gamma": np.abs(rnd(8)) + 0.5}, {"groups": [3, 1, 4], "epsilon": 1e-6},
                      ["x", "gamma"]))
    out = os.path.join(os.path.dirname(__file__), "..", "Tests", "KDTensorTests", "Golden", "ops.json")
    if len(sys.argv) > 1:
        out = sys.argv[1]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"generator": "tools/gen_golden.py", "cases": cases}, fh, separators=(",", ":"))
    print("wrote %d cases to %s (%d bytes)" % (len(cases), out, os.path.getsize(out)))
    write_quant()


def hinton(z, teachers, labels, t, alpha):
    """METHODS.md §1: (1 − α)·CE(y, softmax(z)) + α·T²·KL(p_T ‖ softmax(z/T)), p_T the mean of the
    teachers' softmax at T; labels None means α = 1."""
    p = np.mean([softmax(tz, t) for tz in teachers], axis=0)
    kl = np.sum(p * (np.log(p) - log_softmax(z, t)), axis=1).mean()
    a = 1.0 if labels is None else alpha
    hard = 0.0 if labels is None else -log_softmax(z)[np.arange(len(labels)), labels].mean()
    return np.array((1 - a) * hard + a * t * t * kl)


def dml_loss(z, labels, others, ensemble):
    """METHODS.md §4: CE(y, p_k) + 1/(K−1) Σ_{l≠k} KL(p_l ‖ p_k); DML_e: KL(mean_l p_l ‖ p_k)."""
    targets = [np.mean(others, axis=0)] if ensemble else others
    ce = -log_softmax(z)[np.arange(len(labels)), labels].mean()
    kl = np.mean([np.sum(p * (np.log(p) - log_softmax(z)), axis=1).mean() for p in targets])
    return np.array(ce + kl)


def write_losses():
    """Golden values for the distillation losses: Tests/KDDistillTests/Golden/losses.json."""
    cases = []
    labels = np.array([2, 0, 1, 4, 3, 2])
    for name, t, alpha, k_teachers, use_labels in [("kd-T4-a0.9", 4.0, 0.9, 1, True), ("kd-T1-a0.5", 1.0, 0.5, 1, True),
                                                  ("kd-T20-two-teachers", 20.0, 0.9, 2, True),
                                                  ("kd-T4-no-labels", 4.0, 0.9, 1, False)]:
        z = rnd(6, 5) * 2
        teachers = [rnd(6, 5) * 3 for _ in range(k_teachers)]
        lab = labels if use_labels else None
        f = lambda z: hinton(z, teachers, lab, t, alpha)
        g = numeric_grads(lambda z: f(z), {"z": z}, np.array(1.0), ["z"])["z"]
        enc = lambda a: {"shape": list(np.shape(a)), "values": [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]}
        cases.append({"name": name, "temperature": t, "alpha": alpha, "labels": labels.tolist() if use_labels else None,
                      "student": enc(z), "teachers": [enc(x) for x in teachers], "loss": float(f(z)), "grad": enc(g)})
    dml = []
    for name, k_others, ensemble in [("dml-K2", 1, False), ("dml-K4", 3, False), ("dml-e-K4", 3, True)]:
        z = rnd(6, 5) * 2
        others = [softmax(rnd(6, 5) * 2) for _ in range(k_others)]
        f = lambda z, others=others, ensemble=ensemble: dml_loss(z, labels, others, ensemble)
        g = numeric_grads(lambda z: f(z), {"z": z}, np.array(1.0), ["z"])["z"]
        enc = lambda a: {"shape": list(np.shape(a)), "values": [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]}
        dml.append({"name": name, "ensemble": ensemble, "labels": labels.tolist(), "logits": enc(z),
                    "others": [enc(o) for o in others], "loss": float(f(z)), "grad": enc(g)})
    fsp = []
    for name, s1, s2, pairs in [("fsp-same-size", (2, 3, 4, 4), (2, 5, 4, 4), 1), ("fsp-pooled-first", (2, 3, 4, 4), (2, 4, 2, 2), 1),
                                 ("fsp-two-pairs", (2, 2, 6, 6), (2, 3, 3, 3), 2)]:
        f1 = rnd(*s1)
        f2 = rnd(*s2)
        teachers = [rnd(s1[0], s1[1], s2[1]) for _ in range(pairs)]
        # pair 1: (f1, f2); pair 2 (when present): (f2, f2)
        def total(f1, f2, teachers=teachers, pairs=pairs):
            gs = [fsp_matrix(f1, f2)] + ([fsp_matrix(f2, f2)] if pairs == 2 else [])
            return np.array(fsp_loss(gs, teachers if pairs == 1 else [teachers[0], rnd_fixed(teachers[1], s2[1])]))
        gr = numeric_grads(lambda f1, f2: total(f1, f2), {"f1": f1, "f2": f2}, np.array(1.0), ["f1", "f2"])
        enc = lambda a: {"shape": list(np.shape(a)), "values": [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]}
        tmats = teachers if pairs == 1 else [teachers[0], rnd_fixed(teachers[1], s2[1])]
        fsp.append({"name": name, "f1": enc(f1), "f2": enc(f2), "pairs": pairs,
                    "student_matrices": [enc(fsp_matrix(f1, f2))] + ([enc(fsp_matrix(f2, f2))] if pairs == 2 else []),
                    "teacher": [enc(t) for t in tmats], "loss": float(total(f1, f2)), "grad_f1": enc(gr["f1"]),
                    "grad_f2": enc(gr["f2"])})
    out = os.path.join(os.path.dirname(__file__), "..", "Tests", "KDDistillTests", "Golden", "losses.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"generator": "tools/gen_golden.py", "cases": cases, "dml": dml, "fsp": fsp, "kc": kc_cases(),
                   "specialists": specialist_cases(), "fitnets": fitnets_cases()}, fh, separators=(",", ":"))
    print("wrote %d KD, %d DML and %d FSP loss cases and the KC/specialist cases to %s" % (len(cases), len(dml), len(fsp), out))


def fitnets_cases():
    """FitNets (Romero et al.): the hint loss in the paper's form, ½‖u − r‖² per example averaged over
    the batch, and ours, divided by the hint's element count D (same minimiser and gradient direction);
    the stage-2 loss CE(y, P_S) + λ·CE(P_T^τ, P_S^τ) (no τ² factor, as in the paper) at three points
    of its λ schedule, λ going linearly from 4 to 1 over the run's steps. Its own generator, so the
    other golden values do not move."""
    g = np.random.default_rng(77)
    enc = lambda a: {"shape": list(np.shape(a)), "values": [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]}
    r = g.standard_normal((2, 3, 2, 2))
    u = g.standard_normal((2, 3, 2, 2))
    n, d = r.shape[0], int(np.prod(r.shape[1:]))
    paper = float(np.mean([0.5 * np.sum((u[i] - r[i]) ** 2) for i in range(n)]))
    hint = {"regressed": enc(r), "hint": enc(u), "paper_loss": paper, "loss": paper / d, "grad": enc((r - u) / (n * d))}
    z = g.standard_normal((4, 5)) * 2
    zt = g.standard_normal((4, 5)) * 3
    labels = np.array([1, 0, 4, 2])
    tau, total = 3.0, 5
    schedule = [4 + (1 - 4) * step / (total - 1) for step in range(total)]

    def stage2(z, lam):
        p_s = softmax(z)
        ce = -np.mean(np.log(p_s[np.arange(len(labels)), labels]))
        soft = -np.mean(np.sum(softmax(zt, tau) * log_softmax(z, tau), axis=1))
        return np.array(ce + lam * soft)

    steps = []
    for step in (0, 2, 4):
        lam = schedule[step]
        gz = numeric_grads(lambda z: stage2(z, lam), {"z": z}, np.array(1.0), ["z"])["z"]
        steps.append({"step": step, "lambda": lam, "loss": float(stage2(z, lam)), "grad": enc(gz)})
    return {"hint": hint, "stage2": {"student": enc(z), "teacher": enc(zt), "labels": labels.tolist(), "tau": tau,
                                     "total_steps": total, "lambda_schedule": schedule, "steps": steps}}


def enc64(a):
    return {"shape": list(np.shape(a)), "values": [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]}


def sigmoid_ce(z, t):
    """METHODS.md §5: mean over the batch of Σ_k −t log σ(z) − (1 − t) log(1 − σ(z))."""
    s = 1 / (1 + np.exp(-z))
    return np.array(np.sum(-t * np.log(s) - (1 - t) * np.log(1 - s)) / z.shape[0])


def kc_targets(p, vertical, k, classes):
    """The owning teacher's probabilities, zero outside its vertical and below its top-K."""
    row = np.zeros(classes)
    keep = np.argsort(-np.asarray(p), kind="stable")[:min(k, len(vertical))]
    for j in keep:
        row[vertical[j]] = p[j]
    return row


def average_precision(scores, relevant):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    hits, total = 0, 0.0
    for rank, i in enumerate(order):
        if relevant[i]:
            hits += 1
            total += hits / (rank + 1)
    return total / max(1, sum(relevant))


def kc_cases():
    z = rnd(4, 6) * 2
    t = np.clip(R.uniform(size=(4, 6)) * (R.uniform(size=(4, 6)) > 0.4), 0, 1)
    g = numeric_grads(lambda z: sigmoid_ce(z, t), {"z": z}, np.array(1.0), ["z"])["z"]
    targets = []
    for name, p, vertical, k in [("top2-of-3", [0.2, 0.9, 0.5], [4, 0, 7], 2), ("K-larger-than-vertical", [0.3, 0.6], [1, 2], 100),
                                 ("one-class-vertical", [0.8], [5], 2), ("top1", [0.1, 0.4, 0.7, 0.2], [9, 3, 6, 8], 1)]:
        targets.append({"name": name, "probabilities": p, "vertical": vertical, "top_k": k, "classes": 10,
                        "targets": kc_targets(p, vertical, k, 10).tolist()})
    scores = R.uniform(size=30)
    relevant = (R.uniform(size=30) < 0.3).tolist()
    return {"sigmoid_ce": {"logits": enc64(z), "targets": enc64(t), "loss": float(sigmoid_ce(z, t)), "grad": enc64(g)},
            "targets": targets,
            "ap": {"scores": scores.tolist(), "relevant": relevant, "ap": average_precision(scores.tolist(), relevant)}}


def softmax1(r):
    e = np.exp(r - r.max())
    return e / e.sum()


def specialist_objective(r, pg, specs):
    """KL(p_g ‖ q) + Σ_m KL(p_m ‖ q_m), q = softmax(r), q_m: q on m's group, its dustbin the rest."""
    q = softmax1(r)
    kl = lambda p, q: float(np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(q)), 0)))
    value = kl(pg, q)
    for pm, group in specs:
        others = [i for i in range(len(q)) if i not in group]
        value += kl(np.asarray(pm), np.array([q[c] for c in group] + [q[others].sum()]))
    return np.array(value)


def specialist_cases():
    out = []
    for name, groups in [("one-specialist", [[3, 5, 8]]), ("two-specialists", [[3, 5, 8], [1, 7]])]:
        pg = softmax1(rnd(10))
        specs = [(softmax1(rnd(len(g) + 1) * 2).tolist(), g) for g in groups]
        r = rnd(10)
        g = numeric_grads(lambda r: specialist_objective(r, pg, specs), {"r": r}, np.array(1.0), ["r"])["r"]
        # the minimiser by plain gradient descent with a different, small constant step, run long
        x = np.log(pg)
        for _ in range(20000):
            x -= 0.05 * analytic_grad(x, pg, specs)
        out.append({"name": name, "generalist": pg.tolist(), "specialists": [{"p": p, "group": gr} for p, gr in specs],
                    "r": r.tolist(), "value": float(specialist_objective(r, pg, specs)), "grad": g.tolist(),
                    "minimum_q": softmax1(x).tolist(), "minimum_value": float(specialist_objective(x, pg, specs))})
    return out


def analytic_grad(r, pg, specs, h=1e-6):
    """Central differences of the objective (only to drive the long descent; the golden gradient
    above is checked against the same definition)."""
    g = np.zeros_like(r)
    for i in range(len(r)):
        e = np.zeros_like(r)
        e[i] = h
        g[i] = (specialist_objective(r + e, pg, specs) - specialist_objective(r - e, pg, specs)) / (2 * h)
    return g


def maxpool_to(f, h, w):
    """Max-pool [N, C, H, W] down to h×w with a window and stride of H/h (METHODS.md §3)."""
    k = f.shape[2] // h
    return f.reshape(f.shape[0], f.shape[1], h, k, w, k).max(axis=(3, 5))


def fsp_matrix(f1, f2):
    """G_ij = Σ_{s,t} F1_{i,s,t} F2_{j,s,t} / (h·w), the larger map max-pooled to the smaller."""
    h, w = min(f1.shape[2], f2.shape[2]), min(f1.shape[3], f2.shape[3])
    a, b = maxpool_to(f1, h, w), maxpool_to(f2, h, w)
    return np.einsum("nihw,njhw->nij", a, b) / (h * w)


def fsp_loss(student, teacher):
    """(1/N) Σ_x Σ_i ‖G_i^T(x) − G_i^S(x)‖², equal weights λ_i = 1."""
    n = student[0].shape[0]
    return sum(np.sum((t - s) ** 2) for s, t in zip(student, teacher)) / n


def rnd_fixed(t, c):
    """The second pair's teacher matrix is square (c×c): reuse the drawn values, reshaped."""
    return np.resize(t, (t.shape[0], c, c))


def quant_int8(w, per_channel):
    """Symmetric int8 (METHODS.md, Quantize-check): s = max|w| / 127 per tensor or per row, q = round-half-even(w / s)."""
    m = np.abs(w).reshape(w.shape[0], -1).max(axis=1) if per_channel else np.array([np.abs(w).max()])
    s = np.where(m > 0, m / 127, 1.0).astype(np.float32)
    sb = s.reshape((-1,) + (1,) * (w.ndim - 1)) if per_channel else s[0]
    q = np.clip(np.round(w.astype(np.float32) / sb), -127, 127).astype(np.int8)
    return q, s, (q.astype(np.float32) * sb)


def sqnr_db(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2)))


def write_quant():
    """int8 per tensor / per channel, u8 activations and fp16 on a signal with one outlier channel."""
    g = np.random.default_rng(77)
    w = g.standard_normal((6, 3, 2, 2)).astype(np.float32)
    w[4] *= 40  # the outlier output channel: per-tensor quantization flattens the others
    cases = {}
    for name, pc in [("per_tensor", False), ("per_channel", True)]:
        q, s, dq = quant_int8(w, pc)
        cases[name] = {"q": [int(v) for v in q.ravel()], "scale": [float(v) for v in s], "dequantized": enc64(dq),
                       "sqnr_db": sqnr_db(w, dq)}
    x = (g.standard_normal(200) * 3 + 1).astype(np.float32)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((hi - lo) / 255)
    zp = int(np.clip(np.round(-lo / scale), 0, 255))
    qa = np.clip(np.round(x / scale) + zp, 0, 255)
    act = {"x": enc64(x), "scale": float(scale), "zero_point": zp, "q": [int(v) for v in qa],
           "dequantized": enc64(scale * (qa - zp)), "sqnr_db": sqnr_db(x, scale * (qa - zp))}
    h = w.astype(np.float16).astype(np.float32)
    signal = np.sin(np.arange(64) / 5.0).astype(np.float32)
    out = os.path.join(os.path.dirname(__file__), "..", "Tests", "KDQuantTests", "Golden", "quant.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"generator": "tools/gen_golden.py", "weights": enc64(w), "int8": cases, "activation": act,
                   "fp16": {"dequantized": enc64(h), "sqnr_db": sqnr_db(w, h)},
                   "sine": {"x": enc64(signal), "noisy": enc64(signal + np.float32(0.01) * np.cos(np.arange(64))),
                            "sqnr_db": sqnr_db(signal, signal + np.float32(0.01) * np.cos(np.arange(64)))}},
                  fh, separators=(",", ":"))
    print("wrote the quantization cases to %s" % out)


def opset2_cases():
    """Op set 2 (Spec §7.2): every op with its attributes as the bundle stores them, its own RNG."""
    global R
    saved, R = R, np.random.default_rng(2026)
    try:
        from math import erf as _erf
        erf = np.vectorize(_erf)
        cases = []

        def away(x, kinks, gap=0.05):
            for k in kinks:
                x[np.abs(x - k) < gap] = k + 0.3
            return x

        def conv(name, x, w, b, stride, pads, groups):
            f = (lambda x, w, b, s=stride, p=pads, g=groups: conv2d(x, w, b, s, p, (1, 1), g))
            cases.append(case(name, "conv2d", f, {"x": x, "w": w, "b": b},
                              {"stride": list(stride), "pads": list(pads), "dilation": [1, 1], "groups": groups}, ["x", "w", "b"]))
        conv("conv2d-depthwise", rnd(2, 4, 7, 6), rnd(4, 1, 3, 3), rnd(4), (1, 1), (1, 1, 1, 1), 4)
        conv("conv2d-depthwise-multiplier2-stride2", rnd(2, 4, 7, 6), rnd(8, 1, 3, 3), rnd(8), (2, 2), (1, 0, 1, 1), 4)
        cases.append(case("linear-rank4", "linear", lambda x, w, b: x @ w.T + b, {"x": rnd(2, 3, 4, 7), "w": rnd(5, 7), "b": rnd(5)},
                          {}, ["x", "w", "b"]))
        cases.append(case("add-broadcast", "add", lambda x, b: x + b, {"x": rnd(2, 3, 4), "b": rnd(4)}, {}, ["x", "b"]))
        cases.append(case("mul-broadcast", "mul", lambda x, b: x * b, {"x": rnd(2, 3, 4, 5), "b": rnd(1, 3, 1, 1)}, {}, ["x", "b"]))
        cases.append(case("sub-broadcast", "sub", lambda x, b: x - b, {"x": rnd(2, 3, 4, 5), "b": rnd(5)}, {}, ["x", "b"]))
        cases.append(case("div-broadcast", "div", lambda x, b: x / b,
                          {"x": rnd(2, 3, 4, 5), "b": np.abs(rnd(1, 3, 1, 5)) + 0.5}, {}, ["x", "b"]))
        cases.append(case("reduce_mean-spatial-keepdims", "reduce_mean", lambda x: x.mean(axis=(2, 3), keepdims=True),
                          {"x": rnd(2, 3, 4, 5)}, {"axes": [2, 3], "keepdims": True}, ["x"]))
        cases.append(case("reduce_mean-last", "reduce_mean", lambda x: x.mean(axis=-1), {"x": rnd(2, 3, 4)},
                          {"axes": [-1], "keepdims": False}, ["x"]))
        cases.append(case("transpose-nhwc", "transpose", lambda x: x.transpose(0, 2, 3, 1), {"x": rnd(2, 3, 4, 5)},
                          {"perm": [0, 2, 3, 1]}, ["x"]))
        cases.append(case("pad-constant", "pad",
                          lambda x: np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), constant_values=0.5), {"x": rnd(2, 3, 4, 5)},
                          {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "value": 0.5}, ["x"]))
        cases.append(case("slice-clamped", "slice", lambda x: x[:, 1:3, :, -3:], {"x": rnd(2, 4, 5, 6)},
                          {"axes": [1, 3], "starts": [1, -3], "ends": [3, 1000]}, ["x"]))

        def layernorm(x, g, b):
            m = x.mean(axis=-1, keepdims=True)
            v = ((x - m) ** 2).mean(axis=-1, keepdims=True)
            return (x - m) / np.sqrt(v + 1e-5) * g + b
        cases.append(case("layernorm-last", "layernorm", layernorm, {"x": rnd(2, 3, 4, 6), "g": rnd(6), "b": rnd(6)},
                          {"axis": -1, "epsilon": 1e-5}, ["x", "g", "b"]))
        cases.append(case("flatten", "flatten", lambda x: x.reshape(2, -1), {"x": rnd(2, 3, 2, 2)}, {"axis": 1}, ["x"]))
        cases.append(case("reshape", "reshape", lambda x: x.reshape(2, 6, 2), {"x": rnd(2, 3, 4)}, {"shape": [2, 6, 2]}, ["x"]))
        cases.append(case("dropout-inference", "dropout", lambda x: x, {"x": rnd(2, 5)}, {"ratio": 0.25}, ["x"]))
        sig = lambda x: 1 / (1 + np.exp(-x))
        acts = [
            ("clip", {"min": -0.5, "max": 1.0}, lambda x: np.clip(x, -0.5, 1.0), [-0.5, 1.0]),
            ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}, lambda x: np.clip(0.2 * x + 0.5, 0, 1), [-2.5, 2.5]),
            ("hardswish", {}, lambda x: x * np.clip(x + 3, 0, 6) / 6, [-3, 3]),
            ("silu", {}, lambda x: x * sig(x), []),
            ("gelu", {"tanh": False}, lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))), []),
            ("gelu", {"tanh": True}, lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), []),
            ("erf", {}, lambda x: erf(x), []),
            ("tanh", {}, np.tanh, []),
            ("leaky_relu", {"alpha": 0.1}, lambda x: np.where(x >= 0, x, 0.1 * x), [0]),
            ("sqrt", {}, lambda x: np.sqrt(np.abs(x) + 0.5), None),
        ]
        for op, attrs, f, kinks in acts:
            x = away(rnd(3, 8) * 2.5, kinks) if kinks is not None else np.abs(rnd(3, 8)) + 0.5
            if op == "sqrt":
                f = np.sqrt  # on positive inputs
            label = op + ("-tanh" if attrs.get("tanh") else "")
            cases.append(case(label, op, lambda x, f=f: f(x), {"x": x}, attrs, ["x"]))
        return cases
    finally:
        R = saved


def inject_opset2():
    """Adds (or replaces) the op-set-2 cases in ops.json without regenerating the others."""
    out = os.path.join(os.path.dirname(__file__), "..", "Tests", "KDTensorTests", "Golden", "ops.json")
    with open(out) as fh:
        doc = json.load(fh)
    new = opset2_cases()
    names = {c["name"] for c in new}
    doc["cases"] = [c for c in doc["cases"] if c["name"] not in names] + new
    with open(out, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    print("wrote %d op-set-2 cases into %s" % (len(new), out))


if __name__ == "__main__":
    if sys.argv[1:] == ["--opset2"]:
        inject_opset2()
    else:
        main()
