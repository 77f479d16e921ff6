#!/usr/bin/env python3
"""Writes Sources/KDTensor/Kernels/DirectConv+Tiles.generated.swift: the direct convolution's row
tiles over channel-blocked input at stride 1 (every 1×1 convolution of the mobile students, and
the 3×3 ones of the ResNets), one straight-line function per (pixels, output vectors).

The generic tile (`DirectConv.Tile.run`) keeps its accumulators in an `InlineArray`. Inside the
loop over taps the compiler holds them in registers, but it writes them to the stack when the
tile starts (from the bias) and again when the loop ends, and reads them back for the epilogue:
`perf annotate` on mobilenetv2 at batch 1 put about a third of the 8 × 2 tile's time in those
round trips, since a 1×1 layer's loop is short (24–160 input channels). Here the accumulators are
named locals, loaded from the bias or the output, accumulated and stored from registers.

Each accumulator adds the same products in the same order as the generic tile (input block,
kernel row, kernel column, lane), so the bits are the generic tile's. The pointers to each tap's
input and weights advance by additions (`TapSteps` in DirectConv.swift); recomputed from the tap
counters with multiplications they cost the AVX2 build's 4 × 3 tile a fifth of its speed.

Run it after changing SHAPES; its output is committed:

    tools/gen_direct_tiles.py
"""
import os

# Output vectors → the most pixels a tile of that many vectors has in some build (the shapes of
# DirectConv.shapes8, shapes16 and shapes16Narrow, and the narrower tiles a row's border or split
# leaves; the generic tile has the same shapes for the other inputs).
SHAPES = {1: 14, 2: 12, 3: 8, 4: 3}


def tiles():
    return [(p, nb) for nb, most in SHAPES.items() for p in range(1, most + 1)]


