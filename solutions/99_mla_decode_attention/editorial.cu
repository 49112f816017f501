// MLA decode (weight-absorbed) on tensor cores: split-KV in one kernel, each tile loaded once
// for all 128 heads by a cluster of four CTAs, fp16x3 error-compensated products.
//
// The floors. At the performance shape (batch 16, 128 heads, 8,192 tokens, kv_lora_rank 512,
// rope_dim 64, fp32) the cache is 16 * 8192 * (512 + 64) * 4 B = 302.0 MB, 310.9 MB with the
// queries and the output: ~74 us at ~4.2 TB/s of streaming read (H200). The arithmetic is
// 2 * 16 * 128 * 8192 * (2 * 512 + 64) = 36.5 GFLOP: ~545 us on fp32 CUDA cores (~67 TFLOP/s),
// ~221 us as 3xTF32 (three TF32 products at the ~495 TFLOP/s dense peak: ~165 effective), and
// ~111 us as fp16x3, the arithmetic used here (three FP16 products at the ~989 TFLOP/s dense
// peak: ~330 effective). Every head reads the same 576 floats per token, ~120 FLOP per byte:
// with any of these the kernel is bound by arithmetic, and its binding floor is ~111 us.
//
// 1. fp16x3. Each fp32 operand x is split into hi = fp16(x) and lo = fp16(x - hi) (11 + 11
//    significant bits) and a product is hi*hi + hi*lo + lo*hi, accumulated in fp32 by
//    mma.sync.m16n8k16: ~2^-21 relative error per product, the accuracy of 3xTF32, at half of
//    its tensor-core time. FP16 needs the values in its range: the inputs are bounded by the
//    challenge (|x| <= 1,000), the softmax weights lie in [0, 1], and the scale is applied to
//    the fp32 scores, not to the queries; a tiny value loses relative precision as an fp16
//    subnormal but keeps an absolute error below 2^-25. (bf16x3, with no range to mind, is
//    ~2^-17 per product: on scores of a few hundred that spends up to half the 1e-3
//    tolerance.) The scores are S = Q_nope Kc^T + Q_pe Kpe^T, the output O += P Kc: the latent
//    tile Kc is the key of the first product and the value of the second.
// 2. Registers hold the queries, so S reads only the tile. A CTA takes 32 heads: their queries
//    (32 x 576 as fp16 hi/lo, 72 registers a thread) and outputs (32 x 512 fp32, 64 registers)
//    fit in its registers, where 128 heads would need 2.2 times the register file. Each of its
//    8 warps owns a slice of the dimensions: latent chunks of 16 (warp w: chunks w, w+8, w+16,
//    w+24) and one rotary chunk of 8. For S it multiplies its slice of Q by its slice of the
//    tile (a partial score for all 32 heads, summed across warps in shared memory); for
//    O += P Kc it owns the same latent columns of O, and the tile slice it already holds in
//    registers is transposed into the value fragments with movmatrix: each element of the
//    tile is read from shared memory once and split once per CTA.
// 3. A cluster of four CTAs (one per 32 heads) shares every tile: each CTA copies a quarter of
//    the tile's rows with cp.async.bulk, multicast into the shared memory of all four, so a
//    token is read once from L2 for all 128 heads. Four stages of 16 tokens; a full mbarrier
//    per stage counts the bytes landing, an empty one counts the release by all 32 warps of
//    the cluster (a warp releases its stage as soon as its fragments are in registers).
// 4. Split-KV. 16 sequences x 4 CTAs cannot fill 132 SMs, so the cache is cut into `splits`
//    chunks: the fewest that keep the waves of resident clusters (from the occupancy API) at
//    least 90% full. An H200 holds 30 clusters of four: one chunk per sequence (16 clusters)
//    left 68 of its 132 SMs idle; 7 chunks make 112 clusters, 4 waves 93% full. Each CTA
//    writes its chunk's normalized output and log-sum-exp; the last CTA of a (batch, head
//    group) to finish, counted with an atomic, merges the chunks. One kernel, one launch.
// 5. Online softmax in base 2: the scores are scaled by softmax_scale * log2(e), one exp2 per
//    weight; the rescale of O is skipped when no running maximum of a warp's heads moved, as
//    happens for most tiles once the maximum has settled.
// 6. What bounds it (an estimate from the SASS, not a measurement). Per 16-token tile a warp
//    issues ~510 instructions: 108 mma.sync (96 m16n8k16, 12 m16n8k8), ~110 for the fp16
//    splits, 32 movmatrix, 46 shared loads, the softmax and the barriers. The two warps of an
//    SM sub-partition issue ~1,020 a tile against ~816 cycles of tensor-core work at the dense
//    peak, so mma.sync issue caps the kernel near 80% of the floor; wgmma, which reads its
//    operands from shared memory without the register file's issue slots, is the next step.
//
// tests/mla_cpu_model runs this file's kernel on the CPU (a fiber per GPU thread, the PTX
// operand layouts, mbarriers and multicast copies modelled); the sm_90 primitives and the host
// code are left out there (MLA_HOST_MODEL).
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
#ifndef MLA_HOST_MODEL
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
#endif  // MLA_HOST_MODEL

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

