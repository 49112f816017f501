// MLA decode (weight-absorbed) on tensor cores with fp16x3 error-compensated products,
// split-KV in one kernel. Two kernels: DeepSeek's shape (kv_lora_rank 512, rope_dim 64) runs on
// wgmma (7-10 below), every other shape on mma.sync (2-4).
//
// The floors. At the performance shape (batch 16, 128 heads, 8,192 tokens, kv_lora_rank 512,
// rope_dim 64, fp32) the cache is 16 * 8192 * (512 + 64) * 4 B = 302.0 MB, 310.9 MB with the
// queries and the output: ~74 us at ~4.2 TB/s of streaming read (H200). The arithmetic is
// 2 * 16 * 128 * 8192 * (2 * 512 + 64) = 36.5 GFLOP: ~545 us on fp32 CUDA cores (~67 TFLOP/s),
// ~221 us as 3xTF32 (three TF32 products at the ~495 TFLOP/s dense peak: ~165 effective), and
// ~111 us as fp16x3, the arithmetic used here (three FP16 products at the ~989 TFLOP/s dense
// peak: ~330 effective; ~143-147 us at the fp16 peak that scripts/benchmark.py measures with
// a matmul). Every head reads the same 576 floats per token, ~120 FLOP per byte: with any of
// these the kernel is bound by arithmetic.
//
// 1. fp16x3. Each fp32 operand x is split into hi = fp16(x) and lo = fp16(x - hi) (11 + 11
//    significant bits) and a product is hi*hi + hi*lo + lo*hi, accumulated in fp32 by the
//    tensor cores: ~2^-21 relative error per product, the accuracy of 3xTF32, at half of its
//    tensor-core time. FP16 needs the values in its range: the inputs are bounded by the
//    challenge (|x| <= 1,000), the softmax weights lie in [0, 2^8] (see 5), and the scale is
//    applied to the fp32 scores, not to the queries; a tiny value loses relative precision as
//    an fp16 subnormal but keeps an absolute error below 2^-25. (bf16x3, with no range to
//    mind, is ~2^-17 per product: on scores of a few hundred that spends up to half the 1e-3
//    tolerance.) The scores are S = Q_nope Kc^T + Q_pe Kpe^T, the output O += P Kc: the latent
//    tile Kc is the key of the first product and the value of the second.
//
// The mma.sync kernel (any shape):
// 2. Registers hold the queries, so S reads only the tile. A CTA takes 32 heads: their queries
//    (32 x 576 as fp16 hi/lo, 72 registers a thread) and outputs (32 x 512 fp32, 64 registers)
//    fit in its registers, where 128 heads would need 2.2 times the register file. Each of its
//    8 warps owns a slice of the dimensions: latent chunks of 16 (warp w: chunks w, w+8, w+16,
//    w+24) and one rotary chunk of 8. For S it multiplies its slice of Q by its slice of the
//    tile (a partial score for all 32 heads, summed across warps in shared memory); for
//    O += P Kc it owns the same latent columns of O, and the tile slice it already holds in
//    registers is transposed into the value fragments with movmatrix: each element of the
//    tile is read from shared memory once and split once per CTA.
// 3. A cluster of CTAs (one per 32 heads) shares every tile: each CTA copies its share of the
//    tile's rows with cp.async.bulk, multicast into the shared memory of all, so a token is
//    read once from L2 for all heads. Four stages of 16 tokens; a full mbarrier per stage
//    counts the bytes landing, an empty one counts the release by all warps of the cluster.
// 4. On the performance shape this kernel took ~970 us on an H200 (ncu: one CTA of 8 warps
//    per SM, 11% of issue slots used, two barriers per 16-token tile).
//
// Both kernels:
// 5. Online softmax in base 2: the scores are scaled by softmax_scale * log2(e), one exp2 per
//    weight. The wgmma kernel rescales lazily: its reference maximum moves only when a score
//    passes it by more than 8 (so the weights stay below 2^8), which after the first tiles is
//    rare.
// 6. Split-KV: the cache is cut into `splits` chunks, the fewest that keep the waves of
//    resident clusters (from the occupancy API) at least 90% full (at the performance shape on
//    an H200: 62 clusters of the wgmma kernel resident, 7 chunks, 224 clusters in 4 waves).
//    Each CTA writes its chunk's normalized output and log2-sum-exp2; the last CTA of a group
//    to finish, counted with an atomic, merges the chunks. One kernel, one launch.
//
// The wgmma kernel (DeepSeek's shape):
// 7. Why a cluster splits the dimensions. wgmma's m is 64, so a CTA takes 64 heads; their
//    queries (64 x 576 as hi and lo: 147 KB) and outputs (64 x 512 fp32: 131 KB) together
//    exceed the 256 KB register file, and a second 64-row operand in shared memory would leave
//    no room for the tiles. So a cluster of four CTAs splits the 576 dimensions: CTA c holds
//    the queries of latent columns [128c, 128c + 128) and rotary columns [16c, 16c + 16) as A
//    fragments (72 registers a thread), owns those 128 output columns (64 registers), and
//    reads only its quarter of every cache row.
// 8. A 32-token tile, in each CTA of 128 threads (one warpgroup): its quarter of the rows is
//    loaded a tile ahead into registers, split into fp16 hi and lo parts and stored in one of
//    three buffers (the latent part as blocks of 64 columns with wgmma's 128-byte swizzle, the
//    rotary part as 8 x 8 core matrices); S over the CTA's 144 columns is 27 wgmma m64n32k16
//    (A: the queries, B: the buffer, K-major); the partial S (8 KB) goes to the three other
//    CTAs by st.async, completing on their mbarrier, and each CTA sums the four in rank order
//    (the same bits in all four, so all take the same softmax); then O += P Kc is 6 wgmma
//    m64n128k16 (A: P from registers, B: the same buffer, N-major). The next tile's split runs
//    while the tensor cores work.
// 9. Two CTAs per SM (254 registers, 103 KB of shared memory): one CTA's exchange and softmax
//    overlap the other's products.
// 10. What bounds it (an H200, the performance test): 454 us, 80 TFLOP/s, 31.5% of the
//    143 us floor and 2.27x torch.compile of the reference (scripts/benchmark.py). In ncu,
//    ~27% of the warps' samples wait for the other CTAs' partial scores; the rest is a chain
//    of ~700 instructions a warp a tile at ~7 cycles each (one warp per scheduler per CTA),
//    so the tensor cores are busy about a third of the time: alone, this kernel's products
//    run at ~900 TFLOP/s (a loop of the same wgmma on two CTAs per SM). Tried and slower:
//    two warpgroups per CTA sharing the tiles, one per head group (555 us; 491 us with
//    S(j + 1) issued before the exchange of S(j)): the barrier between them each tile lines up
//    their waits, where two independent CTAs per SM overlap them. The next step is a producer
//    warpgroup for the loads and splits, with the registers that frees spent on a second S.
//
// tests/cuda_cpu_model runs both kernels on the CPU (a fiber per GPU thread; the PTX operand
// layouts of mma.sync, movmatrix and wgmma, its shared-memory descriptors, mbarriers,
// multicast copies and st.async modelled); the sm_90 primitives and the host code are left
// out there (CUDA_CPU_MODEL).
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

constexpr int HEADS = 32;  // heads per CTA: two m16 tiles
constexpr int WARPS = 8;   // warps per CTA, each owning a slice of the dimensions
constexpr int THREADS = WARPS * 32;
constexpr int TILE = 16;      // tokens per tile: the k of one O += P Kc step
constexpr int STAGES = 4;     // tiles in flight per CTA
constexpr int SLOTS = 4;      // latent chunks of 16 per warp: 512 / 16 / WARPS
constexpr int P_STRIDE = 12;  // words per head row of the P fragments: 8 used, 4 of padding
constexpr int MAX_RANK = 512, MAX_ROPE = 64;

