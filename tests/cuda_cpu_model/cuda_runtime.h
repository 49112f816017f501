// A CPU model of the CUDA features the CUDA editorials of challenges 98 and 99 use, so that
// their kernels run, unchanged, on a machine without a GPU (tests/test_challenge_98.py and
// tests/test_challenge_99.py build them with g++, with fp8_cpu_model.cpp and mla_cpu_model.cpp).
//
// An editorial includes <cuda_runtime.h> (and <cuda_fp16.h>, <cuda_fp8.h>); with this folder
// first on the include path it gets the files here instead, and with CUDA_CPU_MODEL defined it
// leaves out its inline PTX and its CUDA host code, which these files replace:
// - every GPU thread is a fiber (ucontext) of one OS thread, run by a round-robin scheduler
//   that resumes a fiber only when what it waits for has happened, and reports a deadlock when
//   no fiber can run;
// - static __shared__ variables are static, which holds for CTAs launched one at a time (the
//   CTAs of a cluster would share them; the cluster kernels keep all in dynamic shared memory);
// - cuda_fp16.h and cuda_fp8.h here give the float16 packing and the exact E4M3 conversion;
// - __syncthreads, __syncwarp, cluster barriers, shuffles, votes, mma.sync (m16n8k16 and
//   m16n8k8, fp16 inputs, fp32 accumulators) and movmatrix meet all threads of their warp,
//   CTA or cluster, and a warp whose lanes reach different collectives aborts;
// - the operand layouts of mma.sync and movmatrix are the PTX ISA's, built lane by lane;
// - wgmma (m64nNk16, fp16, A from registers, B through a shared-memory descriptor, K-major
//   with the 128-byte swizzle or without swizzle, N-major with the 128-byte swizzle) meets the
//   CTA's 128 threads (one warpgroup) and completes at once: commit and wait are no-ops;
// - st.async writes a peer CTA's shared memory at once and completes its bytes on the peer's
//   barrier; a "cluster address" (mapa) is the rank and the offset in one word;
// - mbarriers keep the arrival and transaction counts and the phase of the hardware, and
//   try_wait.parity succeeds once the phase of that parity has completed;
// - a bulk copy lands one scheduler round after it is issued (then completes its bytes on the
//   barrier of every destination CTA), so a thread that reads a stage before waiting on its
//   barrier reads stale data; shared memory starts as NaN.
// Products are exact and sums are taken in double, so this checks the kernel's indexing,
// fragments, pipeline and merge, not the tensor cores' own rounding.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <unordered_map>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    uint32_t x, y;
};
struct alignas(16) uint4 {
    uint32_t x, y, z, w;
};
struct uint3 {
    unsigned x, y, z;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint2 make_uint2(uint32_t x, uint32_t y) { return uint2{x, y}; }
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) {
    return uint4{x, y, z, w};
}
using std::max;
using std::min;

// the bits of `from` as a To of the same size (C++20's std::bit_cast)
template <class To, class From>
inline To bit_cast(const From& from) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
    To to;
    std::memcpy(&to, &from, sizeof(To));
    return to;
}
inline float __uint_as_float(uint32_t u) { return bit_cast<float>(u); }
inline uint32_t __float_as_uint(float f) { return bit_cast<uint32_t>(f); }
inline float __ldcg(const float* p) { return *p; }
inline float4 __ldcg(const float4* p) { return *p; }
inline uint2 __ldcs(const uint2* p) { return *p; }
inline uint4 __ldcs(const uint4* p) { return *p; }
// byte i of the result: byte (selector >> 4i) & 7 of the eight bytes of (y, x)
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t selector) {
    const uint64_t bytes = (static_cast<uint64_t>(y) << 32) | x;
    uint32_t out = 0;
    for (int i = 0; i < 4; ++i)
        out |= static_cast<uint32_t>((bytes >> (8 * ((selector >> (4 * i)) & 7))) & 0xff)
               << (8 * i);
    return out;
}
inline void __threadfence() {}
inline unsigned atomicAdd(unsigned* p, unsigned v) {  // fibers never interleave inside it
    const unsigned old = *p;
    *p = old + v;
    return old;
}

