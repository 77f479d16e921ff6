import Foundation
import KDTestSupport
import Testing

/// A torchvision architecture as PyTorch exports it (a narrow mobilenet_v3_small: depthwise
/// convolutions, hardswish, squeeze-and-excitation) goes through the whole pipeline: import with
/// ImageNet preprocessing, infer on image files, fine-tune, and teach a student.
@Suite("an imported torchvision model through the pipeline")
struct ImportedTeacherTests {
    static let onnx = CLI.root.path + "/Tests/KDInteropTests/Fixtures/torchvision/mobilenet_v3_small.torchscript13.onnx"

    @Test("import with --normalize imagenet, infer on image files, fine-tune, and distill into a lenet5")
    func pipeline() throws {
        let d = try Scratch.folder("kdtool-imported")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        let tar = try TestData.cifarTarball(trainPerClass: 4, testPerClass: 1)
        let i = try CLI.run([
            "import", Self.onnx, "--normalize", "imagenet", "--resize", "shorter-side-crop",
            "--labels", "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck", "-o", p("t0.kdb"),
        ])
        #expect(i.status == 0, "\(i.err)")
        let info = try CLI.run(["inspect", p("t0.kdb"), "--json"])
        #expect(info.out.contains("\"format\": \"1.1\"") && info.out.contains("0.485"), "op set 2 (format 1.1), ImageNet mean")
        let photos = try TestData.imageFolder()
        let inf = try CLI.run(["infer", p("t0.kdb"), photos, "--format", "jsonl"])
        // The fixture folder holds a TIFF and a GIF on purpose: exit 3 says some files were skipped.
        #expect(inf.status == 3 && inf.err.contains("12 ok"), "\(inf.err)")
        #expect(inf.out.contains("airplane") || inf.out.contains("truck") || inf.out.contains("cat"), "\(inf.out.prefix(300))")
        let t = try CLI.run(["train", p("t0.kdb"), "--data", tar, "--epochs", "1", "--quiet", "-o", p("t.kdb")])
        #expect(t.status == 0, "fine-tuning the imported model: \(t.err)")
        _ = try CLI.run(["init", "--arch", "lenet5", "--width", "0.25", "--data", tar, "-o", p("s.kdb")])
        let k = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--data", tar, "--epochs", "1", "--no-teacher-cache", "--quiet", "-o", p("kd.kdb"),
        ])
        #expect(k.status == 0, "distilling from the imported teacher: \(k.err)")
    }
}