struct Params {
    const float* q_nope;  // (B, H, R)
    const float* q_pe;    // (B, H, P)
    const float* kv_c;    // (B, T, R)
    const float* k_pe;    // (B, T, P)
    float* output;        // (B, H, R)
    float* part_out;      // (B * H, splits, R): each chunk's normalized output
    float* part_lse;      // (B * H, splits): each chunk's log2-sum-exp2
    unsigned* finished;   // (B * groups): CTAs done per (batch, head group)
    int num_heads, cache_len, rank, rope;
    int groups;  // head groups = CTAs per cluster
    int splits, tokens_per_split;
    int row_floats;    // a tile row in shared memory: rank + rope + padding, = 8 mod 32
    float scale_log2;  // softmax_scale * log2(e)
};

// ---- sm_90 primitives: tensor-core products, fp16 packing, mbarriers, bulk copies ----
#ifndef CUDA_CPU_MODEL
// two floats to one register of two fp16 (round to nearest): `first` in the low half
__device__ __forceinline__ uint32_t pack_f16x2(float first, float second) {
    uint32_t packed;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(second), "f"(first));
    return packed;
}

// the two fp16 of a register as floats, low half first
__device__ __forceinline__ float2 unpack_f16x2(uint32_t x) {
    float first, second;
    asm("{\n"
        ".reg .f16 low, high;\n"
        "mov.b32 {low, high}, %2;\n"
        "cvt.f32.f16 %0, low;\n"
        "cvt.f32.f16 %1, high;\n"
        "}"
        : "=f"(first), "=f"(second)
        : "r"(x));
    return make_float2(first, second);
}

// d += a * b, m16n8k16, fp16 inputs, fp32 accumulators
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d += a * b, m16n8k8, fp16 inputs, fp32 accumulators
__device__ __forceinline__ void mma_1688(float (&d)[4], const uint32_t (&a)[2], uint32_t b) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b));
}

// the warp's 8x8 matrix of 16-bit values (lane l: row l / 4, columns 2 (l % 4) + {0, 1}),
// transposed
__device__ __forceinline__ uint32_t transpose_8x8(uint32_t x) {
    uint32_t y;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
    return y;
}

// the CTA's dynamic shared memory
__device__ __forceinline__ unsigned char* shared_memory_base() {
    extern __shared__ __align__(128) unsigned char smem[];
    return smem;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}

// make the initialized barriers visible to the cluster's copies and remote arrivals
__device__ __forceinline__ void fence_barrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// this thread's arrival, announcing `bytes` still to land in the barrier's current phase
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
                 "r"(bytes)
                 : "memory");
}

// wait until the barrier's phase with this parity has completed
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT_%=;\n"
        "}" ::"r"(smem_addr(bar)),
        "r"(parity)
        : "memory");
}

// the same, with the default (CTA-scope) acquire: enough for data that landed in this CTA's
// own shared memory, and without the L1 invalidation that a cluster-scope acquire costs
__device__ __forceinline__ void mbar_wait_local(uint64_t* bar, unsigned parity) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT_%=;\n"
        "}" ::"r"(smem_addr(bar)),
        "r"(parity)
        : "memory");
}

// one arrival on the barrier at the same offset in the shared memory of CTA `cta` of the cluster
__device__ __forceinline__ void mbar_arrive_in(uint64_t* bar, unsigned cta) {
    asm volatile(
        "{\n"
        ".reg .b32 remote;\n"
        "mapa.shared::cluster.u32 remote, %0, %1;\n"
        "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote];\n"
        "}" ::"r"(smem_addr(bar)),
        "r"(cta)
        : "memory");
}

// copy `bytes` from global memory to the same shared-memory offset in every CTA of `mask`,
// each copy completing its bytes on the barrier at `bar`'s offset in that CTA
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar,
                                          unsigned mask) {
    if (mask == 1u)
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, "
            "[%3];" ::"r"(smem_addr(dst)),
            "l"(src), "r"(bytes), "r"(smem_addr(bar))
            : "memory");
    else
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster "
            "[%0], [%1], %2, [%3], %4;" ::"r"(smem_addr(dst)),
            "l"(src), "r"(bytes), "r"(smem_addr(bar)), "h"(static_cast<uint16_t>(mask))
            : "memory");
}

// every thread of every CTA of the cluster arrives, then waits for all of them
__device__ __forceinline__ void cluster_sync() {
    asm volatile(
        "barrier.cluster.arrive.release.aligned;\n"
        "barrier.cluster.wait.acquire.aligned;" ::
            : "memory");
}

// ---- sm_90a primitives of the wgmma kernel ----
// this CTA's rank in its cluster
__device__ __forceinline__ unsigned cluster_rank() {
    unsigned rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    return rank;
}

// shared-memory writes of this thread become visible to the async proxy (wgmma's operand reads)
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// registers that wgmma reads or accumulates into are ready (before the first wgmma of a batch)
__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

// the wgmma issued so far form one group
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

// wait until every committed wgmma group has completed
__device__ __forceinline__ void wgmma_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}

// the address in the cluster's shared window of `local`'s offset in CTA `rank`'s shared memory
__device__ __forceinline__ uint32_t cluster_address(const void* local, unsigned rank) {
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                 : "=r"(remote)
                 : "r"(smem_addr(local)), "r"(rank));
    return remote;
}

// 16 bytes to the cluster shared-memory address `to`, completing 16 bytes on the mbarrier at
// cluster address `bar` (both in the same CTA)
__device__ __forceinline__ void store_remote(uint32_t to, float4 v, uint32_t bar) {
    asm volatile(
        "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, "
        "[%5];" ::"r"(to),
        "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "r"(bar)
        : "memory");
}

// d (+)= a * b, m64n32k16, fp16 inputs, fp32 accumulators; a from registers, b from
// shared memory through `desc`; TRANS_B: b is N-major (1) or K-major (0)
template <int TRANS_B>
__device__ __forceinline__ void wgmma_m64n32k16(float (&d)[16], const uint32_t (&a)[4],
                                                uint64_t desc, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, {%16, %17, %18, %19}, %20, p, 1, 1, %22;\n}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(accumulate), "n"(TRANS_B));
}

// d (+)= a * b, m64n128k16, fp16 inputs, fp32 accumulators; a from registers, b from
// shared memory through `desc`; TRANS_B: b is N-major (1) or K-major (0)
template <int TRANS_B>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], const uint32_t (&a)[4],
                                                 uint64_t desc, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
          "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
          "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(accumulate), "n"(TRANS_B));
}

// d = a * b, m64n32k16 (the first product of a sum: d is not read), K-major b
__device__ __forceinline__ void wgmma_m64n32k16_first(float (&d)[16], const uint32_t (&a)[4],
                                                      uint64_t desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]),
          "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]),
          "=f"(d[14]), "=f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