namespace cpu_model {

constexpr int kWarp = 32;
constexpr size_t kStack = 128 * 1024;

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "cpu model: %s\n", what);
    std::abort();
}

enum class Wait { kNothing, kCounter, kPhase };

struct Cta;
struct Thread {
    ucontext_t context;
    std::vector<char> stack;
    uint3 thread_idx;
    Cta* cta;
    int lane, warp;
    bool done = false;
    Wait wait = Wait::kNothing;
    const long* counter = nullptr;  // kCounter: runnable once *counter > after
    long after = 0;
    const void* barrier = nullptr;  // kPhase: runnable once that barrier's phase completed
    unsigned parity = 0;
};

struct Mbarrier {
    unsigned count = 0, pending = 0;  // arrivals per phase, arrivals still expected
    long tx = 0;                      // bytes still expected (may dip below 0 for a while)
    long phases = 0;                  // completed phases
};

// threads that meet: a warp (which also carries its collectives' operands), a CTA, a cluster
struct Meeting {
    long generation = 0;
    int arrived = 0;
    int op[2][kWarp];
    uint32_t in[2][kWarp][12];
    uint32_t out[2][kWarp][4];
};

// the operands the 128 threads of a warpgroup give one wgmma
struct WarpgroupMma {
    long generation = 0;
    int arrived = 0;
    float* d[128];
    uint32_t a[128][4];
};

struct Cta {
    uint3 block_idx;
    std::vector<unsigned char> memory;
    unsigned char* base;  // dynamic shared memory, 128-byte aligned
    size_t bytes;
    Meeting block;
    Meeting warps[32];
    WarpgroupMma wgmma;
};

struct Copy {
    unsigned char* dst;
    const void* src;
    unsigned bytes;
    const void* barrier;
};

struct Runtime {
    std::vector<Cta*> ctas;  // the cluster, by rank
    Meeting cluster;
    std::vector<Thread*> threads;
    std::unordered_map<const void*, Mbarrier> barriers;
    std::vector<Copy> in_flight;
    std::function<void()> body;
    ucontext_t scheduler;
    Thread* current = nullptr;
    int threads_per_cta = 0;
    uint3 grid_dim{1, 1, 1};  // gridDim: a driver sets it for kernels that read it
};

inline Runtime& rt() {
    static Runtime runtime;
    return runtime;
}
inline Thread& self() { return *rt().current; }

inline void yield() { swapcontext(&self().context, &rt().scheduler); }

inline void wait_counter(const long* counter, long after) {
    Thread& t = self();
    t.wait = Wait::kCounter;
    t.counter = counter;
    t.after = after;
    yield();
    t.wait = Wait::kNothing;
}

inline Mbarrier& barrier_at(const void* address) {
    auto it = rt().barriers.find(address);
    if (it == rt().barriers.end()) fail("mbarrier used before mbarrier.init");
    return it->second;
}

inline bool phase_done(const void* address, unsigned parity) {
    return static_cast<unsigned>(barrier_at(address).phases & 1) != parity;
}

inline bool runnable(const Thread& t) {
    if (t.wait == Wait::kCounter) return *t.counter > t.after;
    if (t.wait == Wait::kPhase) return phase_done(t.barrier, t.parity);
    return true;
}

inline void meet(Meeting& m, int members) {
    const long mine = m.generation;
    if (++m.arrived == members) {
        m.arrived = 0;
        ++m.generation;
    } else {
        wait_counter(&m.generation, mine);
    }
}

