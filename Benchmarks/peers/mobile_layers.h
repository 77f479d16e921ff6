// The layers mobile students spend their inference time in, shared by the library peers
// (onednn_layers.cpp, xnnpack_layers.cpp) and mirrored by Benchmarks/kernels/layers.swift.
#pragma once

struct Layer { const char *name; int n, c, o, h, w, k, s, groups; };

static const Layer mobileLayers[] = {
    {"dw3x3 s1 144ch 32x32", 1, 144, 144, 32, 32, 3, 1, 144},
    {"dw3x3 s2 144ch 32x32", 1, 144, 144, 32, 32, 3, 2, 144},
    {"pw 24->144 32x32", 1, 24, 144, 32, 32, 1, 1, 1},
    {"pw 144->24 32x32", 1, 144, 24, 32, 32, 1, 1, 1},
    {"pw 320->1280 4x4", 1, 320, 1280, 4, 4, 1, 1, 1},
    {"dw3x3 s1 144ch 32x32", 64, 144, 144, 32, 32, 3, 1, 144},
    {"pw 24->144 32x32", 64, 24, 144, 32, 32, 1, 1, 1},
    {"pw 320->1280 4x4", 64, 320, 1280, 4, 4, 1, 1, 1},
    {"dw3x3 s1 144ch 56x56", 1, 144, 144, 56, 56, 3, 1, 144},
    {"pw 24->144 56x56", 1, 24, 144, 56, 56, 1, 1, 1},
    {"dw5x5 s1 240ch 8x8", 1, 240, 240, 8, 8, 5, 1, 240},
    {"dw5x5 s1 672ch 4x4", 1, 672, 672, 4, 4, 5, 1, 672},
    {"dw5x5 s2 144ch 16x16", 1, 144, 144, 16, 16, 5, 2, 144},
    {"dw5x5 s1 240ch 8x8", 64, 240, 240, 8, 8, 5, 1, 240},
};