def body(p, nb):
    name = f"blocked{p}x{nb}"
    accs = [(b, q) for b in range(nb) for q in range(p)]

    def a(b, q):
        return f"a{b}_{q}"

    def out_at(b, q):
        terms = []
        if b:
            terms.append("vs" if b == 1 else f"{b} &* vs")
        if q:
            terms.append("op" if q == 1 else f"{q} &* op")
        if not terms:
            return "d"
        return f"d + {terms[0]}" if len(terms) == 1 else f"d + ({' &+ '.join(terms)})"

    def per_vector(indent, whole, low):
        """`whole(b, q)` for every accumulator; only the last vector can be the half tail, which
        takes `low(q)` instead (one branch for the tile, not one per accumulator)."""
        pad = " " * indent
        out = [pad + whole(b, q) for b, q in accs if b < nb - 1]
        out.append(pad + "if halfTail {")
        out += [pad + "    " + low(q) for q in range(p)]
        out.append(pad + "} else {")
        out += [pad + "    " + whole(nb - 1, q) for q in range(p)]
        out.append(pad + "}")
        return out

    lines = [
        f"    /// {p} pixel{'s' if p > 1 else ''} × {nb} output vector{'s' if nb > 1 else ''}.",
        f"    private func {name}(",
        "        _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>,",
        "        _ taps: Taps",
        "    ) {",
        "        let (lanes, vs, op) = (V.scalarCount, vectorStride, outPixel)",
    ]
    for b, q in accs:
        lines.append(f"        var {a(b, q)}: V")
    lines.append("        if taps.first {")
    for b in range(nb):
        lines.append(f"            let b{b} = V.load(bias{'' if b == 0 else ' + lanes' if b == 1 else f' + {b} &* lanes'})")
        for q in range(p):
            lines.append(f"            {a(b, q)} = b{b}")
    lines.append("        } else {")
    lines += per_vector(
        12,
        lambda b, q: f"{a(b, q)} = V.load({out_at(b, q)}, blockStride: outBlock)",
        lambda q: f"{a(nb - 1, q)} = V.loadLow(UnsafePointer({out_at(nb - 1, q)}))",
    )
    lines += [
        "        }",
        "        let (rows, columns) = (taps.rows, taps.columns)",
        "        let steps = TapSteps(",
        "            rows: rows, columns: columns, planeStride: planeStride, tapH: tapH, tapW: tapW, kh: kh, kw: kw, tap: 8 &* lanes)",
        "        var (ki, kj) = (rows.lowerBound, columns.lowerBound)",
        "        var (px, wq) = (x + steps.input, w + steps.weight)",
        "        for _ in 0..<(cb &* rows.count &* columns.count) {",
        "            for i in 0..<8 {",
        "                let wi = wq + i &* lanes",
    ]
    # Whichever operand is fewer stays live across the lane (accumulators + min(p, nb) + 1 fit
    # the registers: 16 with AVX2): all of it is loaded first, the other one at a time.
    def weight(b):
        return f"                let w{b} = V.load(wi{'' if b == 0 else ' + weightBlock' if b == 1 else f' + {b} &* weightBlock'})"

    def pixel(q):
        return f"                let x{q} = V(repeating: px[i{'' if q == 0 else f' &+ {8 * q}'}])"

    held, streamed = (range(nb), range(p)) if nb <= p else (range(p), range(nb))
    load_held, load_streamed = (weight, pixel) if nb <= p else (pixel, weight)
    lines += [load_held(k) for k in held]
    for m in streamed:
        lines.append(load_streamed(m))
        for k in held:
            b, q = (k, m) if nb <= p else (m, k)
            lines.append(f"                {a(b, q)}.addProduct(x{q}, w{b})")
    lines += [
        "            }",
        "            steps.advance(&ki, &kj, &px, &wq)",
        "        }",
        "        if taps.last {",
        "            if let r = residualOffset {",
    ]
    lines.append("                let e = d + r")
    lines += per_vector(
        16,
        lambda b, q: f"{a(b, q)} += V.load({out_at(b, q).replace('d', 'e', 1)}, blockStride: outBlock)",
        lambda q: f"{a(nb - 1, q)} += V.loadLow(UnsafePointer({out_at(nb - 1, q).replace('d', 'e', 1)}))",
    )
    lines += ["            }", "            if relu {"]
    for b, q in accs:
        lines.append(f"                {a(b, q)} = {a(b, q)}.relu(upTo: upper)")
    lines += ["            }", "        }"]
    lines += per_vector(
        8,
        lambda b, q: f"{a(b, q)}.store({out_at(b, q)}, blockStride: outBlock)",
        lambda q: f"{a(nb - 1, q)}.storeLow({out_at(nb - 1, q)})",
    )
    lines.append("    }")
    return name, lines


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines = [
        "// Generated by tools/gen_direct_tiles.py; do not edit.",
        "",
        "extension DirectConv.Tile {",
        "    /// The tile of `p` pixels × `nb` output vectors over channel-blocked input at stride 1, run",
        "    /// from registers throughout; false (nothing done) for a shape without one. Specialised",
        "    /// here for both vector widths: where files compile one by one (`swift build` in debug,",
        "    /// KDTensor at -O), a caller in another file reaches the specialised code through the",
        "    /// generic entry, not witness calls per multiply-add.",
        "    @_specialize(where V == SIMD8<Float>)",
        "    @_specialize(where V == SIMD16<Float>)",
        "    func blocked(",
        "        _ p: Int, _ nb: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,",
        "        _ d: UnsafeMutablePointer<Float>, _ taps: Taps",
        "    ) -> Bool {",
        "        switch (p, nb) {",
    ]
    bodies = []
    for p, nb in tiles():
        name, b = body(p, nb)
        lines.append(f"        case ({p}, {nb}): {name}(x, w, bias, d, taps)")
        bodies += [""] + b
    lines += ["        default: return false", "        }", "        return true", "    }"]
    lines += bodies
    lines.append("}")
    path = os.path.join(root, "Sources/KDTensor/Kernels/DirectConv+Tiles.generated.swift")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.relpath(path, root)}: {len(tiles())} tiles")


if __name__ == "__main__":
    main()
