// A preload library that makes a process see the CPU without its AVX-512 and AMX features, so that a
// peer which picks its kernels from CPUID (ONNX Runtime's MLAS, NumPy) runs the AVX2 + FMA kernels it
// would run on a CPU without AVX-512. It is the peer of kdtool's AVX2 build (KDTOOL_PORTABLE=1) on a
// machine that has AVX-512: PyTorch has its own switches (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA),
// ONNX Runtime has none.
//
//     cc -O2 -shared -fPIC -o .build/peers/libavx2_cpuid.so Benchmarks/peers/avx2_cpuid.c
//     LD_PRELOAD=.build/peers/libavx2_cpuid.so python3 -c 'import onnxruntime'   # sees no AVX-512
//
// tools/setup-peers builds it and writes .build/peers/python-avx2, a Python that runs under it, for
// `kdtool bench --compare-onnxruntime --python .build/peers/python-avx2` (tools/perf_table.py's AVX2
// rows).
//
// How: Linux's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0); the CPU flag `cpuid_fault`) makes
// every CPUID instruction of the process raise SIGSEGV. The handler below runs the real CPUID with
// faulting briefly off, clears the AVX-512 and AMX bits of leaf 7, and resumes after the
// instruction. The setting is per thread and inherited by the threads and children a thread
// creates, so a thread pool started later sees the same CPU; execve resets it (the kernel's rule),
// which is why the Python is wrapped rather than preloaded into a launcher. The dynamic loader
// reads CPUID before this library's constructor, so glibc's own string functions keep their AVX-512
// variants, as kdtool's AVX2 build (linked to the same glibc) does too.
//
// Without CPUID faulting (an older CPU or hypervisor) the constructor says so and exits with status
// 3: a peer that silently ran its AVX-512 kernels would make the comparison unfair without notice.
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

// Leaf 7, sub-leaf 0. EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31.
#define LEAF7_EBX ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31))
// ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14.
#define LEAF7_ECX ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
// EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, FP16 23, AMX-TILE 24, AMX-INT8 25.
#define LEAF7_EDX ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25))
// Sub-leaf 1, EAX: AVX512_BF16 5.
#define LEAF7_1_EAX (1u << 5)

static int cpuid_faulting(int on) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {
        // A real fault: the default action, at the same instruction again.
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX];
    uint32_t a = leaf, b, c = sub, d;
    cpuid_faulting(0);
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~LEAF7_EBX;
        c &= ~LEAF7_ECX;
        d &= ~LEAF7_EDX;
    } else if (leaf == 7 && sub == 1) {
        a &= ~LEAF7_1_EAX;
    }
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void mask_avx512(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || cpuid_faulting(1) != 0) {
        fprintf(stderr, "avx2_cpuid: this CPU or kernel has no CPUID faulting, so AVX-512 cannot be hidden: %s\n",
                strerror(errno));
        _exit(3);
    }
}