// d = 0, as an asm volatile that stays before the wgmma after it (a plain zeroing sunk
// between a wgmma and its wait would serialize the wgmma)
__device__ __forceinline__ void zero_accumulators(float (&d)[64]) {
    asm volatile(
        "mov.b32 %0, 0; mov.b32 %1, 0; mov.b32 %2, 0; mov.b32 %3, 0; mov.b32 %4, 0; mov.b32 %5, 0; "
        "mov.b32 %6, 0; mov.b32 %7, 0;\n"
        "mov.b32 %8, 0; mov.b32 %9, 0; mov.b32 %10, 0; mov.b32 %11, 0; mov.b32 %12, 0; mov.b32 "
        "%13, 0; mov.b32 %14, 0; mov.b32 %15, 0;\n"
        "mov.b32 %16, 0; mov.b32 %17, 0; mov.b32 %18, 0; mov.b32 %19, 0; mov.b32 %20, 0; mov.b32 "
        "%21, 0; mov.b32 %22, 0; mov.b32 %23, 0;\n"
        "mov.b32 %24, 0; mov.b32 %25, 0; mov.b32 %26, 0; mov.b32 %27, 0; mov.b32 %28, 0; mov.b32 "
        "%29, 0; mov.b32 %30, 0; mov.b32 %31, 0;\n"
        "mov.b32 %32, 0; mov.b32 %33, 0; mov.b32 %34, 0; mov.b32 %35, 0; mov.b32 %36, 0; mov.b32 "
        "%37, 0; mov.b32 %38, 0; mov.b32 %39, 0;\n"
        "mov.b32 %40, 0; mov.b32 %41, 0; mov.b32 %42, 0; mov.b32 %43, 0; mov.b32 %44, 0; mov.b32 "
        "%45, 0; mov.b32 %46, 0; mov.b32 %47, 0;\n"
        "mov.b32 %48, 0; mov.b32 %49, 0; mov.b32 %50, 0; mov.b32 %51, 0; mov.b32 %52, 0; mov.b32 "
        "%53, 0; mov.b32 %54, 0; mov.b32 %55, 0;\n"
        "mov.b32 %56, 0; mov.b32 %57, 0; mov.b32 %58, 0; mov.b32 %59, 0; mov.b32 %60, 0; mov.b32 "
        "%61, 0; mov.b32 %62, 0; mov.b32 %63, 0;\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]),
          "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]),
          "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]),
          "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]),
          "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]), "=f"(d[32]), "=f"(d[33]), "=f"(d[34]),
          "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]), "=f"(d[40]), "=f"(d[41]),
          "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]), "=f"(d[48]),
          "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]),
          "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]),
          "=f"(d[63]));
}
#endif  // CUDA_CPU_MODEL

// (x0, x1) = hi + lo with hi = fp16(x), lo = fp16(x - hi): one register of pairs each
__device__ __forceinline__ void split_pair(float x0, float x1, uint32_t& hi, uint32_t& lo) {
    hi = pack_f16x2(x0, x1);
    const float2 h = unpack_f16x2(hi);
    lo = pack_f16x2(x0 - h.x, x1 - h.y);
}

// d += a * b in fp16x3: the small products first, then hi * hi
__device__ __forceinline__ void mma3_16816(float (&d)[4], const uint32_t (&a_hi)[4],
                                           const uint32_t (&a_lo)[4], const uint32_t (&b_hi)[2],
                                           const uint32_t (&b_lo)[2]) {
    mma_16816(d, a_lo, b_hi[0], b_hi[1]);
    mma_16816(d, a_hi, b_lo[0], b_lo[1]);
    mma_16816(d, a_hi, b_hi[0], b_hi[1]);
}

__device__ __forceinline__ void mma3_1688(float (&d)[4], const uint32_t (&a_hi)[2],
                                          const uint32_t (&a_lo)[2], uint32_t b_hi, uint32_t b_lo) {
    mma_1688(d, a_lo, b_hi);
    mma_1688(d, a_hi, b_lo);
    mma_1688(d, a_hi, b_hi);
}

// the partial scores' column in shared memory: pairs of heads alternate halves of the row, so
// both the fragment stores and the softmax threads' loads are free of bank conflicts
__device__ __forceinline__ int score_column(int head, int token) {
    return token ^ (((head >> 1) & 1) << 3);
}

// Shared memory: barriers, STAGES tiles of TILE rows, partial scores, P fragments, softmax
struct Smem {
    uint64_t* full;   // [STAGES]: the tile's bytes have landed
    uint64_t* empty;  // [STAGES]: all warps of the cluster are done reading it
    unsigned* last;   // set when this CTA is the last of its group to finish: it merges
    float* tiles;     // [STAGES][TILE][row_floats]: kv_c row, then k_pe row, then padding
    float* scores;    // [WARPS][HEADS][TILE]: each warp's partial scores
    uint32_t* p_hi;   // [HEADS][P_STRIDE]: softmax weights as fp16 pairs, hi parts
    uint32_t* p_lo;   // [HEADS][P_STRIDE]: and lo parts
    float* alpha;     // [HEADS]: this tile's rescale of each head's output
    float* final_l;   // [HEADS]: softmax sums at the end
    float* final_m;   // [HEADS]: and running maxima
};

inline int head_groups(int num_heads) { return (num_heads + HEADS - 1) / HEADS; }

// DeepSeek's dimensions, which the wgmma kernel below is built for
inline bool is_deepseek_shape(int rank, int rope) { return rank == MAX_RANK && rope == MAX_ROPE; }

// floats per tile row in shared memory: the kv_c row, the k_pe row, padding to 8 mod 32
inline int row_floats(int rank, int rope) {
    return rank + rope + ((8 - (rank + rope)) % 32 + 32) % 32;
}

inline size_t smem_bytes(int row_floats) {
    return 128 + sizeof(float) * ((size_t)STAGES * TILE * row_floats + WARPS * HEADS * TILE +
                                  2 * HEADS * P_STRIDE + 3 * HEADS);
}

__device__ inline Smem carve(unsigned char* base, int row_floats) {
    Smem s;
    s.full = reinterpret_cast<uint64_t*>(base);
    s.empty = s.full + STAGES;
    s.last = reinterpret_cast<unsigned*>(s.empty + STAGES);
    s.tiles = reinterpret_cast<float*>(base + 128);
    s.scores = s.tiles + STAGES * TILE * row_floats;
    s.p_hi = reinterpret_cast<uint32_t*>(s.scores + WARPS * HEADS * TILE);
    s.p_lo = s.p_hi + HEADS * P_STRIDE;
    s.alpha = reinterpret_cast<float*>(s.p_lo + HEADS * P_STRIDE);
    s.final_l = s.alpha + HEADS;
    s.final_m = s.final_l + HEADS;
    return s;
}

// Warp 0 of each CTA: wait until tile `j`'s stage is free in every CTA of the cluster, then
// copy this CTA's rows of the tile (rows r with r % groups == group) into all of them.
__device__ void produce_tile(const Params& p, const Smem& s, int j, int batch, int group,
                             int t_begin, int t_end, int lane) {
    const int stage = j % STAGES;
    if (lane == 0) {
        if (j >= STAGES) mbar_wait(&s.empty[stage], (j / STAGES - 1) & 1);
        mbar_arrive_expect_tx(&s.full[stage], TILE * (p.rank + p.rope) * sizeof(float));
    }
    __syncwarp();
    const int my_rows = (TILE - group + p.groups - 1) / p.groups;
    if (lane < 2 * my_rows) {
        const int row = group + p.groups * (lane >> 1);
        // rows past the chunk repeat its last token: finite data, masked out of the softmax
        const int token = min(t_begin + j * TILE + row, t_end - 1);
        const size_t at = (size_t)batch * p.cache_len + token;
        float* dst = s.tiles + ((size_t)stage * TILE + row) * p.row_floats;
        const unsigned mask = (1u << p.groups) - 1;
        if ((lane & 1) == 0)
            bulk_copy(dst, p.kv_c + at * p.rank, p.rank * sizeof(float), &s.full[stage], mask);
        else
            bulk_copy(dst + p.rank, p.k_pe + at * p.rope, p.rope * sizeof(float), &s.full[stage],
                      mask);
    }
}

