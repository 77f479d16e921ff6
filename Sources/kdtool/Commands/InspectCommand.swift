import ArgumentParser
import KDBundle

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a model bundle holds: sections, tensors, graph, labels, provenance.",
        discussion: """
            Opening is O(1) in the file size: only the header, directory and tensor table are checked. --verify also checks every CRC, padding byte, float value and the SHA-256 trailer.

            The --json document has the keys: file, format, size, file_digest, content_digest, features, sections[], tensors[], graph{inputs, outputs, output_kind, nodes[], totals}, labels[], preprocessing{}, verticals[], fsp_pairs[], hints{}, quantization[], provenance{}, metadata{}, and, when asked for, verify{ok, error} and tensor{name, stats}. Absent sections are null.

            Examples:
              kdtool inspect model.kdb
              kdtool inspect model.kdb --verify
              kdtool inspect model.kdb --tensor conv1.weight
              kdtool inspect model.kdb --json | jq .graph.totals
            """)

    @Argument(help: "The bundle to inspect.")
    var file: String

    @Flag(help: "Print one JSON document instead of text.")
    var json = false

    @Flag(help: "Check every checksum and value; exit 1 on any mismatch.")
    var verify = false

    @Option(help: "Print min/max/mean/std/NaN count of one tensor (dequantized when quantized).")
    var tensor: String?

    @Flag(help: "Read the file into memory instead of mapping it (for files another process may change).")
    var noMmap = false

    func run() throws {
        let bundle = try withBundleErrors { try ModelBundle(path: file, mmap: !noMmap) }
        var report = try withBundleErrors { try InspectReport(bundle) }
        var verifyError: BundleError?
        if verify {
            do { try bundle.verify() } catch let e as BundleError { verifyError = e }
            report.verify = (verifyError == nil, verifyError.map { "\($0)" })
        }
        if let name = tensor {
            report.tensorStats = try withBundleErrors { (name, try TensorStats(bundle.floats(named: name))) }
        }
        print(json ? report.json.render() : report.text)
        if let verifyError {
            // Every KDB-Exx rejection exits 2, whether open or verify found it (Spec §12).
            warn("kdtool: verify failed: \(verifyError)")
            throw Exit.invalidInput
        }
    }
}

extension TensorStats {
    var json: JSON {
        .object([
            ("count", .int(count)), ("min", count > nan ? .number(min) : .null),
            ("max", count > nan ? .number(max) : .null), ("mean", .number(mean)), ("std", .number(std)),
            ("nan", .int(nan)), ("inf", .int(inf)),
        ])
    }
}

/// Everything `inspect` shows, gathered once and rendered as text or JSON.
struct InspectReport {
    let bundle: ModelBundle
    let contentDigest: String
    let sectionCRC: [String: Bool]
    let graph: Graph?
    let nodeStats: [Graph.NodeStats]
    let shapeError: String?
    let labels: Labels?
    let prep: Preprocessing?
    let verticals: VerticalMap?
    let fsp: FSPPairs?
    let hints: Hints?
    let quant: Quantization?
    let prov: Provenance?
    let meta: Metadata?
    var verify: (ok: Bool, error: String?)?
    var tensorStats: (String, TensorStats)?

    init(_ b: ModelBundle) throws {
        let s = try BundleSummary(b)
        bundle = b
        sectionCRC = s.sectionCRC
        graph = s.graph
        labels = s.labels
        prep = s.preprocessing
        verticals = s.verticals
        fsp = s.fspPairs
        hints = s.hints
        quant = s.quantization
        prov = s.provenance
        meta = s.metadata
        contentDigest = s.contentDigest
        nodeStats = s.nodeStats
        shapeError = s.shapeError
        features = s.features
        summary = s
    }

    let summary: BundleSummary
    let features: [String]
    private func quantLabel(_ t: TensorInfo) -> String { summary.quantizationLabel(t) }

    // MARK: Text