// DeepSeek's dimensions, for which the kernel is compiled with every warp's slots known
inline bool is_full(int rank, int rope) { return rank == MAX_RANK && rope == MAX_ROPE; }

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

// FULL: kv_lora_rank = 512 and rope_dim = 64 (DeepSeek's), so every warp owns four latent
// chunks and a rotary one, known at compile time: no branch around a warp's products
template <bool FULL>
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
    const int chunks = p.rank / 16;                   // latent chunks of 16 columns
    const bool has_rope = FULL || warp < p.rope / 8;  // warp w owns rotary columns [8w, 8w + 8)
    auto owns = [&](int i) { return FULL || warp + WARPS * i < chunks; };  // latent slot i

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

// The launch's parameters, given how many clusters of `groups` CTAs the GPU runs at once:
// 32 heads per CTA, tile rows padded to 8 mod 32 floats (conflict-free fragment loads), and
// split_count's chunks per sequence, each at least one tile. The scratch pointers are left
// for the caller.
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
    p.groups = head_groups(num_heads);
    p.row_floats = row_floats(kv_lora_rank, rope_dim);
    p.scale_log2 = softmax_scale * 1.4426950408889634f;
    const int tiles = (cache_len + TILE - 1) / TILE;
    const int wanted = split_count(batch_size, tiles, resident_clusters);
    const int per_split = (tiles + wanted - 1) / wanted;  // tiles per chunk
    p.tokens_per_split = per_split * TILE;
    p.splits = (tiles + per_split - 1) / per_split;
    return p;
}

#ifndef MLA_HOST_MODEL
// Scratch for the partial results and one counter per (batch, head group) (zeroed once: the
// last CTA of a group resets its counter), grown on demand and kept between calls.
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
        const int most = (int)smem_bytes(row_floats(MAX_RANK, MAX_ROPE));
        cudaFuncSetAttribute(mla_decode_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             most);
        cudaFuncSetAttribute(mla_decode_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             most);
        configured = true;
    }
    const bool full = is_full(kv_lora_rank, rope_dim);
    void (*kernel)(Params) = full ? mla_decode_kernel<true> : mla_decode_kernel<false>;
    const int groups = head_groups(num_heads);
    cudaLaunchAttribute cluster;
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = groups;
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    cudaLaunchConfig_t config = {};
    config.blockDim = dim3(THREADS);
    config.dynamicSmemBytes = smem_bytes(row_floats(kv_lora_rank, rope_dim));
    config.attrs = &cluster;
    config.numAttrs = 1;
    config.gridDim = dim3(groups, 1, 1);
    // clusters of this size the GPU holds at once (shared memory decides), asked once per shape
    static int asked_groups = 0, resident = 0;
    static size_t asked_bytes = 0;
    if (groups != asked_groups || config.dynamicSmemBytes != asked_bytes) {
        resident = 0;
        cudaOccupancyMaxActiveClusters(&resident, kernel, &config);
        asked_groups = groups;
        asked_bytes = config.dynamicSmemBytes;
    }

    Params p = plan(q_nope, q_pe, kv_c, k_pe, output, batch_size, num_heads, cache_len,
                    kv_lora_rank, rope_dim, softmax_scale, resident);
    const size_t rows = (size_t)batch_size * num_heads * p.splits;
    p.part_out = workspace(rows * kv_lora_rank + rows, &p.finished, (size_t)batch_size * groups);
    p.part_lse = p.part_out + rows * kv_lora_rank;
    config.gridDim = dim3(groups, p.splits, batch_size);
    cudaLaunchKernelEx(&config, kernel, p);
}
#endif  // MLA_HOST_MODEL
