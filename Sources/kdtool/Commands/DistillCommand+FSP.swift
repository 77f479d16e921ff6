import ArgumentParser
import KDBundle
import KDDistill
import KDNN

extension DistillCommand {
    /// FSP (Yim et al.): stage 1 matches the teacher's FSP matrices, stage 2 trains on the task.
    func runFSP() throws {
        guard bundles.count == 2 else { throw ValidationError("fsp takes one teacher and the student") }
        let (teacher, tb) = try loadModel(bundles[0])
        let (student, sb) = try loadModel(bundles[1])
        let teacherDigest = try withBundleErrors { try tb.contentDigest() }
        let studentDigest = try withBundleErrors { try sb.contentDigest() }
        try reportingErrors { try Compatibility.check(teachers: [(bundles[0], teacher)], student: (bundles[1], student)) }
        let (tPairs, sPairs) = try reportingErrors { () throws -> ([FSP.ResolvedPair], [FSP.ResolvedPair]) in
            let studentList = try fspPairs.map(FSP.parsePairs) ?? student.fspPairs?.pairs ?? []
            var teacherList = try teacherFspPairs.map(FSP.parsePairs) ?? teacher.fspPairs?.pairs ?? []
            if teacherFspPairs == nil, fspPairs != nil, (try? FSP.resolve(studentList, on: teacher, label: bundles[0])) != nil {
                teacherList = studentList
            }
            let t = try FSP.resolve(teacherList, on: teacher, label: "teacher \(bundles[0])")
            let s = try FSP.resolve(studentList, on: student, label: "student \(bundles[1])")
            try FSP.check(teacher: t, student: s, teacherName: bundles[0], studentName: bundles[1])
            return (t, s)
        }
        let permutations = shuffleFsp.map { FSP.shufflePermutations(tPairs, model: teacher, seed: $0) }
        var settings: [String: Value] = [
            "teacher": .string(teacherDigest),
            "fsp_pairs": .array(sPairs.map { .string("\($0.first):\($0.second)") }),
            "teacher_fsp_pairs": .array(tPairs.map { .string("\($0.first):\($0.second)") }),
            "stage1_lr": .float(decimal(stage1Lr)),
        ]
        if let shuffleFsp { settings["shuffle_fsp"] = .uint(shuffleFsp) }
        if fspRescale { settings["rescale"] = .bool(true) }
        if let o = stage1Optimizer { settings["stage1_optimizer"] = .string(o.rawValue) }
        // The student's initial convolution norms, for --fsp-rescale between the stages.
        let initialNorms = FSP.convNorms(student)
        if !io.quiet {
            warn(
                "FSP stage 1: \(tPairs.count) pairs, "
                    + zip(tPairs, sPairs).map {
                        "\($0.rows)×\($0.columns) (teacher \($0.first):\($0.second) ↔ student \($1.first):\($1.second))"
                    }
                    .joined(separator: ", ") + (shuffleFsp.map { ", teacher channels shuffled with seed \($0)" } ?? ""))
        }
        try runTwoStages(
            student: student, parents: [.init(role: "teacher", digest: teacherDigest), .init(role: "student", digest: studentDigest)],
            stage1: ("fsp", settings, stage1Lr),
            prepare: { _ in },
            configure1: { trainer, augmentation in
                let t = try TeacherFSP(teacher: teacher, pairs: tPairs, permutations: permutations, cacheAcrossEpochs: augmentation.isNone)
                trainer.fspTraining(teacher: t, studentPairs: sPairs)
            },
            between: { model in
                model.fspPairs = FSPPairs(sPairs.map { FSPPairs.Pair($0.first, $0.second) })
                if fspRescale {
                    let r = FSP.rescale(model, to: initialNorms)
                    let grown = r.map { Double($0.before / max($0.after, 1e-12)) }
                    if !io.quiet, !grown.isEmpty {
                        warn(
                            "FSP: \(r.count) convolutions rescaled to their initial norms (they had grown ×\(Text.fixed(grown.min() ?? 1, 2))–×\(Text.fixed(grown.max() ?? 1, 2))); batch-norm statistics reset"
                        )
                    }
                }
                if !io.quiet { warn("FSP stage 2: the task loss (cross-entropy)") }
            },
            stage2: ("fsp", settings),
            configure2: { trainer, _ in trainer.stage = "fsp-task" })
    }
}