    var text: String {
        var out: [String] = []
        let h = bundle.header
        out.append("\(bundle.path)")
        out.append("  format          \(h.major).\(h.minor)")
        out.append("  size            \(Text.grouped(bundle.fileSize)) bytes (\(Text.bytes(bundle.fileSize)))")
        out.append("  file digest     \(bundle.computedFileDigest())")
        out.append("  content digest  \(contentDigest)")
        out.append("  features        \(features.isEmpty ? "none" : features.joined(separator: ", "))")
        if let verify {
            out.append("  verify          \(verify.ok ? "ok (all CRCs, padding, values and SHA-256)" : "FAILED: \(verify.error ?? "")")")
        }

        out.append("\nSections (\(bundle.sections.count))")
        out.append(
            Text.table(
                ["name", "offset", "stored", "length", "critical", "deflated", "crc"],
                bundle.sections.map {
                    [
                        $0.fourcc, Text.grouped($0.offset), Text.grouped($0.storedLength), Text.grouped($0.length),
                        $0.critical ? "yes" : "no", $0.deflated ? "yes" : "no", sectionCRC[$0.fourcc] == true ? "ok" : "BAD",
                    ]
                }, right: [1, 2, 3]))

        let tensorBytes = bundle.tensors.reduce(0) { $0 + $1.length }
        out.append("\nTensors (\(Text.grouped(bundle.tensors.count)), \(Text.grouped(tensorBytes)) bytes)")
        let shown = bundle.tensors.prefix(200)
        out.append(
            Text.table(
                ["name", "dtype", "shape", "bytes", "quantization"],
                shown.map { [$0.name, $0.dtype.description, Text.shape($0.shape), Text.grouped($0.length), quantLabel($0)] },
                right: [3]))
        if bundle.tensors.count > shown.count {
            out.append("  … \(bundle.tensors.count - shown.count) more (use --json for all)")
        }

        if let g = graph {
            let inputs = g.inputs.map { "\($0.name) \(Text.shape($0.shape.map { $0 == -1 ? 1 : $0 }))" }
            out.append(
                "\nGraph (op set \(Graph.opset), \(g.nodes.count) nodes, inputs \(inputs.joined(separator: ", ")), outputs \(g.outputs.joined(separator: ", ")) read through \(g.outputKind.rawValue))"
            )
            if let shapeError {
                out.append("  shapes could not be inferred: \(shapeError)")
                out.append(
                    Text.table(["node", "op", "inputs"], g.nodes.map { [$0.name, $0.op.rawValue, $0.inputs.joined(separator: ", ")] }))
            } else {
                out.append(
                    Text.table(
                        ["node", "op", "output shape (batch 1)", "params", "FLOPs"],
                        nodeStats.map {
                            [
                                $0.node.name, $0.node.op.rawValue, Text.shape($0.outputShape), Text.grouped($0.parameters),
                                Text.grouped($0.flops),
                            ]
                        }, right: [3, 4]))
                let params = nodeStats.reduce(0) { $0 + $1.parameters }
                let flops = nodeStats.reduce(0) { $0 + $1.flops }
                out.append("  total: \(Text.grouped(params)) parameters, \(Text.grouped(flops)) FLOPs per image")
            }
        }
        if let labels {
            let names = labels.classes.prefix(30).joined(separator: ", ")
            out.append("\nLabels (\(labels.classes.count)): \(names)\(labels.classes.count > 30 ? ", …" : "")")
        }
        if let p = prep {
            out.append(
                "\nPreprocessing: \(p.channels)×\(p.height)×\(p.width), resize \(p.resize.rawValue), scale \(Text.number(p.scale)), mean \(p.mean.map { Text.number(Double($0)) }.joined(separator: " ")), std \(p.std.map { Text.number(Double($0)) }.joined(separator: " ")), alpha \(p.alpha.rawValue), invert \(p.invert)"
            )
        }
        if let v = verticals {
            out.append("\nVerticals (\(v.verticals.count))")
            out.append(
                Text.table(
                    ["name", "classes", "count", "teacher"],
                    v.verticals.map { vert in
                        let names = vert.classes.map { labels?.classes[$0] ?? String($0) }
                        return [
                            vert.name, names.joined(separator: " "), String(vert.classes.count),
                            vert.teacher.isEmpty ? "—" : String(vert.teacher.prefix(16)) + "…",
                        ]
                    }))
        }
        if let f = fsp {
            out.append("\nFSP pairs (\(f.pairs.count)): " + f.pairs.map { "\($0.first) → \($0.second)" }.joined(separator: ", "))
        }
        if let h = hints {
            out.append("\nHint layers: \(h.hints.isEmpty ? "—" : h.hints.joined(separator: ", "))")
            out.append("Guided layers: \(h.guided.isEmpty ? "—" : h.guided.joined(separator: ", "))")
            if !h.regressor.isEmpty { out.append("Regressor tensors: \(h.regressor.joined(separator: ", "))") }
        }
        if let q = quant {
            out.append("\nQuantization (\(q.params.count) descriptors)")
            let users = bundle.tensors.filter { $0.quant != nil }
            out.append(
                Text.table(
                    ["tensor", "dtype", "axis", "scales", "zero points"],
                    users.map { t in
                        let p = q.params[t.quant!]
                        return [
                            t.name, t.dtype.description, p.axis < 0 ? "per-tensor" : String(p.axis),
                            p.scale.count == 1 ? Text.number(Double(p.scale[0])) : "\(p.scale.count) values",
                            p.zeroPoint.count == 1 ? String(p.zeroPoint[0]) : "\(p.zeroPoint.count) values",
                        ]
                    }))
        }
        if let p = prov {
            out.append("\nProvenance")
            out.append("  tool            \(p.tool)")
            out.append("  method          \(p.method)")
            if let seed = p.seed { out.append("  seed            \(seed)") }
            for parent in p.parents { out.append("  parent          \(parent.role): \(parent.digest)") }
            for (title, m) in [("hyperparameters", p.hyperparameters), ("data", p.data), ("metrics", p.metrics)] where !m.isEmpty {
                out.append(
                    "  \(title.padding(16))\(m.keys.sorted().map { "\($0)=\(JSON(m[$0]!).render(pretty: false))" }.joined(separator: " "))")
            }
        }
        if let m = meta, !m.entries.isEmpty {
            out.append("\nMetadata")
            for k in m.entries.keys.sorted() { out.append("  \(k.padding(15)) \(JSON(m.entries[k]!).render(pretty: false))") }
        }
        if let (name, s) = tensorStats {
            out.append("\nTensor \(name)")
            out.append(
                "  count \(Text.grouped(s.count))  min \(Text.number(s.min))  max \(Text.number(s.max))  mean \(Text.number(s.mean))  std \(Text.number(s.std))  NaN \(s.nan)  Inf \(s.inf)"
            )
        }
        return out.joined(separator: "\n")
    }