// Any shape: 32 heads per CTA, warps owning slices of the dimensions (see 2-4 above)
__global__ void __launch_bounds__(THREADS, 1) mla_decode_kernel(const Params p) {
    const Smem s = carve(shared_memory_base(), p.row_floats);
    const int group = blockIdx.x;  // the CTA's rank in its cluster
    const int split = blockIdx.y, batch = blockIdx.z;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;  // fragment row group and column pair of this lane
    const int head0 = group * HEADS;
    const int t_begin = split * p.tokens_per_split;
    const int t_end = min(p.cache_len, t_begin + p.tokens_per_split);
    const int n_tiles = (t_end - t_begin + TILE - 1) / TILE;
    const int chunks = p.rank / 16;           // latent chunks of 16 columns
    const bool has_rope = warp < p.rope / 8;  // warp w owns rotary columns [8w, 8w + 8)
    auto owns = [&](int i) { return warp + WARPS * i < chunks; };  // latent slot i

    if (threadIdx.x == 0) {
        for (int i = 0; i < STAGES; ++i) {
            mbar_init(&s.full[i], 1);
            mbar_init(&s.empty[i], WARPS * p.groups);
        }
        fence_barrier_init();
    }
    cluster_sync();  // every CTA's barriers exist before any copy or arrival reaches them
    if (warp == 0)
        for (int j = 0; j < min(STAGES - 1, n_tiles); ++j)
            produce_tile(p, s, j, batch, group, t_begin, t_end, lane);

    // this warp's slice of the queries, split, as m16 x k16 (k8) A fragments
    uint32_t q_hi[SLOTS][2][4], q_lo[SLOTS][2][4], qr_hi[2][2], qr_lo[2][2];
    auto query_pair = [&](const float* base, int width, int row, int col) {
        if (head0 + row >= p.num_heads) return make_float2(0.f, 0.f);
        return *reinterpret_cast<const float2*>(
            base + ((size_t)batch * p.num_heads + head0 + row) * width + col);
    };
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) {
        const int col = 16 * (warp + WARPS * i) + 2 * t;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int r = 0; r < 4; ++r) {  // a0..a3: rows g, g + 8; columns +0, +8
                float2 v = make_float2(0.f, 0.f);
                if (owns(i))
                    v = query_pair(p.q_nope, p.rank, 16 * mi + g + 8 * (r & 1), col + 8 * (r >> 1));
                split_pair(v.x, v.y, q_hi[i][mi][r], q_lo[i][mi][r]);
            }
    }
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float2 v = make_float2(0.f, 0.f);
            if (has_rope) v = query_pair(p.q_pe, p.rope, 16 * mi + g + 8 * r, 8 * warp + 2 * t);
            split_pair(v.x, v.y, qr_hi[mi][r], qr_lo[mi][r]);
        }

    float o[SLOTS][2][2][4];  // this warp's output columns: slot, m tile, n tile, fragment
#pragma unroll
    for (int i = 0; i < SLOTS; ++i)
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int nj = 0; nj < 2; ++nj)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[i][mi][nj][e] = 0.f;
    // the softmax of head `soft_head` is kept by its 8 threads, each scoring 2 of 16 tokens
    const int soft_head = threadIdx.x / 8, pair = threadIdx.x % 8;
    float m_run = -INFINITY, l_run = 0.f;

    for (int j = 0; j < n_tiles; ++j) {
        const int stage = j % STAGES;
        if (warp == 0 && j + STAGES - 1 < n_tiles)
            produce_tile(p, s, j + STAGES - 1, batch, group, t_begin, t_end, lane);
        mbar_wait(&s.full[stage], (j / STAGES) & 1);

        // this warp's slice of the tile as k16 x n8 B fragments of S (n = token), split
        const float* tile = s.tiles + (size_t)stage * TILE * p.row_floats;
        uint32_t k_hi[SLOTS][2][2], k_lo[SLOTS][2][2], kr_hi[2], kr_lo[2];
#pragma unroll
        for (int i = 0; i < SLOTS; ++i)
#pragma unroll
            for (int ni = 0; ni < 2; ++ni)
#pragma unroll
                for (int kk = 0; kk < 2; ++kk) {
                    float2 v = make_float2(0.f, 0.f);
                    if (owns(i))
                        v = *reinterpret_cast<const float2*>(tile + (8 * ni + g) * p.row_floats +
                                                             16 * (warp + WARPS * i) + 8 * kk +
                                                             2 * t);
                    split_pair(v.x, v.y, k_hi[i][ni][kk], k_lo[i][ni][kk]);
                }
#pragma unroll
        for (int ni = 0; ni < 2; ++ni) {
            float2 v = make_float2(0.f, 0.f);
            if (has_rope)
                v = *reinterpret_cast<const float2*>(tile + (8 * ni + g) * p.row_floats + p.rank +
                                                     8 * warp + 2 * t);
            split_pair(v.x, v.y, kr_hi[ni], kr_lo[ni]);
        }
        __syncwarp();
        if (lane < p.groups) mbar_arrive_in(&s.empty[stage], lane);  // release it everywhere

        // partial scores of all 32 heads over this warp's columns
        float sc[2][2][4];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < 2; ++ni) {
#pragma unroll
                for (int e = 0; e < 4; ++e) sc[mi][ni][e] = 0.f;
#pragma unroll
                for (int i = 0; i < SLOTS; ++i)
                    if (owns(i))
                        mma3_16816(sc[mi][ni], q_hi[i][mi], q_lo[i][mi], k_hi[i][ni], k_lo[i][ni]);
                if (has_rope) mma3_1688(sc[mi][ni], qr_hi[mi], qr_lo[mi], kr_hi[ni], kr_lo[ni]);
                float* rows = s.scores + warp * HEADS * TILE;
                const int h = 16 * mi + g, col = 8 * ni + 2 * t;
                *reinterpret_cast<float2*>(rows + h * TILE + score_column(h, col)) =
                    make_float2(sc[mi][ni][0], sc[mi][ni][1]);
                *reinterpret_cast<float2*>(rows + (h + 8) * TILE + score_column(h + 8, col)) =
                    make_float2(sc[mi][ni][2], sc[mi][ni][3]);
            }
        __syncthreads();

        // online softmax: sum the warps' partial scores and scale them, then max, exp2 and sum
        // over the head's 8 threads
        {
            float x0 = 0.f, x1 = 0.f;
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                const float2 v = *reinterpret_cast<const float2*>(
                    s.scores + (w * HEADS + soft_head) * TILE + score_column(soft_head, 2 * pair));
                x0 += v.x;
                x1 += v.y;
            }
            x0 *= p.scale_log2;  // scaled here, not in the queries: they stay in fp16's range
            x1 *= p.scale_log2;
            const int valid = t_end - (t_begin + j * TILE);  // tokens of this tile in the chunk
            if (2 * pair >= valid) x0 = -INFINITY;
            if (2 * pair + 1 >= valid) x1 = -INFINITY;
            float tile_max = fmaxf(x0, x1);
#pragma unroll
            for (int offset = 1; offset < 8; offset *= 2)
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, offset));
            const float m_new = fmaxf(m_run, tile_max);  // token 0 is always valid: finite
            const float alpha = exp2f(m_run - m_new);
            const float p0 = exp2f(x0 - m_new), p1 = exp2f(x1 - m_new);
            float tile_sum = p0 + p1;
