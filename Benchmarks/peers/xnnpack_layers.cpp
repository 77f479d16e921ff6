// XNNPACK (Debian's libxnnpack 0.0~git20220216) on the same layers as onednn_layers.cpp, for the
// per-layer comparison in docs/performance.md: depthwise 3×3 and pointwise 1×1 convolutions with a
// fused ReLU6 (output_min 0, output_max 6), NHWC, inference. Operators are created once (weights
// packed then); only xnn_run_operator is timed, on a pthreadpool of 2 threads.
//
//   g++ -O2 -std=c++17 Benchmarks/peers/xnnpack_layers.cpp -lXNNPACK -lpthreadpool -o .build/xnnpack_layers
//   .build/xnnpack_layers [threads]        # one line per layer: name, batch, median ms
#include <xnnpack.h>
#include <pthreadpool.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "mobile_layers.h"

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (xnn_initialize(nullptr) != xnn_status_success) { fprintf(stderr, "xnn_initialize failed\n"); return 1; }
    pthreadpool_t pool = pthreadpool_create(threads);
    for (const Layer &l : mobileLayers) {
        int pad = l.k / 2;
        int ho = (l.h + 2 * pad - l.k) / l.s + 1, wo = (l.w + 2 * pad - l.k) / l.s + 1;
        size_t gi = l.c / l.groups, go = l.o / l.groups;
        std::vector<float> x((size_t)l.n * l.h * l.w * l.c, 0.5f), y((size_t)l.n * ho * wo * l.o);
        std::vector<float> wts((size_t)l.o * gi * l.k * l.k, 0.01f), bias(l.o, 0.1f);
        xnn_operator_t op = nullptr;
        // XNNPACK's depthwise flag: one filter per channel, weights [1, k, k, channels].
        uint32_t flags = l.groups > 1 ? XNN_FLAG_DEPTHWISE_CONVOLUTION : 0;
        if (xnn_create_convolution2d_nhwc_f32(pad, pad, pad, pad, l.k, l.k, l.s, l.s, 1, 1, l.groups, gi, go, l.c, l.o,
                                              wts.data(), bias.data(), 0.f, 6.f, flags, &op) != xnn_status_success ||
            xnn_setup_convolution2d_nhwc_f32(op, l.n, l.h, l.w, x.data(), y.data(), pool) != xnn_status_success) {
            fprintf(stderr, "%s: XNNPACK refused the layer\n", l.name);
            return 1;
        }
        std::vector<double> times;
        for (int i = 0; i < 60; i++) {
            auto t0 = std::chrono::steady_clock::now();
            xnn_run_operator(op, pool);
            auto t1 = std::chrono::steady_clock::now();
            if (i >= 10) times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
        std::sort(times.begin(), times.end());
        printf("%-24s batch %3d  %8.3f ms\n", l.name, l.n, times[times.size() / 2]);
        xnn_delete_operator(op);
    }
    pthreadpool_destroy(pool);
    return 0;
}
