import CArchive
import CBLAS
import CImage
import CZlib
import Testing

/// The system-library shims build, link and call into the real libraries.
@Suite("System libraries")
struct SystemLibraryTests {
    @Test("OpenBLAS sgemm multiplies")
    func blas() {
        let a: [Float] = [1, 2, 3, 4]  // 2×2
        let b: [Float] = [5, 6, 7, 8]
        var c = [Float](repeating: 0, count: 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1, a, 2, b, 2, 0, &c, 2)
        #expect(c == [19, 22, 43, 50])
    }

    @Test("libarchive, libpng, libjpeg-turbo and zlib report their versions")
    func versions() {
        #expect(String(cString: archive_version_string()).hasPrefix("libarchive"))
        #expect(png_access_version_number() >= 10600)
        #expect(JPEG_LIB_VERSION >= 62)
        #expect(String(cString: zlibVersion()).hasPrefix("1."))
    }
}