#pragma unroll
            for (int offset = 1; offset < 8; offset *= 2)
                tile_sum += __shfl_xor_sync(0xffffffff, tile_sum, offset);
            l_run = l_run * alpha + tile_sum;
            m_run = m_new;
            uint32_t hi, lo;
            split_pair(p0, p1, hi, lo);
            s.p_hi[soft_head * P_STRIDE + pair] = hi;
            s.p_lo[soft_head * P_STRIDE + pair] = lo;
            if (pair == 0) s.alpha[soft_head] = alpha;
        }
        __syncthreads();

        // P as m16 x k16 A fragments (rows: heads, k: the tile's tokens), and the rescale
        uint32_t p_hi[2][4], p_lo[2][4];
        float alpha[2][2];
        bool rescale = false;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {  // a0..a3: rows g, g + 8; token pairs t, t + 4
                const int at = (16 * mi + g + 8 * (r & 1)) * P_STRIDE + t + 4 * (r >> 1);
                p_hi[mi][r] = s.p_hi[at];
                p_lo[mi][r] = s.p_lo[at];
            }
            alpha[mi][0] = s.alpha[16 * mi + g];
            alpha[mi][1] = s.alpha[16 * mi + g + 8];
            rescale |= alpha[mi][0] != 1.f || alpha[mi][1] != 1.f;
        }
        if (__any_sync(0xffffffff, rescale)) {
#pragma unroll
            for (int i = 0; i < SLOTS; ++i)
#pragma unroll
                for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                    for (int nj = 0; nj < 2; ++nj) {
                        o[i][mi][nj][0] *= alpha[mi][0];
                        o[i][mi][nj][1] *= alpha[mi][0];
                        o[i][mi][nj][2] *= alpha[mi][1];
                        o[i][mi][nj][3] *= alpha[mi][1];
                    }
        }

        // O += P Kc: the value fragments (k = token, n = latent column) are the S fragments
        // of the same 8 x 8 blocks, transposed
#pragma unroll
        for (int i = 0; i < SLOTS; ++i) {
            if (!owns(i)) continue;
#pragma unroll
            for (int nj = 0; nj < 2; ++nj) {
                const uint32_t v_hi[2] = {transpose_8x8(k_hi[i][0][nj]),
                                          transpose_8x8(k_hi[i][1][nj])};
                const uint32_t v_lo[2] = {transpose_8x8(k_lo[i][0][nj]),
                                          transpose_8x8(k_lo[i][1][nj])};
#pragma unroll
                for (int mi = 0; mi < 2; ++mi)
                    mma3_16816(o[i][mi][nj], p_hi[mi], p_lo[mi], v_hi, v_lo);
            }
        }
    }
    cluster_sync();  // no CTA of the cluster still copies into or arrives on this one

    if (pair == 0) {
        s.final_l[soft_head] = l_run;
        s.final_m[soft_head] = m_run;
    }
    __syncthreads();
    const int heads_here = min(HEADS, p.num_heads - head0);
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int h = 16 * mi + g + 8 * half;
            if (h >= heads_here) continue;
            const float inv = 1.f / s.final_l[h];
            const size_t q_row = (size_t)batch * p.num_heads + head0 + h;
            float* row = p.splits == 1 ? p.output + q_row * p.rank
                                       : p.part_out + (q_row * p.splits + split) * p.rank;
#pragma unroll
            for (int i = 0; i < SLOTS; ++i) {
                if (!owns(i)) continue;
#pragma unroll
                for (int nj = 0; nj < 2; ++nj)
                    *reinterpret_cast<float2*>(row + 16 * (warp + WARPS * i) + 8 * nj + 2 * t) =
                        make_float2(o[i][mi][nj][2 * half] * inv, o[i][mi][nj][2 * half + 1] * inv);
            }
        }
    if (p.splits == 1) return;  // the whole cache: this is the answer
    if (threadIdx.x < heads_here) {
        const size_t q_row = (size_t)batch * p.num_heads + head0 + threadIdx.x;
        p.part_lse[q_row * p.splits + split] =
            s.final_m[threadIdx.x] + log2f(s.final_l[threadIdx.x]);
    }

    // the last CTA of this (batch, head group) to get here merges all of its chunks
    unsigned* counter = p.finished + (size_t)batch * p.groups + group;
    __threadfence();  // this CTA's partial results are visible before the count
    __syncthreads();
    if (threadIdx.x == 0) *s.last = atomicAdd(counter, 1u) == (unsigned)p.splits - 1;
    __syncthreads();
    if (!*s.last) return;
    __threadfence();
    for (int i = threadIdx.x; i < heads_here * p.rank; i += THREADS) {
        const int h = i / p.rank, col = i % p.rank;
        const size_t q_row = (size_t)batch * p.num_heads + head0 + h;
        const float* lse = p.part_lse + q_row * p.splits;
        float lse_max = -INFINITY;
        for (int k = 0; k < p.splits; ++k) lse_max = fmaxf(lse_max, __ldcg(lse + k));
        float sum = 0.f, weight_sum = 0.f;
        for (int k = 0; k < p.splits; ++k) {
            const float w = exp2f(__ldcg(lse + k) - lse_max);
            weight_sum += w;
            sum += w * __ldcg(p.part_out + (q_row * p.splits + k) * p.rank + col);
        }
        p.output[q_row * p.rank + col] = sum / weight_sum;
    }
    if (threadIdx.x == 0) *counter = 0;  // ready for the next call
}

// ---- DeepSeek's shape (kv_lora_rank 512, rope_dim 64): wgmma, a cluster of four CTAs per
// 64 heads, each CTA owning a quarter of the dimensions (see 7-10 above) ----
namespace wg {
constexpr int HEADS = 64;                  // heads per CTA: the m of every wgmma
constexpr int SLICES = 4;                  // CTAs per cluster: quarters of the dimensions
constexpr int LATENT = MAX_RANK / SLICES;  // 128 latent columns per CTA
constexpr int ROPE = MAX_ROPE / SLICES;    // 16 rotary columns per CTA
constexpr int TILE = 32;                   // tokens per tile: n of S, two k16 steps of O
constexpr int THREADS = 128;               // one warpgroup
constexpr int BUFFERS = 3;                 // fp16 tiles: one being written, two being read
constexpr float RESCALE_GAP = 8.f;         // log2 units the running maximum may lag
constexpr int KSTEPS = LATENT / 16 + 1;    // k16 steps of S: 8 latent, 1 rotary
constexpr int LOADS = TILE * (LATENT + ROPE) / 4 / THREADS;  // float4 loads a thread a tile: 9
// A tile buffer: the latent columns' fp16 hi and lo parts, each two blocks of 64 columns
// (rows of 128 bytes, 16-byte chunks swizzled by row % 8: wgmma's 128-byte swizzle), then
// the rotary columns' hi and lo parts (8 x 8 core matrices, no swizzle).
constexpr int BLOCK = TILE * 128;              // bytes of one 64-column block
constexpr int LAT_HI = 0, LAT_LO = 2 * BLOCK;  // offsets in a buffer
constexpr int ROPE_HI = 4 * BLOCK, ROPE_LO = ROPE_HI + TILE * ROPE * 2;
constexpr int BUFFER = ROPE_LO + TILE * ROPE * 2;  // 18,432 bytes
constexpr int SLOT = THREADS * 16;                 // floats of one CTA's partial scores
constexpr int MAX_SPLITS = 2 * 3 * SLOT / HEADS;   // chunks whose merge weights fit the slots
// shared memory: alignment slack, the buffers, partial scores [2 parities][3 senders], two
// mbarriers and the merge flag: 103 KB, two CTAs per SM
constexpr size_t SMEM = 1024 + BUFFERS * BUFFER + 2 * 3 * SLOT * sizeof(float) + 32;

// byte offset of (row, col) in a 64-column block with the 128-byte swizzle
__device__ __forceinline__ int swizzled(int row, int col) {
    return row * 128 + (((col >> 3) ^ (row & 7)) << 4) + (col & 7) * 2;
}

// byte offset of (row, col) in the rotary part: 8 x 8 core matrices of 128 bytes, the two
// along the columns 128 bytes apart, the row groups 256 bytes apart
__device__ __forceinline__ int core_matrix(int row, int col) {
    return (row >> 3) * 256 + (col >> 3) * 128 + (row & 7) * 16 + (col & 7) * 2;
}

// a wgmma shared-memory matrix descriptor: start address, leading and stride byte offsets,
// swizzle (0: none, 1: 128 bytes)
__device__ __forceinline__ uint64_t descriptor(uint32_t address, uint32_t leading, uint32_t stride,
                                               uint64_t swizzle) {
    return (uint64_t)((address & 0x3FFFF) >> 4) | (uint64_t)((leading & 0x3FFFF) >> 4) << 16 |
           (uint64_t)((stride & 0x3FFFF) >> 4) << 32 | swizzle << 62;
}
}  // namespace wg