// a warp-wide operation: each lane gives n_in words, the last lane to arrive computes every
// lane's n_out result words from all of them
template <class Compute>
void warp_collective(int op, const uint32_t* in, int n_in, uint32_t* out, int n_out,
                     Compute compute) {
    Thread& t = self();
    Meeting& w = t.cta->warps[t.warp];
    const long mine = w.generation;
    const int slot = static_cast<int>(mine & 1);
    w.op[slot][t.lane] = op;
    if (n_in) std::memcpy(w.in[slot][t.lane], in, 4 * n_in);
    if (++w.arrived == kWarp) {
        for (int lane = 0; lane < kWarp; ++lane)
            if (w.op[slot][lane] != op) fail("the lanes of a warp reached different collectives");
        compute(w.in[slot], w.out[slot]);
        w.arrived = 0;
        ++w.generation;
    } else {
        wait_counter(&w.generation, mine);
    }
    if (n_out) std::memcpy(out, w.out[slot][t.lane], 4 * n_out);
}

inline void arrive(Mbarrier& b) {
    if (b.pending == 0) fail("more arrivals than the mbarrier's count in one phase");
    --b.pending;
    if (b.pending == 0 && b.tx == 0) {
        ++b.phases;
        b.pending = b.count;
    }
}

inline void complete_tx(Mbarrier& b, unsigned bytes) {
    b.tx -= bytes;
    if (b.pending == 0 && b.tx == 0) {
        ++b.phases;
        b.pending = b.count;
    }
}

inline Cta& rank_of(unsigned rank) {
    if (rank >= rt().ctas.size()) fail("a CTA rank outside the cluster");
    return *rt().ctas[rank];
}

// the same shared-memory offset as `p` (in this CTA) in the CTA of rank `rank`
inline unsigned char* peer(const void* p, unsigned rank) {
    Cta& mine = *self().cta;
    const size_t offset = static_cast<const unsigned char*>(p) - mine.base;
    if (offset >= mine.bytes) fail("a shared-memory address outside the CTA's");
    return rank_of(rank).base + offset;
}

inline void land_copies() {
    std::vector<Copy> copies;
    copies.swap(rt().in_flight);
    for (const Copy& c : copies) {
        std::memcpy(c.dst, c.src, c.bytes);
        complete_tx(barrier_at(c.barrier), c.bytes);
    }
}

inline void entry() {
    rt().body();
    self().done = true;
    swapcontext(&self().context, &rt().scheduler);
}

// Run `body` as the kernel of one cluster of `size` CTAs, the first at block index `first`.
inline void launch_cluster(int size, uint3 first, int threads, size_t smem_bytes,
                           std::function<void()> body) {
    Runtime& r = rt();
    r.barriers.clear();
    r.in_flight.clear();
    r.cluster = Meeting();
    r.threads_per_cta = threads;
    r.body = std::move(body);
    std::vector<Cta> ctas(size);
    std::vector<Thread> pool(static_cast<size_t>(size) * threads);
    r.ctas.clear();
    r.threads.clear();
    for (int k = 0; k < size; ++k) {
        Cta& cta = ctas[k];
        cta.block_idx = uint3{first.x + k, first.y, first.z};
        cta.memory.assign(smem_bytes + 128, 0xff);  // NaN in every float until written
        cta.base = cta.memory.data() + (128 - reinterpret_cast<uintptr_t>(cta.memory.data()) % 128);
        cta.bytes = smem_bytes;
        r.ctas.push_back(&cta);
        for (int i = 0; i < threads; ++i) {
            Thread& t = pool[static_cast<size_t>(k) * threads + i];
            t.thread_idx = uint3{static_cast<unsigned>(i), 0, 0};
            t.cta = &cta;
            t.lane = i % kWarp;
            t.warp = i / kWarp;
            t.stack.resize(kStack);
            getcontext(&t.context);
            t.context.uc_stack.ss_sp = t.stack.data();
            t.context.uc_stack.ss_size = kStack;
            t.context.uc_link = nullptr;
            makecontext(&t.context, entry, 0);
            r.threads.push_back(&t);
        }
    }
    for (;;) {
        bool all_done = true, progress = false;
        for (Thread* t : r.threads) {
            if (t->done) continue;
            all_done = false;
            if (!runnable(*t)) continue;
            r.current = t;
            swapcontext(&r.scheduler, &t->context);
            progress = true;
        }
        if (all_done) break;
        if (!r.in_flight.empty()) {
            land_copies();
            progress = true;
        }
        if (!progress) fail("deadlock: every thread waits and no copy is in flight");
    }
    if (!r.in_flight.empty()) fail("bulk copies still in flight when the cluster exited");
    r.current = nullptr;
    r.ctas.clear();
    r.threads.clear();
}

}  // namespace cpu_model

