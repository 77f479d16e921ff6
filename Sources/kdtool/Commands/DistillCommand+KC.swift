import ArgumentParser
import KDBundle
import KDData
import KDDistill
import KDNN

#if canImport(Glibc)
    import Glibc
#endif

extension KC.Head: ExpressibleByArgument {}
extension KC.SelfPaced: ExpressibleByArgument {}
extension KC.SCInput: ExpressibleByArgument {}

extension DistillCommand {
    /// Knowledge Concentration: one sigmoid specialist teacher per vertical → one student for all classes.
    func runKC() throws {
        let loaded = try loadBundles()
        let teachers = Array(loaded.dropLast())
        if labelsOnly && !teachers.isEmpty {
            warn("kdtool: warning: --labels-only trains without teachers; ignoring \(teachers.map(\.0).joined(separator: ", "))")
        }
        let (studentPath, student, studentDigest) = loaded.last!
        let studentClasses = student.labels?.classes ?? (0..<student.classCount).map(String.init)
        let map = try reportingErrors { () throws -> VerticalMap in
            if let verticals { return try KC.verticals(json: verticals, classes: studentClasses) }
            guard let m = student.verticals ?? teachers.lazy.compactMap({ $0.1.verticals }).first else {
                throw NNError("kc needs verticals: give --verticals FILE.json (see `kdtool verticals`) or bundles with a VMAP section")
            }
            try KC.check(m, classes: studentClasses.count, source: "VMAP of the bundles")
            return m
        }
        // Each vertical's teacher: the one whose labels are exactly that vertical's classes.
        var owners: [(String, Model, String)] = []
        for v in map.verticals where !labelsOnly {
            let names = v.classes.map { studentClasses[$0] }
            guard let t = teachers.first(where: { Set($0.1.labels?.classes ?? []) == Set(names) }) else {
                let have = teachers.map { "\($0.0) [\(($0.1.labels?.classes ?? []).joined(separator: ","))]" }
                throw ValidationError(
                    "vertical '\(v.name)' (classes \(names.joined(separator: ","))) has no specialist teacher; teachers: \(have.joined(separator: "; ")). Train one with `kdtool train --loss sigmoid --classes \(names.joined(separator: ","))`"
                )
            }
            guard Array(t.1.inputShape.dropFirst()) == Array(student.inputShape.dropFirst()) else {
                throw ValidationError(
                    "teacher \(t.0) takes inputs of \(Array(t.1.inputShape.dropFirst())) but student \(studentPath) takes \(Array(student.inputShape.dropFirst()))"
                )
            }
            // Teacher outputs in vertical order.
            let order = names.map { n in t.1.labels!.classes.firstIndex(of: n)! }
            guard order == Array(0..<names.count) else {
                throw ValidationError(
                    "teacher \(t.0) orders its classes \(t.1.labels!.classes) differently from vertical '\(v.name)' \(names); list the vertical in the teacher's order"
                )
            }
            owners.append(t)
        }
        for t in teachers where !labelsOnly && !owners.contains(where: { $0.0 == t.0 }) {
            throw ValidationError("teacher \(t.0) owns none of the verticals")
        }
        guard topK >= 1 else { throw ValidationError("--top-k must be at least 1") }
        var withDigests = map
        for i in withDigests.verticals.indices where !labelsOnly { withDigests.verticals[i].teacher = owners[i].2 }
        let model = try reportingErrors {
            try KC.attachHead(
                to: student, head: head, verticals: withDigests, width: headWidth, shared: sharedWidth, selfPaced: selfPaced,
                seed: training.seed, hiddenLayers: headLayers, scInput: scInput, selfPacedEpsilon: selfPacedEpsilon)
        }
        model.labels = Labels(studentClasses)
        let settings: [String: Value] = [
            "top_k": .uint(UInt64(topK)), "head": .string(head.rawValue), "head_width": .uint(UInt64(headWidth)),
            "shared_width": .uint(UInt64(head == .fcSCShared ? sharedWidth : 0)), "self_paced": .string(selfPaced.rawValue),
            "head_layers": .uint(UInt64(headLayers)), "sc_input": .string(scInput.rawValue), "teachers": .bool(!labelsOnly),
            "self_paced_epsilon": .float(selfPacedEpsilon),
            "verticals": .array(map.verticals.map { v in .string(v.classes.map { studentClasses[$0] }.joined(separator: ",")) }),
        ]
        if !io.quiet {
            warn(
                "knowledge concentration: \(map.verticals.count) verticals ("
                    + map.verticals.map { "\($0.name): \($0.classes.map { studentClasses[$0] }.joined(separator: ","))" }.joined(
                        separator: "; ")
                    + "), head \(head.rawValue), self-paced \(selfPaced.rawValue), "
                    + (labelsOnly ? "no teachers (labels only, sigmoid loss)" : "top-K \(topK)")
                    + "; student \(model.parameterCount) parameters"
            )
        }
        var job = TrainingRun(
            modelPath: studentPath, model: model, data: data, training: training, split: io.split, evalSplit: io.evalSplit,
            quiet: io.quiet, output: io.output, method: "kc")
        job.parents = owners.map { .init(role: "teacher", digest: $0.2) } + [.init(role: "student", digest: studentDigest)]
        job.extraHyperparameters = settings
        job.methodSettings = settings
        var targets: KCTeachers?
        try job.execute { trainer, _, augmentation in
            if labelsOnly {
                trainer.trainSigmoid()
                return
            }
            let t = try KCTeachers(
                teachers: owners.map(\.1), verticals: map, topK: topK, classes: studentClasses.count, cacheAcrossEpochs: augmentation.isNone
            )
            targets = t
            trainer.concentrate(from: t)
        }
        if let t = targets, !io.quiet { warn("teacher targets: \(t.computed) computed, \(t.reused) reused from the cache") }
    }
}