    // MARK: JSON

    var json: JSON {
        let h = bundle.header
        var doc: [(String, JSON)] = [
            ("file", .string(bundle.path)), ("format", .string("\(h.major).\(h.minor)")), ("size", .int(bundle.fileSize)),
            ("file_digest", .string(bundle.computedFileDigest())), ("content_digest", .string(contentDigest)),
            ("features", .array(features.map { .string($0) })),
            (
                "sections",
                .array(
                    bundle.sections.map {
                        .object([
                            ("name", .string($0.fourcc)), ("offset", .int($0.offset)), ("stored_length", .int($0.storedLength)),
                            ("length", .int($0.length)), ("critical", .bool($0.critical)), ("deflated", .bool($0.deflated)),
                            ("crc_ok", .bool(sectionCRC[$0.fourcc] == true)),
                        ])
                    })
            ),
            (
                "tensors",
                .array(
                    bundle.tensors.map {
                        .object([
                            ("name", .string($0.name)), ("dtype", .string($0.dtype.description)),
                            ("shape", .array($0.shape.map { .int($0) })), ("bytes", .int($0.length)),
                            ("quant", $0.quant.map { .int($0) } ?? .null),
                        ])
                    })
            ),
        ]
        if let g = graph {
            let nodes: [JSON] =
                (shapeError == nil ? nodeStats : g.nodes.map { Graph.NodeStats(node: $0, outputShape: [], parameters: 0, flops: 0) }).map {
                    .object([
                        ("name", .string($0.node.name)), ("op", .string($0.node.op.rawValue)),
                        ("inputs", .array($0.node.inputs.map { .string($0) })), ("outputs", .array($0.node.outputs.map { .string($0) })),
                        ("attrs", JSON(.map($0.node.attrs))), ("output_shape", .array($0.outputShape.map { .int($0) })),
                        ("params", .int($0.parameters)), ("flops", .int($0.flops)),
                    ])
                }
            doc.append(
                (
                    "graph",
                    .object([
                        ("opset", .int(Graph.opset)), ("output_kind", .string(g.outputKind.rawValue)),
                        (
                            "inputs",
                            .array(g.inputs.map { .object([("name", .string($0.name)), ("shape", .array($0.shape.map { .int($0) }))]) })
                        ),
                        ("outputs", .array(g.outputs.map { .string($0) })), ("nodes", .array(nodes)),
                        ("shape_error", shapeError.map { .string($0) } ?? .null),
                        (
                            "totals",
                            .object([
                                ("params", .int(nodeStats.reduce(0) { $0 + $1.parameters })),
                                ("flops", .int(nodeStats.reduce(0) { $0 + $1.flops })),
                            ])
                        ),
                    ])
                ))
        } else {
            doc.append(("graph", .null))
        }
        doc.append(("labels", labels.map { .array($0.classes.map { .string($0) }) } ?? .null))
        doc.append(("preprocessing", prep.map { JSON($0.value) } ?? .null))
        doc.append(
            (
                "verticals",
                verticals.map { v in
                    .array(
                        v.verticals.map {
                            .object([
                                ("name", .string($0.name)), ("classes", .array($0.classes.map { .int($0) })),
                                ("count", .int($0.classes.count)), ("teacher", .string($0.teacher)),
                            ])
                        })
                } ?? .null
            ))
        doc.append(
            (
                "fsp_pairs",
                fsp.map { .array($0.pairs.map { .object([("first", .string($0.first)), ("second", .string($0.second))]) }) } ?? .null
            ))
        doc.append(("hints", hints.map { JSON($0.value) } ?? .null))
        doc.append(("quantization", quant.map { JSON($0.value) } ?? .null))
        doc.append(("provenance", prov.map { JSON($0.value) } ?? .null))
        doc.append(("metadata", meta.map { JSON($0.value) } ?? .null))
        if let verify {
            doc.append(("verify", .object([("ok", .bool(verify.ok)), ("error", verify.error.map { .string($0) } ?? .null)])))
        }
        if let (name, s) = tensorStats { doc.append(("tensor", .object([("name", .string(name)), ("stats", s.json)]))) }
        return .object(doc)
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