#define threadIdx (cpu_model::self().thread_idx)
#define blockIdx (cpu_model::self().cta->block_idx)
#define gridDim (cpu_model::rt().grid_dim)

inline void __syncthreads() {
    cpu_model::meet(cpu_model::self().cta->block, cpu_model::rt().threads_per_cta);
}

inline void __syncwarp(unsigned = 0xffffffffu) {
    cpu_model::warp_collective(1, nullptr, 0, nullptr, 0, [](auto, auto) {});
}

inline float __shfl_xor_sync(unsigned, float value, int lane_mask) {
    uint32_t in = __float_as_uint(value), out;
    cpu_model::warp_collective(2, &in, 1, &out, 1, [lane_mask](auto ins, auto outs) {
        for (int lane = 0; lane < cpu_model::kWarp; ++lane)
            outs[lane][0] = ins[lane ^ lane_mask][0];
    });
    return __uint_as_float(out);
}

// each lane gives its value and the lane it reads (taken modulo 32, as CUDA does)
inline uint32_t __shfl_sync(unsigned, uint32_t value, int source) {
    const uint32_t in[2] = {value, static_cast<uint32_t>(source)};
    uint32_t out;
    cpu_model::warp_collective(7, in, 2, &out, 1, [](auto ins, auto outs) {
        for (int lane = 0; lane < cpu_model::kWarp; ++lane)
            outs[lane][0] = ins[ins[lane][1] % cpu_model::kWarp][0];
    });
    return out;
}
inline float __shfl_sync(unsigned mask, float value, int source) {
    return __uint_as_float(__shfl_sync(mask, __float_as_uint(value), source));
}

inline int __any_sync(unsigned, int predicate) {
    uint32_t in = predicate != 0, out;
    cpu_model::warp_collective(3, &in, 1, &out, 1, [](auto ins, auto outs) {
        uint32_t any = 0;
        for (int lane = 0; lane < cpu_model::kWarp; ++lane) any |= ins[lane][0];
        for (int lane = 0; lane < cpu_model::kWarp; ++lane) outs[lane][0] = any;
    });
    return static_cast<int>(out);
}

// ---- the primitives the editorials define in PTX ----

inline uint16_t f16_bits(float x) {  // round to nearest even, subnormals kept
    return bit_cast<uint16_t>(static_cast<_Float16>(x));
}

inline float f16_value(uint16_t bits) { return static_cast<float>(bit_cast<_Float16>(bits)); }

inline uint32_t pack_f16x2(float first, float second) {
    return (static_cast<uint32_t>(f16_bits(second)) << 16) | f16_bits(first);
}

inline float2 unpack_f16x2(uint32_t x) {
    return make_float2(f16_value(static_cast<uint16_t>(x)),
                       f16_value(static_cast<uint16_t>(x >> 16)));
}

inline double f16_at(uint32_t pair, int which) {
    return f16_value(static_cast<uint16_t>(pair >> (16 * which)));
}

