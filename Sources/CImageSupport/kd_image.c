#include "kd_image.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

struct kd_error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
};

/* A progressive JPEG may hold any number of scans, each a pass over the whole image: a small file
   of thousands of scans takes minutes to decode. Like libjpeg-turbo's TurboJPEG scan limit, more
   than 500 scans is an error. */
struct kd_progress_mgr {
    struct jpeg_progress_mgr pub;
    struct kd_error_mgr *err;
    volatile int too_many_scans;
};

static void kd_progress(j_common_ptr cinfo) {
    struct kd_progress_mgr *p = (struct kd_progress_mgr *)cinfo->progress;
    if (cinfo->is_decompressor && ((j_decompress_ptr)cinfo)->input_scan_number > 500) {
        p->too_many_scans = 1;
        longjmp(p->err->jump, 1);
    }
}

static void kd_error_exit(j_common_ptr cinfo) {
    struct kd_error_mgr *err = (struct kd_error_mgr *)cinfo->err;
    longjmp(err->jump, 1);
}

static void kd_silent(j_common_ptr cinfo, int level) { (void)cinfo; (void)level; }

/* Decoding: a warning that the data ended early (libjpeg would pad the rest of the image with
   grey and call it a success) is an error for that file. Other warnings stay silent. */
static void kd_decode_message(j_common_ptr cinfo, int level) {
    if (level == -1 && (cinfo->err->msg_code == JWRN_JPEG_EOF || cinfo->err->msg_code == JWRN_HIT_MARKER)) {
        struct kd_error_mgr *err = (struct kd_error_mgr *)cinfo->err;
        longjmp(err->jump, 1);
    }
}

static int exif_orientation(j_decompress_ptr cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        if (m->marker != JPEG_APP0 + 1 || m->data_length < 14 || memcmp(m->data, "Exif\0\0", 6) != 0) continue;
        const unsigned char *t = m->data + 6;
        size_t len = m->data_length - 6;
        int le = t[0] == 'I';
#define U16(p) (le ? (unsigned)((p)[0] | (p)[1] << 8) : (unsigned)((p)[0] << 8 | (p)[1]))
#define U32(p) (le ? ((unsigned)(p)[0] | (unsigned)(p)[1] << 8 | (unsigned)(p)[2] << 16 | (unsigned)(p)[3] << 24) \
                   : ((unsigned)(p)[0] << 24 | (unsigned)(p)[1] << 16 | (unsigned)(p)[2] << 8 | (unsigned)(p)[3]))
        size_t ifd = U32(t + 4);
        if (ifd + 2 > len) return 1;
        unsigned count = U16(t + ifd);
        for (unsigned i = 0; i < count; i++) {
            size_t e = ifd + 2 + 12 * (size_t)i;
            if (e + 12 > len) break;
            if (U16(t + e) == 0x0112) {
                unsigned v = U16(t + e + 8);
                return v >= 1 && v <= 8 ? (int)v : 1;
            }
        }
#undef U16
#undef U32
    }
    return 1;
}

int kd_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **out, int *width,
                   int *height, int *channels, int *orientation, char *error, size_t error_size) {
    struct jpeg_decompress_struct cinfo;
    struct kd_error_mgr jerr;
    struct kd_progress_mgr progress;
    unsigned char *volatile pixels = NULL;
    /* The row buffer lives across jpeg_read_scanlines, which may longjmp: freed by the handler too. */
    unsigned char *volatile row = NULL;
    *out = NULL;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = kd_error_exit;
    jerr.pub.emit_message = kd_decode_message;
    progress.too_many_scans = 0;
    if (setjmp(jerr.jump)) {
        char msg[JMSG_LENGTH_MAX];
        if (progress.too_many_scans) snprintf(msg, sizeof msg, "progressive JPEG with more than 500 scans");
        else (*cinfo.err->format_message)((j_common_ptr)&cinfo, msg);
        snprintf(error, error_size, "%s", msg);
        int code = cinfo.err->msg_code == JERR_OUT_OF_MEMORY ? 3 : 1;
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(row);
        return code;
    }
    jpeg_create_decompress(&cinfo);
    progress.pub.progress_monitor = kd_progress;
    progress.err = &jerr;
    cinfo.progress = &progress.pub;
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    /* libjpeg's own allocations (a progressive image's coefficients, 2 bytes per sample) stay
       within what an image at the pixel limit needs; past that it fails instead of allocating. */
    cinfo.mem->max_memory_to_use = (long)(max_pixels * 8 + (64L << 20));
    if ((size_t)cinfo.image_width * cinfo.image_height > max_pixels) {
        snprintf(error, error_size, "image of %u×%u pixels exceeds the limit of %zu", cinfo.image_width,
                 cinfo.image_height, max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return 2;
    }
    *orientation = exif_orientation(&cinfo);
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    if (cmyk) cinfo.out_color_space = JCS_CMYK;
    else if (cinfo.num_components == 1) cinfo.out_color_space = JCS_GRAYSCALE;
    else cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int comps = cinfo.output_components;
    int outc = cmyk ? 3 : comps;
    size_t w = cinfo.output_width, h = cinfo.output_height;
    pixels = malloc(w * h * (size_t)outc + 1);
    row = malloc(w * (size_t)comps + 1);
    if (!pixels || !row) {
        free(row);
        snprintf(error, error_size, "out of memory");
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return 3;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {row};
        jpeg_read_scanlines(&cinfo, rows, 1);
        unsigned char *dst = pixels + y * w * (size_t)outc;
        if (cmyk) {
            // Adobe JPEGs store inverted CMYK; libjpeg hands it over as is.
            int inverted = cinfo.saw_Adobe_marker;
            for (size_t x = 0; x < w; x++) {
                unsigned c = row[4 * x], m = row[4 * x + 1], yy = row[4 * x + 2], k = row[4 * x + 3];
                if (!inverted) { c = 255 - c; m = 255 - m; yy = 255 - yy; k = 255 - k; }
                dst[3 * x] = (unsigned char)(c * k / 255);
                dst[3 * x + 1] = (unsigned char)(m * k / 255);
                dst[3 * x + 2] = (unsigned char)(yy * k / 255);
            }
        } else {
            memcpy(dst, row, w * (size_t)comps);
        }
    }
    free(row);
    row = NULL;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    *out = pixels;
    *width = (int)w;
    *height = (int)h;
    *channels = outc;
    return 0;
}

int kd_jpeg_encode(const unsigned char *pixels, int width, int height, int channels, int quality, int progressive,
                   unsigned char **out, unsigned long *out_size, char *error, size_t error_size) {
    struct jpeg_compress_struct cinfo;
    struct kd_error_mgr jerr;
    *out = NULL;
    *out_size = 0;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = kd_error_exit;
    if (setjmp(jerr.jump)) {
        char msg[JMSG_LENGTH_MAX];
        (*cinfo.err->format_message)((j_common_ptr)&cinfo, msg);
        snprintf(error, error_size, "%s", msg);
        jpeg_destroy_compress(&cinfo);
        return 1;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, out, out_size);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * (size_t)width * (size_t)channels);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    return 0;
}