extension DistillCommand {
    /// Hinton's specialists: one per vertical, from the generalist, into the folder -o.
    func runSpecialists() throws {
        guard bundles.count == 1 else { throw ValidationError("--method specialist takes one bundle: the generalist") }
        let (generalist, gb) = try loadModel(bundles[0])
        let digest = try withBundleErrors { try gb.contentDigest() }
        let classes = generalist.labels?.classes ?? (0..<generalist.classCount).map(String.init)
        guard let verticals else { throw ValidationError("--method specialist needs --verticals FILE.json (see `kdtool verticals`)") }
        let map = try reportingErrors { try KC.verticals(json: verticals, classes: classes) }
        let dir = Companion.stem(io.output)
        mkdir(dir, 0o755)
        guard ImageFolder.isDirectory(dir) else { throw ValidationError("cannot create the output folder \(dir)") }
        for (i, v) in map.verticals.enumerated() {
            let names = v.classes.map { classes[$0] }
            let model = try reportingErrors { try Specialists.initialise(from: generalist, group: v.classes, classes: classes) }
            model.verticals = VerticalMap([.init(name: v.name, classes: Array(0..<v.classes.count), teacher: "")])
            if !io.quiet {
                warn("specialist \(i + 1)/\(map.verticals.count) '\(v.name)': classes \(names.joined(separator: ",")) + dustbin")
            }
            var factor = 1.0
            var first = true
            var job = TrainingRun(
                modelPath: bundles[0], model: model, data: data, training: training, split: io.split, evalSplit: io.evalSplit,
                quiet: io.quiet, output: "\(dir)/specialist\(i + 1).kdb", method: "specialist")
            job.parents = [.init(role: "generalist", digest: digest)]
            let settings: [String: Value] = ["vertical": .string(names.joined(separator: ","))]
            job.extraHyperparameters = settings
            job.methodSettings = settings
            job.datasetTransform = { d in
                let (s, f) = Specialists.trainingSet(d, group: v.classes)
                if first { factor = f }  // the training data comes first, then the eval split
                first = false
                return s
            }
            job.beforeWrite = { m in Specialists.correctDustbin(m, oversampling: factor) }
            try job.execute { _, _, _ in }
        }
    }
}