// the operands of one lane of mma.m16n8k{16,8}: A (16 x k, row), B (k x 8, col), C (16 x 8)
inline void mma_model(int k, const uint32_t (*in)[12], uint32_t (*out)[4]) {
    double a[16][16] = {}, b[16][8] = {}, c[16][8] = {};
    const int a_regs = k / 4;
    for (int lane = 0; lane < cpu_model::kWarp; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int r = 0; r < a_regs; ++r)  // a0: (g, 2t), a1: (g + 8, 2t), a2: (g, 2t + 8), a3
            for (int e = 0; e < 2; ++e)
                a[g + 8 * (r & 1)][2 * t + 8 * (r >> 1) + e] = f16_at(in[lane][r], e);
        for (int r = 0; r < k / 8; ++r)  // b0: (k = 2t, n = g), b1: (k = 2t + 8, n = g)
            for (int e = 0; e < 2; ++e) b[2 * t + 8 * r + e][g] = f16_at(in[lane][a_regs + r], e);
        for (int e = 0; e < 4; ++e)  // c0, c1: (g, 2t + {0, 1}); c2, c3: (g + 8, ...)
            c[g + 8 * (e >> 1)][2 * t + (e & 1)] = __uint_as_float(in[lane][a_regs + k / 8 + e]);
    }
    for (int lane = 0; lane < cpu_model::kWarp; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int e = 0; e < 4; ++e) {
            const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
            double sum = c[row][col];
            for (int i = 0; i < k; ++i) sum += a[row][i] * b[i][col];
            out[lane][e] = __float_as_uint(static_cast<float>(sum));
        }
    }
}

inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    uint32_t in[10] = {a[0], a[1], a[2], a[3], b0, b1};
    for (int e = 0; e < 4; ++e) in[6 + e] = __float_as_uint(d[e]);
    uint32_t out[4];
    cpu_model::warp_collective(4, in, 10, out, 4,
                               [](auto ins, auto outs) { mma_model(16, ins, outs); });
    for (int e = 0; e < 4; ++e) d[e] = __uint_as_float(out[e]);
}

inline void mma_1688(float (&d)[4], const uint32_t (&a)[2], uint32_t b) {
    uint32_t in[7] = {a[0], a[1], b};
    for (int e = 0; e < 4; ++e) in[3 + e] = __float_as_uint(d[e]);
    uint32_t out[4];
    cpu_model::warp_collective(5, in, 7, out, 4,
                               [](auto ins, auto outs) { mma_model(8, ins, outs); });
    for (int e = 0; e < 4; ++e) d[e] = __uint_as_float(out[e]);
}

// movmatrix.m8n8.trans.b16: lane l holds row l / 4, columns 2 (l % 4) + {0, 1}, low half first
inline uint32_t transpose_8x8(uint32_t x) {
    uint32_t out;
    cpu_model::warp_collective(6, &x, 1, &out, 1, [](auto ins, auto outs) {
        uint16_t m[8][8];
        for (int lane = 0; lane < cpu_model::kWarp; ++lane)
            for (int e = 0; e < 2; ++e)
                m[lane / 4][2 * (lane % 4) + e] = static_cast<uint16_t>(ins[lane][0] >> (16 * e));
        for (int lane = 0; lane < cpu_model::kWarp; ++lane) {
            const int row = lane / 4, col = 2 * (lane % 4);
            outs[lane][0] = m[col][row] | (static_cast<uint32_t>(m[col + 1][row]) << 16);
        }
    });
    return out;
}

inline unsigned char* shared_memory_base() { return cpu_model::self().cta->base; }

inline void mbar_init(uint64_t* bar, unsigned count) {
    cpu_model::Mbarrier& b = cpu_model::rt().barriers[bar];
    b = cpu_model::Mbarrier();
    b.count = b.pending = count;
}

inline void fence_barrier_init() {}

inline void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
    cpu_model::Mbarrier& b = cpu_model::barrier_at(bar);
    b.tx += bytes;
    cpu_model::arrive(b);
}

inline void mbar_wait(uint64_t* bar, unsigned parity) {
    if (cpu_model::phase_done(bar, parity)) return;
    cpu_model::Thread& t = cpu_model::self();
    t.wait = cpu_model::Wait::kPhase;
    t.barrier = bar;
    t.parity = parity;
    cpu_model::yield();
    t.wait = cpu_model::Wait::kNothing;
}

