import Foundation
import KDBundle
import KDNN
import KDTensor
import Testing

@testable import KDInterop

@Suite("npy, safetensors, npz and state dicts")
struct StateDictTests {
    @Test("npy: write and read back; wrong magic, truncation and Fortran order are clear errors")
    func npy() throws {
        let bytes = Npy.encode(shape: [2, 3], floats: [1, -2, 3.5, 0, 1e-3, 7])
        #expect((bytes.count - 128) == 24 && bytes.count % 64 == 24, "header padded to 64 bytes")
        let a = try Npy.read(bytes, path: "x.npy")
        #expect(a.shape == [2, 3] && a.dtype == "<f4" && a.floats == [1, -2, 3.5, 0, 1e-3, 7])
        #expect(throws: InteropError.self) { try Npy.read(Array(bytes.dropLast(5)), path: "short.npy") }
        do {
            _ = try Npy.read(Array(bytes.dropLast(5)), path: "short.npy")
        } catch {
            #expect("\(error)".contains("short.npy: truncated"), "\(error)")
        }
        #expect(throws: InteropError.self) { try Npy.read(Array("PK not npy".utf8), path: "zip.npy") }
        var fortran = String(decoding: bytes, as: UTF8.self)
        fortran = fortran.replacingOccurrences(of: "'fortran_order': False", with: "'fortran_order': True ")
        #expect(throws: InteropError.self) { try Npy.read(Array(fortran.utf8), path: "f.npy") }
    }

    @Test("npz (deflated, from numpy) and safetensors (with f16) of one state dict load identically into resnet8")
    func stateDicts() throws {
        let npz = try StateDict.read(path: Fixture.path("resnet8_state.npz"))
        let st = try StateDict.read(path: Fixture.path("resnet8_state.safetensors"))
        #expect(st.tensors["linear.bias"]?.dtype == "F16" && npz.tensors["linear.bias"]?.dtype == "<f4")
        var models: [Model] = []
        for sd in [npz, st] {
            let m = try Architecture(name: "resnet8").build(input: [1, 28, 28], classes: 10, seed: 0)
            let unused = try sd.load(into: m)
            #expect(unused.isEmpty, "\(unused)")
            models.append(m)
        }
        for n in models[0].tensorNames {
            let (a, b) = ((models[0].parameters[n] ?? models[0].buffers[n])!, (models[1].parameters[n] ?? models[1].buffers[n])!)
            #expect(maxAbs(a, b) == 0, "\(n)")
        }
        let w = npz.tensors["layer2.0.downsample.0.weight"]!
        let ours = models[0].parameters["stage2.block1.shortcut.conv.weight"]!
        #expect(w.shape == ours.shape && (0..<ours.count).allSatisfy { ours[$0] == w.values[$0] }, "torchvision names mapped")
    }

    @Test("mismatches are listed all at once; a name map redirects names")
    func mismatches() throws {
        let npz = try StateDict.read(path: Fixture.path("resnet8_state.npz"))
        let wide = try Architecture(name: "resnet14").build(input: [1, 28, 28], classes: 10, seed: 0)
        do {
            try npz.load(into: wide)
            Issue.record("loaded a resnet8 state dict into resnet14")
        } catch {
            let m = "\(error)"
            #expect(
                m.contains("tensors do not fit") && m.contains("stage1.block2.conv1.weight") && m.contains("stage3.block2.bn2.bias"), "\(m)"
            )
        }
        let map = try NameMap(json: Array(#"{"fc.": "classifier.", "conv1.weight": "stem.weight"}"#.utf8), path: "map.json")
        #expect(map.candidates("fc.weight") == ["classifier.weight"])
        #expect(map.candidates("conv1.weight") == ["stem.weight"])
        #expect(NameMap().candidates("stage3.block1.shortcut.bn.running_var").contains("layer3.0.downsample.1.running_var"))
    }

    @Test("safetensors: header bounds, offsets and overlaps are checked; export round trip")
    func safetensors() throws {
        let tensors: [(name: String, shape: [Int], values: [Float])] = [("a", [2, 2], [1, 2, 3, 4]), ("b", [3], [5, 6, 7])]
        let bytes = StateDict.encodeSafetensors(tensors)
        let back = try StateDict.safetensors(bytes, path: "t.safetensors")
        #expect(back.tensors["a"]?.values == [1, 2, 3, 4] && back.tensors["b"]?.shape == [3])
        var huge = bytes
        huge[0] = 0xff
        huge[5] = 0x7f
        #expect(throws: InteropError.self) { try StateDict.safetensors(huge, path: "h.safetensors") }
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        var overlap: [UInt8] = []
        overlap.appendLE(UInt64(header.utf8.count))
        overlap += Array(header.utf8) + [UInt8](repeating: 0, count: 12)
        do {
            _ = try StateDict.safetensors(overlap, path: "o.safetensors")
            Issue.record("accepted overlapping tensors")
        } catch {
            #expect("\(error)".contains("overlap"), "\(error)")
        }
        let bad = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#
        var wrong: [UInt8] = []
        wrong.appendLE(UInt64(bad.utf8.count))
        wrong += Array(bad.utf8) + [UInt8](repeating: 0, count: 8)
        #expect(throws: InteropError.self) { try StateDict.safetensors(wrong, path: "w.safetensors") }
        // bf16 and f16 values widen exactly: 1.5 and −2.25 are representable in both.
        let header16 = #"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}}"#
        var halves: [UInt8] = []
        halves.appendLE(UInt64(header16.utf8.count))
        halves += Array(header16.utf8) + [0x00, 0x3e, 0x80, 0xc0] + [0xc0, 0x3f, 0x10, 0xc0]
        let h = try StateDict.safetensors(halves, path: "h.safetensors")
        #expect(h.tensors["h"]?.values == [1.5, -2.25] && h.tensors["b"]?.values == [1.5, -2.25])
        let npz = StateDict.encodeNpz(tensors)
        let z = try StateDict.npz(npz, path: "t.npz")
        #expect(z.tensors["b"]?.values == [5, 6, 7])
    }
}
