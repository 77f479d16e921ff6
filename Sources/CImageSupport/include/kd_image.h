#ifndef KD_IMAGE_H
#define KD_IMAGE_H
#include <stddef.h>

/// Decodes a JPEG held in memory into 8-bit pixels with 1 (gray) or 3 (RGB) channels; CMYK and
/// YCCK inputs are converted to RGB. Returns 0 on success and fills *out (malloc'd; the caller
/// frees it), *width, *height, *channels; on failure returns non-zero and writes libjpeg's
/// message into `error` (size `error_size`). Images above `max_pixels` are refused after the
/// header is read, before any pixel buffer is allocated. `orientation` receives the EXIF
/// orientation tag (1 when absent).
int kd_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **out, int *width,
                   int *height, int *channels, int *orientation, char *error, size_t error_size);

/// Encodes 8-bit gray, RGB or (4 channels) CMYK pixels as a baseline (or progressive) JPEG in
/// memory, for tests and sample folders.
int kd_jpeg_encode(const unsigned char *pixels, int width, int height, int channels, int quality, int progressive,
                   unsigned char **out, unsigned long *out_size, char *error, size_t error_size);
#endif