inline void mbar_arrive_in(uint64_t* bar, unsigned cta) {
    cpu_model::arrive(cpu_model::barrier_at(cpu_model::peer(bar, cta)));
}

inline void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar, unsigned mask) {
    if (bytes % 16 || reinterpret_cast<uintptr_t>(src) % 16 ||
        reinterpret_cast<uintptr_t>(dst) % 16)
        cpu_model::fail("a bulk copy needs 16-byte aligned addresses and sizes");
    if (mask == 0 || mask >> cpu_model::rt().ctas.size())
        cpu_model::fail("a multicast mask outside the cluster");
    for (unsigned rank = 0; rank < cpu_model::rt().ctas.size(); ++rank) {
        if (!(mask >> rank & 1)) continue;
        unsigned char* to = cpu_model::peer(dst, rank);
        if (static_cast<size_t>(to - cpu_model::rank_of(rank).base) + bytes >
            cpu_model::rank_of(rank).bytes)
            cpu_model::fail("a bulk copy past the end of shared memory");
        cpu_model::rt().in_flight.push_back({to, src, bytes, cpu_model::peer(bar, rank)});
    }
}

inline void cluster_sync() {
    cpu_model::Runtime& r = cpu_model::rt();
    cpu_model::meet(r.cluster, static_cast<int>(r.ctas.size()) * r.threads_per_cta);
}

// ---- the sm_90a primitives of the wgmma kernel ----

inline unsigned cluster_rank() {
    cpu_model::Runtime& r = cpu_model::rt();
    for (unsigned rank = 0; rank < r.ctas.size(); ++rank)
        if (r.ctas[rank] == cpu_model::self().cta) return rank;
    cpu_model::fail("a thread outside its cluster");
}

// a shared-memory address: the offset in the CTA's dynamic shared memory (the base counts as
// 1024-byte aligned, as the kernel's swizzled blocks need)
inline uint32_t smem_addr(const void* p) {
    cpu_model::Cta& cta = *cpu_model::self().cta;
    const size_t offset = static_cast<const unsigned char*>(p) - cta.base;
    if (offset >= cta.bytes) cpu_model::fail("a shared-memory address outside the CTA's");
    return static_cast<uint32_t>(offset);
}

inline void fence_proxy_async() {}
inline void wgmma_fence() {}
inline void wgmma_commit() {}
inline void wgmma_wait_all() {}

