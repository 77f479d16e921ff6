// oneDNN (Debian's libdnnl 2.6) on the layers mobile students spend their time in, for the
// per-layer comparison in docs/performance.md: depthwise 3×3 and pointwise 1×1 convolutions with a
// fused ReLU6 (eltwise clip post-op), inference (forward_inference), in the blocked layout oneDNN
// picks (format_tag::any: nChw16c with AVX-512). Only the convolution primitive is timed, as
// Benchmarks/kernels/layers.swift times kdtool's kernels on their blocked layout.
//
//   g++ -O2 -std=c++17 Benchmarks/peers/onednn_layers.cpp -ldnnl -o .build/onednn_layers
//   OMP_NUM_THREADS=2 .build/onednn_layers        # one line per layer: name, batch, median ms
//   OMP_NUM_THREADS=2 .build/onednn_layers nChw8c # activations in kdtool's layout (8-channel blocks)
#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "mobile_layers.h"

using namespace dnnl;

int main(int argc, char **argv) {
    // With "nChw8c" the activations are fixed to kdtool's blocked layout instead of oneDNN's choice.
    bool tag8 = argc > 1 && std::string(argv[1]) == "nChw8c";
    engine eng(engine::kind::cpu, 0);
    stream strm(eng);
    for (const Layer &l : mobileLayers) {
        int pad = l.k / 2;
        int ho = (l.h + 2 * pad - l.k) / l.s + 1, wo = (l.w + 2 * pad - l.k) / l.s + 1;
        memory::dims src{l.n, l.c, l.h, l.w}, dst{l.n, l.o, ho, wo}, bias{l.o};
        memory::dims wts = l.groups > 1 ? memory::dims{l.groups, l.o / l.groups, l.c / l.groups, l.k, l.k}
                                        : memory::dims{l.o, l.c, l.k, l.k};
        auto any = memory::format_tag::any;
        auto act = tag8 ? memory::format_tag::nChw8c : any;
        memory::desc sd(src, memory::data_type::f32, act), dd(dst, memory::data_type::f32, act),
            wd(wts, memory::data_type::f32, any), bd(bias, memory::data_type::f32, memory::format_tag::x);
        post_ops ops;
        ops.append_eltwise(1.f, algorithm::eltwise_clip, 0.f, 6.f);
        primitive_attr attr;
        attr.set_post_ops(ops);
        convolution_forward::desc desc(prop_kind::forward_inference, algorithm::convolution_direct, sd, wd, bd, dd,
                                       {l.s, l.s}, {pad, pad}, {pad, pad});
        convolution_forward::primitive_desc pd(desc, attr, eng);
        memory s(pd.src_desc(), eng), w(pd.weights_desc(), eng), b(bd, eng), d(pd.dst_desc(), eng);
        std::fill((float *)s.get_data_handle(), (float *)s.get_data_handle() + pd.src_desc().get_size() / 4, 0.5f);
        std::fill((float *)w.get_data_handle(), (float *)w.get_data_handle() + pd.weights_desc().get_size() / 4, 0.01f);
        std::fill((float *)b.get_data_handle(), (float *)b.get_data_handle() + l.o, 0.1f);
        convolution_forward conv(pd);
        std::vector<double> times;
        for (int i = 0; i < 60; i++) {
            auto t0 = std::chrono::steady_clock::now();
            conv.execute(strm, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, d}});
            strm.wait();
            auto t1 = std::chrono::steady_clock::now();
            if (i >= 10) times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
        std::sort(times.begin(), times.end());
        std::printf("%s | batch %d | %.4f ms | %s\n", l.name, l.n, times[times.size() / 2], pd.impl_info_str());
    }
}