// Grid (4 x head groups, splits, batch), clusters of 4 along x; 128 threads, 2 CTAs per SM.
__global__ void __launch_bounds__(wg::THREADS, 2) mla_wgmma_kernel(const Params p) {
    using wg::BLOCK, wg::BUFFER, wg::BUFFERS, wg::HEADS, wg::KSTEPS, wg::LATENT;
    using wg::LAT_HI, wg::LAT_LO, wg::LOADS, wg::ROPE, wg::ROPE_HI, wg::ROPE_LO, wg::SLICES;
    using wg::RESCALE_GAP, wg::SLOT, wg::THREADS, wg::TILE, wg::core_matrix, wg::descriptor,
        wg::swizzled;
    unsigned char* const raw = shared_memory_base();
    unsigned char* const buffers = raw + (1024 - smem_addr(raw) % 1024) % 1024;
    float* const slots = reinterpret_cast<float*>(buffers + BUFFERS * BUFFER);
    uint64_t* const received = reinterpret_cast<uint64_t*>(slots + 2 * 3 * SLOT);  // [2]
    unsigned* const last = reinterpret_cast<unsigned*>(received + 2);

    const unsigned slice = cluster_rank();
    const int group = blockIdx.x / SLICES, split = blockIdx.y, batch = blockIdx.z;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;  // fragment row group and column pair of this lane
    const int head0 = group * HEADS;
    const int t_begin = split * p.tokens_per_split;
    const int t_end = min(p.cache_len, t_begin + p.tokens_per_split);
    const int n_tiles = (t_end - t_begin + TILE - 1) / TILE;

    if (tid == 0) {
        mbar_init(&received[0], 1);
        mbar_init(&received[1], 1);
        fence_barrier_init();
    }
    cluster_sync();  // the barriers exist before any CTA of the cluster sends to them

    // this CTA's quarter of the queries, split, as m64 x k16 A fragments (rows: heads)
    uint32_t q_hi[KSTEPS][4], q_lo[KSTEPS][4];
#pragma unroll
    for (int s = 0; s < KSTEPS; ++s)
#pragma unroll
        for (int r = 0; r < 4; ++r) {  // a0..a3: rows g, g + 8; columns +0, +8
            const int row = 16 * warp + g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
            float2 v = make_float2(0.f, 0.f);
            if (head0 + row < p.num_heads) {
                const size_t q_row = (size_t)batch * p.num_heads + head0 + row;
                v = s < KSTEPS - 1 ? *reinterpret_cast<const float2*>(p.q_nope + q_row * MAX_RANK +
                                                                      LATENT * slice + 16 * s + col)
                                   : *reinterpret_cast<const float2*>(p.q_pe + q_row * MAX_ROPE +
                                                                      ROPE * slice + col);
            }
            split_pair(v.x, v.y, q_hi[s][r], q_lo[s][r]);
        }

    // tile j's quarter of the cache rows: thread tid loads token tid / 4 (past the chunk, its
    // last token), float4 chunks tid % 4 + 4 r of its 144 floats (32 latent, then 4 rotary)
    const int my_row = tid / 4, my_chunk = tid % 4;
    float4 cache[LOADS];
    auto load_tile = [&](int j) {
        const size_t at = (size_t)batch * p.cache_len + min(t_begin + j * TILE + my_row, t_end - 1);
        const float* latent = p.kv_c + at * MAX_RANK + LATENT * slice + 4 * my_chunk;
#pragma unroll
        for (int r = 0; r < LOADS - 1; ++r)
            cache[r] = *reinterpret_cast<const float4*>(latent + 16 * r);
        cache[LOADS - 1] =
            *reinterpret_cast<const float4*>(p.k_pe + at * MAX_ROPE + ROPE * slice + 4 * my_chunk);
    };
    // ... split into fp16 hi and lo parts, stored in tile j's buffer
    auto store_tile = [&](int j) {
        unsigned char* const buf = buffers + (j % BUFFERS) * BUFFER;
#pragma unroll
        for (int r = 0; r < LOADS; ++r) {
            uint32_t h0, l0, h1, l1;
            split_pair(cache[r].x, cache[r].y, h0, l0);
            split_pair(cache[r].z, cache[r].w, h1, l1);
            const int col = 4 * my_chunk + 16 * (r % 4);  // within the 64-column block r / 4
            const int at = r < LOADS - 1 ? (r / 4) * BLOCK + swizzled(my_row, col)
                                         : core_matrix(my_row, 4 * my_chunk);
            const int hi = r < LOADS - 1 ? LAT_HI : ROPE_HI, lo = r < LOADS - 1 ? LAT_LO : ROPE_LO;
            *reinterpret_cast<uint2*>(buf + hi + at) = make_uint2(h0, h1);
            *reinterpret_cast<uint2*>(buf + lo + at) = make_uint2(l0, l1);
        }
    };

    // S (64 heads x 32 tokens) over this CTA's columns, fp16x3: the small products first
    float sc[16];
    auto issue_scores = [&](int j) {
        const uint32_t buf = smem_addr(buffers + (j % BUFFERS) * BUFFER);
#pragma unroll
        for (int s = 0; s < KSTEPS - 1; ++s) {  // K-major B: rows are tokens
            const uint32_t at = (s / 4) * BLOCK + 32 * (s % 4);
            const uint64_t hi = descriptor(buf + LAT_HI + at, 16, 1024, 1);
            const uint64_t lo = descriptor(buf + LAT_LO + at, 16, 1024, 1);
            if (s == 0)
                wgmma_m64n32k16_first(sc, q_lo[s], hi);
            else
                wgmma_m64n32k16<0>(sc, q_lo[s], hi, 1);
            wgmma_m64n32k16<0>(sc, q_hi[s], lo, 1);
            wgmma_m64n32k16<0>(sc, q_hi[s], hi, 1);
        }
        const uint64_t hi = descriptor(buf + ROPE_HI, 128, 256, 0);
        const uint64_t lo = descriptor(buf + ROPE_LO, 128, 256, 0);
        wgmma_m64n32k16<0>(sc, q_lo[KSTEPS - 1], hi, 1);
        wgmma_m64n32k16<0>(sc, q_hi[KSTEPS - 1], lo, 1);
        wgmma_m64n32k16<0>(sc, q_hi[KSTEPS - 1], hi, 1);
    };

    // O (64 heads x 128 latent columns) += P (64 x 32 tokens) Kc, fp16x3; Kc N-major
    float o[64];
    zero_accumulators(o);
    uint32_t p_hi[2][4], p_lo[2][4];
    auto issue_values = [&](int j) {
        const uint32_t buf = smem_addr(buffers + (j % BUFFERS) * BUFFER);
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {  // tokens 16 kk .. 16 kk + 15: two 8-row groups
            const uint64_t hi = descriptor(buf + LAT_HI + 2048 * kk, BLOCK, 1024, 1);
            const uint64_t lo = descriptor(buf + LAT_LO + 2048 * kk, BLOCK, 1024, 1);
            wgmma_m64n128k16<1>(o, p_lo[kk], hi, 1);
            wgmma_m64n128k16<1>(o, p_hi[kk], lo, 1);
            wgmma_m64n128k16<1>(o, p_hi[kk], hi, 1);
        }
    };

    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};  // rows g, g + 8
    load_tile(0);
    store_tile(0);
    if (n_tiles > 1) load_tile(1);
    fence_proxy_async();
    __syncthreads();
    wgmma_fence();
    issue_scores(0);
    wgmma_commit();

    for (int j = 0; j < n_tiles; ++j) {
        // tile j + 1 into its buffer (last read by tile j - 2's products, which are done)
        // while S(j) and O += P(j - 1) run; tile j + 2's loads start
        if (j + 1 < n_tiles) {
            store_tile(j + 1);
            if (j + 2 < n_tiles) load_tile(j + 2);
        }
        fence_proxy_async();
        wgmma_wait_all();

        // the partial scores to the other three CTAs; theirs come into the slots of this parity
        const int parity = j & 1;
        if (tid == 0) mbar_arrive_expect_tx(&received[parity], 3 * SLOT * sizeof(float));
#pragma unroll
        for (unsigned r = 1; r < SLICES; ++r) {
            const unsigned to = (slice + r) % SLICES;  // at `to`, this CTA fills slot 3 - r
            const uint32_t slot =
                cluster_address(slots + (parity * 3 + (3 - r)) * SLOT + 4 * tid, to);
            const uint32_t bar = cluster_address(&received[parity], to);
#pragma unroll
            for (int q = 0; q < 4; ++q)  // float4 q of every thread together: no bank conflict
                store_remote(slot + 16 * THREADS * q,
                             make_float4(sc[4 * q], sc[4 * q + 1], sc[4 * q + 2], sc[4 * q + 3]),
                             bar);
        }
        mbar_wait_local(&received[parity], (j >> 1) & 1);

        // the whole scores, summed in slice order (the same bits in all four CTAs), scaled
        float x[16];
#pragma unroll
        for (int e = 0; e < 16; ++e) x[e] = 0.f;
#pragma unroll
        for (unsigned from = 0; from < SLICES; ++from) {
            if (from == slice) {
#pragma unroll
                for (int e = 0; e < 16; ++e) x[e] += sc[e];
            } else {  // sender `from` filled slot 3 - ((slice - from) mod 4)
                const float* slot =
                    slots + (parity * 3 + ((from - slice - 1) & 3)) * SLOT + 4 * tid;
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    const float4 v = *reinterpret_cast<const float4*>(slot + 4 * THREADS * q);
                    x[4 * q] += v.x;
                    x[4 * q + 1] += v.y;
                    x[4 * q + 2] += v.z;
                    x[4 * q + 3] += v.w;
                }
            }
        }

        // online softmax of rows g and g + 8 (each over the 4 lanes of a quad), base 2
        const int valid = t_end - (t_begin + j * TILE);  // tokens of this tile in the chunk
        float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int e = 0; e < 16; ++e) {  // x[4 i + e']: row g + 8 (e' / 2), token 8 i + 2 t + e' % 2
            const int token = 8 * (e / 4) + 2 * t + (e & 1);
            x[e] = token < valid ? x[e] * p.scale_log2 : -INFINITY;
            tile_max[(e >> 1) & 1] = fmaxf(tile_max[(e >> 1) & 1], x[e]);
        }
        float alpha[2], row_sum[2] = {0.f, 0.f};
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffff, tile_max[h], 1));
            tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffff, tile_max[h], 2));
            // lazy rescale: the reference maximum moves only when a score passes it by more
            // than RESCALE_GAP (weights stay below 2^8, in fp16's range); token 0 is valid,
            // so the first tile sets it
            const float m_new = tile_max[h] > m_run[h] + RESCALE_GAP ? tile_max[h] : m_run[h];
            alpha[h] = exp2f(m_run[h] - m_new);
            m_run[h] = m_new;
        }