namespace cpu_model {

// The element (k, n) of B as a wgmma descriptor lays it out in this CTA's shared memory, fp16.
inline double descriptor_element(uint64_t desc, bool n_major, int k, int n) {
    const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
    const uint32_t leading = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
    const uint32_t stride = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
    const int swizzle = static_cast<int>(desc >> 62);
    uint32_t at;
    if (swizzle == 1 && !n_major)  // rows of 128 bytes along k, 8-row groups `stride` apart
        at = start + (n / 8) * stride + (n % 8) * 128 + k * 2;
    else if (swizzle == 1)  // rows of 128 bytes along n (64-column atoms `leading` apart)
        at = start + (n / 64) * leading + (k / 8) * stride + (k % 8) * 128 + (n % 64) * 2;
    else if (swizzle == 0 && !n_major)  // 8 x 8 core matrices: along k `leading`, n `stride`
        at = start + (n / 8) * stride + (k / 8) * leading + (n % 8) * 16 + (k % 8) * 2;
    else
        fail("a wgmma operand layout the model does not know");
    if (swizzle == 1) at ^= ((at >> 7) & 7) << 4;  // the 16-byte chunk XOR the row in 8
    Cta& cta = *self().cta;
    if (at + 2 > cta.bytes) fail("a wgmma operand outside shared memory");
    uint16_t bits;
    std::memcpy(&bits, cta.base + at, 2);
    return f16_value(bits);
}

// d (n / 2 floats a thread) = a * b (+ d): the CTA's 128 threads meet, the last computes
inline void wgmma_model(int n, bool n_major, float* d, const uint32_t (&a)[4], uint64_t desc,
                        bool accumulate) {
    Thread& t = self();
    if (rt().threads_per_cta != 128) fail("wgmma needs the CTA to be one warpgroup");
    WarpgroupMma& w = t.cta->wgmma;
    const int me = static_cast<int>(t.thread_idx.x);
    w.d[me] = d;
    std::memcpy(w.a[me], a, sizeof(a));
    const long mine = w.generation;
    if (++w.arrived < 128) {
        wait_counter(&w.generation, mine);
        return;
    }
    double A[64][16], B[16][256];
    for (int th = 0; th < 128; ++th) {  // a0: (g, 2t), a1: (g + 8, 2t), a2: (g, 2t + 8), a3
        const int warp = th / 32, g = (th % 32) / 4, tq = th % 4;
        for (int r = 0; r < 4; ++r)
            for (int e = 0; e < 2; ++e)
                A[16 * warp + g + 8 * (r & 1)][2 * tq + 8 * (r >> 1) + e] = f16_at(w.a[th][r], e);
    }
    for (int k = 0; k < 16; ++k)
        for (int col = 0; col < n; ++col) B[k][col] = descriptor_element(desc, n_major, k, col);
    for (int th = 0; th < 128; ++th) {  // d[4 i + e]: row g + 8 (e / 2), column 8 i + 2 t + e % 2
        const int warp = th / 32, g = (th % 32) / 4, tq = th % 4;
        for (int i = 0; i < n / 8; ++i)
            for (int e = 0; e < 4; ++e) {
                const int row = 16 * warp + g + 8 * (e >> 1), col = 8 * i + 2 * tq + (e & 1);
                double sum = accumulate ? w.d[th][4 * i + e] : 0.0;
                for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
                w.d[th][4 * i + e] = static_cast<float>(sum);
            }
    }
    w.arrived = 0;
    ++w.generation;
}

}  // namespace cpu_model

template <int TRANS_B>
inline void wgmma_m64n32k16(float (&d)[16], const uint32_t (&a)[4], uint64_t desc, int accumulate) {
    cpu_model::wgmma_model(32, TRANS_B != 0, d, a, desc, accumulate != 0);
}
inline void wgmma_m64n32k16_first(float (&d)[16], const uint32_t (&a)[4], uint64_t desc) {
    cpu_model::wgmma_model(32, false, d, a, desc, false);
}
template <int TRANS_B>
inline void wgmma_m64n128k16(float (&d)[64], const uint32_t (&a)[4], uint64_t desc,
                             int accumulate) {
    cpu_model::wgmma_model(128, TRANS_B != 0, d, a, desc, accumulate != 0);
}
inline void zero_accumulators(float (&d)[64]) {
    for (float& x : d) x = 0.f;
}

// a cluster address: the rank in the top byte, the shared-memory offset below
inline uint32_t cluster_address(const void* local, unsigned rank) {
    cpu_model::rank_of(rank);
    return rank << 24 | smem_addr(local);
}

inline void store_remote(uint32_t to, float4 v, uint32_t bar) {
    cpu_model::Cta& peer = cpu_model::rank_of(to >> 24);
    const uint32_t offset = to & 0xFFFFFF;
    if ((to >> 24) != (bar >> 24)) cpu_model::fail("st.async to one CTA, its barrier in another");
    if (offset % 16 || offset + 16 > peer.bytes) cpu_model::fail("a misplaced st.async");
    std::memcpy(peer.base + offset, &v, 16);
    cpu_model::complete_tx(cpu_model::barrier_at(peer.base + (bar & 0xFFFFFF)), 16);
}

inline void mbar_wait_local(uint64_t* bar, unsigned parity) { mbar_wait(bar, parity); }