#pragma unroll
        for (int e = 0; e < 16; ++e) {
            x[e] = exp2f(x[e] - m_run[(e >> 1) & 1]);
            row_sum[(e >> 1) & 1] += x[e];
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            row_sum[h] += __shfl_xor_sync(0xffffffff, row_sum[h], 1);
            row_sum[h] += __shfl_xor_sync(0xffffffff, row_sum[h], 2);
            l_run[h] = l_run[h] * alpha[h] + row_sum[h];
        }
        if (alpha[0] != 1.f || alpha[1] != 1.f) {
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                o[4 * i] *= alpha[0];
                o[4 * i + 1] *= alpha[0];
                o[4 * i + 2] *= alpha[1];
                o[4 * i + 3] *= alpha[1];
            }
        }
        // P as A fragments: k step kk is the accumulator's column groups 2 kk and 2 kk + 1
#pragma unroll
        for (int kk = 0; kk < 2; ++kk)
#pragma unroll
            for (int r = 0; r < 4; ++r)
                split_pair(x[8 * kk + 2 * r], x[8 * kk + 2 * r + 1], p_hi[kk][r], p_lo[kk][r]);

        __syncthreads();  // every thread's part of tile j + 1 is stored (and fenced)
        wgmma_fence();
        issue_values(j);
        issue_scores(j + 1);  // after the last tile too (on stale data, unused): no branch
        wgmma_commit();       // around the wgmma, which would serialize them
    }
    wgmma_wait_all();
    cluster_sync();  // no CTA of the cluster still sends to this one

    // this CTA's 128 output columns of rows g and g + 8, normalized
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = 16 * warp + g + 8 * h;
        if (head0 + row >= p.num_heads) continue;
        const size_t q_row = (size_t)batch * p.num_heads + head0 + row;
        const float inv = 1.f / l_run[h];
        float* dst = p.splits == 1 ? p.output + q_row * MAX_RANK
                                   : p.part_out + (q_row * p.splits + split) * MAX_RANK;
#pragma unroll
        for (int i = 0; i < 16; ++i)
            *reinterpret_cast<float2*>(dst + LATENT * slice + 8 * i + 2 * t) =
                make_float2(o[4 * i + 2 * h] * inv, o[4 * i + 2 * h + 1] * inv);
        if (p.splits > 1 && t == 0)
            p.part_lse[(q_row * p.splits + split) * SLICES + slice] = m_run[h] + log2f(l_run[h]);
    }
    if (p.splits == 1) return;

    // the last CTA of this (batch, head group, slice) to get here merges its columns: each
    // head's chunk weights first (into the score slots, free now), then float4s of columns
    const int heads_here = min(HEADS, p.num_heads - head0);
    unsigned* counter = p.finished + ((size_t)batch * p.groups + group) * SLICES + slice;
    __threadfence();
    __syncthreads();
    if (tid == 0) *last = atomicAdd(counter, 1u) == (unsigned)p.splits - 1;
    __syncthreads();
    if (!*last) return;
    __threadfence();
    float* weights = slots;  // [heads_here][splits], normalized
    if (tid < heads_here) {
        const size_t q_row = (size_t)batch * p.num_heads + head0 + tid;
        const float* lse = p.part_lse + q_row * p.splits * SLICES + slice;
        float lse_max = -INFINITY, weight_sum = 0.f;
        for (int k = 0; k < p.splits; ++k) lse_max = fmaxf(lse_max, __ldcg(lse + k * SLICES));
        for (int k = 0; k < p.splits; ++k) {
            const float w = exp2f(__ldcg(lse + k * SLICES) - lse_max);
            weights[tid * p.splits + k] = w;
            weight_sum += w;
        }
        for (int k = 0; k < p.splits; ++k) weights[tid * p.splits + k] /= weight_sum;
    }
    __syncthreads();
    for (int i = tid; i < heads_here * LATENT / 4; i += THREADS) {
        const int h = i / (LATENT / 4), col = LATENT * slice + 4 * (i % (LATENT / 4));
        const size_t q_row = (size_t)batch * p.num_heads + head0 + h;
        const float* part = p.part_out + q_row * p.splits * MAX_RANK + col;
        float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
        for (int k = 0; k < p.splits; ++k) {
            const float w = weights[h * p.splits + k];
            const float4 v = __ldcg(reinterpret_cast<const float4*>(part + k * MAX_RANK));
            sum.x += w * v.x;
            sum.y += w * v.y;
            sum.z += w * v.z;
            sum.w += w * v.w;
        }
        *reinterpret_cast<float4*>(p.output + q_row * MAX_RANK + col) = sum;
    }
    if (tid == 0) *counter = 0;  // ready for the next call
}

// Chunks per sequence for `batch` sequences of `tiles` tiles on `resident` clusters at once:
// the fewest (up to one per tile) whose clusters fill their waves at least 90%, else the
// fullest.
inline int split_count(int batch, int tiles, int resident) {
    resident = resident > 1 ? resident : 1;
    int best = 1;
    double best_fill = 0.0;
    for (int s = 1; s <= tiles; ++s) {
        const long long clusters = (long long)batch * s;
        const long long waves = (clusters + resident - 1) / resident;
        const double fill = (double)clusters / (double)(waves * resident);
        if (fill >= 0.9) return s;
        if (fill > best_fill) best = s, best_fill = fill;
    }
    return best;
}

// The chunks of a launch of `clusters` clusters per chunk position on `resident` clusters at
// once, in tiles of `tile` tokens: split_count's chunks per sequence (at most `most`), each at
// least one tile.
inline void set_chunks(Params& p, int clusters, int tile, int resident, int most) {
    const int tiles = (p.cache_len + tile - 1) / tile;
    const int wanted = min(most, split_count(clusters, tiles, resident));
    const int per_split = (tiles + wanted - 1) / wanted;  // tiles per chunk
    p.tokens_per_split = per_split * tile;
    p.splits = (tiles + per_split - 1) / per_split;
}

// The launch's parameters, given how many clusters the GPU runs at once. The wgmma kernel
// (DeepSeek's shape): clusters of 4 CTAs per 64 heads, tiles of 32 tokens. The other: clusters
// of `groups` CTAs of 32 heads, tiles of 16, rows padded to 8 mod 32 floats (conflict-free
// fragment loads). The scratch pointers are left for the caller.
inline Params plan(const float* q_nope, const float* q_pe, const float* kv_c, const float* k_pe,
                   float* output, int batch_size, int num_heads, int cache_len, int kv_lora_rank,
                   int rope_dim, float softmax_scale, int resident_clusters) {
    Params p = {};
    p.q_nope = q_nope;
    p.q_pe = q_pe;
    p.kv_c = kv_c;
    p.k_pe = k_pe;
    p.output = output;
    p.num_heads = num_heads;
    p.cache_len = cache_len;
    p.rank = kv_lora_rank;
    p.rope = rope_dim;
    p.scale_log2 = softmax_scale * 1.4426950408889634f;
    if (is_deepseek_shape(kv_lora_rank, rope_dim)) {
        p.groups = (num_heads + wg::HEADS - 1) / wg::HEADS;
        set_chunks(p, batch_size * p.groups, wg::TILE, resident_clusters, wg::MAX_SPLITS);
    } else {
        p.groups = head_groups(num_heads);
        p.row_floats = row_floats(kv_lora_rank, rope_dim);
        set_chunks(p, batch_size, TILE, resident_clusters, 1 << 30);
    }
    return p;
}

// CTAs per cluster, threads and shared-memory bytes per CTA of a plan
inline int cluster_size(const Params& p) {
    return is_deepseek_shape(p.rank, p.rope) ? wg::SLICES : p.groups;
}
inline int block_threads(const Params& p) {
    return is_deepseek_shape(p.rank, p.rope) ? wg::THREADS : THREADS;
}
inline size_t block_smem(const Params& p) {
    return is_deepseek_shape(p.rank, p.rope) ? wg::SMEM : smem_bytes(p.row_floats);
}
// merge counters: one per (batch, head group), and per slice in the wgmma kernel
inline size_t merge_counters(const Params& p, int batch_size) {
    return (size_t)batch_size * p.groups * (is_deepseek_shape(p.rank, p.rope) ? wg::SLICES : 1);
}
// floats of scratch: each chunk's outputs, then its log2-sum-exp2s (one per slice in the wgmma
// kernel)
inline size_t scratch_floats(const Params& p, int batch_size) {
    const size_t rows = (size_t)batch_size * p.num_heads * p.splits;
    return rows * p.rank + rows * (is_deepseek_shape(p.rank, p.rope) ? wg::SLICES : 1);
}

#ifndef CUDA_CPU_MODEL
// Scratch for the partial results and the merge counters (zeroed once: the last CTA of a
// group resets its counter), grown on demand and kept between calls.
static float* workspace(size_t floats, unsigned** counters, size_t groups) {
    static float* buffer = nullptr;
    static unsigned* finished = nullptr;
    static size_t capacity = 0, counter_capacity = 0;
    if (floats > capacity) {
        if (buffer) cudaFree(buffer);
        cudaMalloc(&buffer, floats * sizeof(float));
        capacity = floats;
    }
    if (groups > counter_capacity) {
        if (finished) cudaFree(finished);
        cudaMalloc(&finished, groups * sizeof(unsigned));
        cudaMemset(finished, 0, groups * sizeof(unsigned));
        counter_capacity = groups;
    }
    *counters = finished;
    return buffer;
}

// q_nope, q_pe, kv_c, k_pe, output are device pointers
extern "C" void solve(const float* q_nope, const float* q_pe, const float* kv_c, const float* k_pe,
                      float* output, int batch_size, int num_heads, int cache_len, int kv_lora_rank,
                      int rope_dim, float softmax_scale) {
    static bool configured = false;  // room for the largest tiles, asked for once
    if (!configured) {
        cudaFuncSetAttribute(mla_decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)smem_bytes(row_floats(MAX_RANK, MAX_ROPE)));
        cudaFuncSetAttribute(mla_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)wg::SMEM);
        configured = true;
    }
    // the plan's shape before its chunks, to ask for the resident clusters
    Params p = plan(q_nope, q_pe, kv_c, k_pe, output, batch_size, num_heads, cache_len,
                    kv_lora_rank, rope_dim, softmax_scale, 1);
    const bool deepseek = is_deepseek_shape(kv_lora_rank, rope_dim);
    void (*kernel)(Params) = deepseek ? mla_wgmma_kernel : mla_decode_kernel;
    cudaLaunchAttribute cluster;
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = cluster_size(p);
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    cudaLaunchConfig_t config = {};
    config.blockDim = dim3(block_threads(p));
    config.dynamicSmemBytes = block_smem(p);
    config.attrs = &cluster;
    config.numAttrs = 1;
    config.gridDim = dim3(cluster_size(p), 1, 1);
    // clusters of this size the GPU holds at once (shared memory decides), asked once per shape
    static int asked_size = 0, resident = 0;
    static size_t asked_bytes = 0;
    if (cluster_size(p) != asked_size || config.dynamicSmemBytes != asked_bytes) {
        resident = 0;
        cudaOccupancyMaxActiveClusters(&resident, kernel, &config);
        asked_size = cluster_size(p);
        asked_bytes = config.dynamicSmemBytes;
    }

    p = plan(q_nope, q_pe, kv_c, k_pe, output, batch_size, num_heads, cache_len, kv_lora_rank,
             rope_dim, softmax_scale, resident);
    const size_t rows = (size_t)batch_size * num_heads * p.splits;
    p.part_out =
        workspace(scratch_floats(p, batch_size), &p.finished, merge_counters(p, batch_size));
    p.part_lse = p.part_out + rows * kv_lora_rank;
    config.gridDim = dim3(deepseek ? wg::SLICES * p.groups : p.groups, p.splits, batch_size);
    cudaLaunchKernelEx(&config, kernel, p);
}
#endif  // CUDA_CPU_MODEL
