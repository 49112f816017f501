// FP8 (E4M3) KV-cache attention at the memory-bandwidth limit: split-KV (flash-decoding) in one
// kernel, GQA packing on tensor cores, the GPU's own E4M3 conversion and 16-byte loads.
//
// The floor. At the performance shape (batch 4, 8 KV heads, 32,768 tokens, head_dim 128) K_fp8
// and V_fp8 are 2 * 4 * 8 * 32768 * 128 B = 268.4 MB; Q and the output 0.13 MB. At ~4.2 TB/s of
// streaming read (H200) that is ~64 us, at ~3.0 TB/s (H100) ~90 us.
//
// Why tensor cores. An SM of an H200 receives ~16 bytes per clock at that bandwidth
// (4.2 TB/s / 132 SMs / 1.98 GHz) and issues at most 128 lane-instructions per clock: 8 per
// byte. With G = 4 query heads per KV head every byte feeds 4 multiply-adds (4 scores or 4
// outputs) plus its conversion, 5-6 of those 8 on CUDA cores before the softmax, the loads and
// the address math. mma.sync.m16n8k16 (f16 in, f32 accumulate) does 2048 multiply-adds per
// warp-instruction: the loop below is ~265 warp-instructions per 4 KB tile of K and V (nvcc
// 13, sm_90a, outside the rare rescale), ~2.1 lane-instructions per byte.
//
// 1. Exact f16 operands. Every E4M3 value is exact in float16 (5 exponent, 10 mantissa bits),
//    and cvt.rn.f16x2.e4m3x2 (cuda_fp8.h's __nv_cvt_fp8x2_to_halfraw2, one instruction per two
//    bytes on sm_89+) makes MMA operands of the cache directly. The queries and the softmax
//    weights are not exact in f16, so each is split into hi = f16(x) and lo = f16(x - hi)
//    (22 significant bits, float32-like). In S = Q K^T the packing puts a query's hi in row h
//    and its lo in row h + 8 of the MMA's 16 rows: one mma multiplies both, and row h plus row
//    h + 8 is the product (a block serves up to 8 query heads of one KV head; G = 4 fills
//    rows 0-3 and 8-11). The output is computed transposed, O^T = V^T P^T: 16 dims of the
//    output per mma and 8 columns, 4 heads' hi weights and their lo weights, which leaves no
//    padding at G = 4 and needs half the accumulators of O = P V (groups of more than 4 heads
//    take two such column tiles).
// 2. Scales, once. k_scale * log2(e) / sqrt(d) is folded into the query before the split, and
//    each query row is scaled to a largest |element| of 2^15: inside f16's range (65504) for
//    any input, with the lo halves of all but its tiniest elements clear of f16's subnormals.
//    One multiply per score scales back. v_scale multiplies each output element once, at the
//    end.
// 3. Fragments straight from 16-byte loads. An mma register holds two consecutive k-elements.
//    For S = Q K^T, k is head_dim: a lane loads 16 consecutive bytes of one key row, and the
//    order of head_dim inside each 64-column chunk is permuted so that those bytes are exactly
//    its B fragments for 4 k-steps; the query fragments use the same permutation (a dot product
//    does not care about the order). For O^T = V^T P^T, k is the token: a lane loads 16 bytes
//    of each of 4 value rows, and byte permutes (prmt) pair one column of two tokens per 16
//    bits before the conversion, which are its A fragments. P leaves the S accumulator with
//    each lane holding the weights of the tokens its B fragment needs; lanes take the hi or
//    lo halves of their column's head from the lane 16 away with one shuffle per register.
// 4. Split-KV in one kernel. batch * kv_heads = 32 groups cannot fill 132 SMs, so each group's
//    tokens are cut into `splits` chunks: exactly one wave of resident blocks (from the
//    occupancy API). Each block's warps take interleaved 16-token tiles with online softmaxes
//    of their own, merged through shared memory; each block writes a normalized partial output
//    and its log-sum-exp; the last block of a group to finish (an atomic counter) merges them.
// 5. Online softmax in base 2 with lazy rescaling: the running max moves (and the 8 * VC * NT
//    accumulator tiles are rescaled) only when a tile's max exceeds it by more than 8, so
//    weights p = 2^(s - m + 7) stay below 2^15, inside f16 and (but for negligible ones) clear
//    of its subnormals.
// 6. Loads in flight, in registers. Each warp holds one 4 KB tile (16 tokens of K and V) as
//    the 16-byte loads of its lanes (ld.global.cs: streaming, used once), and reloads those
//    registers with its next tile as soon as the tile is used: while it lands, the block's
//    other warps compute. One block of 16 warps per SM (128 registers a thread) is 64 KB per
//    SM in flight and four warps per scheduler to hide the latency of each warp's chain of
//    mma, conversions and shuffles; tiles of 8 KB (head_dim above 128) take 8 warps.
//    Measured on an H200 (performance test, % of the read floor, scripts/tune.py, every row
//    beside this kernel in the same run): this kernel 87.7-89.0%; 8 warps holding three tiles
//    each (96 KB in flight, 255 registers) 85.6-86.6%, 87.7% with a tile's key registers
//    reloaded as soon as S is done with them (no gain at 16 warps); the tiles staged in a ring
//    of 6 shared-memory stages per warp by tensor-map copies with the 128-byte swizzle
//    (192 KB per SM in flight, 8, 12 or 16 warps) 81-83%; an L2 prefetch of the tile one or
//    two on 75-77%; the splits of a group interleaved by steps instead of contiguous, no
//    change. Earlier: cp.async staging (3 stages) 48%; two tiles, 2 blocks of 4 warps per
//    SM 82%.
//
// tests/cuda_cpu_model runs the kernel and the launch plan on the CPU: with CUDA_CPU_MODEL
// defined, the mma and the host's CUDA calls are left to it.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

// Warps per block, each with its own stream of tiles: 16 while a tile is 4 KB or less
// (head_dim <= 128: 128 registers a thread, no spill), else 8
__host__ __device__ constexpr int warps_per_block(int vc) { return vc == 1 ? 16 : 8; }
constexpr int TILE = 16;            // tokens per warp-step: the k of the V^T P^T mma
constexpr int MAX_HEADS = 8;        // query heads per block: S's MMA rows h (hi), h + 8 (lo)
constexpr int WAVES = 1;            // blocks per resident block slot of the GPU
constexpr float Q_MAX = 32768.0f;   // a query row's largest |element| after scaling
constexpr float RESCALE_AT = 8.0f;  // log2 units the tile max may pass the running max by
constexpr float P_SHIFT = 7.0f;     // p = 2^(s - m + 7) < 2^(RESCALE_AT + P_SHIFT) = 2^15
constexpr int MERGE = 8;  // splits whose partial results one step of the final merge loads

// Four E4M3 codes (one 32-bit word) -> two f16x2: codes 0, 1 -> lo, codes 2, 3 -> hi. On
// sm_89+ one cvt.rn.f16x2.e4m3x2 per pair, the instruction cuda_fp8.h's
// __nv_cvt_fp8x2_to_halfraw2 emits; naming both halves of the word in PTX spares the shift a
// 16-bit argument would take for the upper pair. Older GPUs get cuda_fp8.h's exact software
// conversion.
__device__ __forceinline__ void e4m3x4_to_f16x2(uint32_t codes, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n"
        " cvt.rn.f16x2.e4m3x2 %1, h;\n}"
        : "=r"(lo), "=r"(hi)
        : "r"(codes));
#else
    const __half2_raw l = __nv_cvt_fp8x2_to_halfraw2(codes & 0xFFFF, __NV_E4M3);
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(codes >> 16, __NV_E4M3);
    lo = static_cast<uint32_t>(l.x) | (static_cast<uint32_t>(l.y) << 16);
    hi = static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
#endif
}

__device__ __forceinline__ uint32_t f16x2_bits(__half2 h) {
    return *reinterpret_cast<uint32_t*>(&h);
}

// x0, x1 -> hi = f16x2(x0, x1) and lo = f16x2 of what hi misses
__device__ __forceinline__ void split_f16x2(float x0, float x1, uint32_t& hi, uint32_t& lo) {
    const __half2 h = __floats2half2_rn(x0, x1);
    hi = f16x2_bits(h);
    lo = f16x2_bits(__floats2half2_rn(x0 - __low2float(h), x1 - __high2float(h)));
}

// d += A (16x16, row-major f16) * B (16x8, col-major f16), f32 accumulators
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], uint4 a, uint32_t b0, uint32_t b1) {
#ifdef CUDA_CPU_MODEL
    const uint32_t regs[4] = {a.x, a.y, a.z, a.w};
    mma_16816(d, regs, b0, b1);
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ uint32_t word(uint4 x, int i) {
    return i == 0 ? x.x : i == 1 ? x.y : i == 2 ? x.z : x.w;
}

// 16 bytes of a cache row (8 + 8 when rows are only 8-byte aligned), streaming: the bytes at
// or past `remaining` (what is left of the row) are zeros, read from nowhere
template <bool VEC16>
__device__ __forceinline__ uint4 load16(const uint8_t* src, int remaining) {
    if constexpr (VEC16) {
        return remaining > 0 ? __ldcs(reinterpret_cast<const uint4*>(src)) : make_uint4(0, 0, 0, 0);
    } else {
        const uint2 zero = make_uint2(0, 0);
        const uint2 lo = remaining > 0 ? __ldcs(reinterpret_cast<const uint2*>(src)) : zero;
        const uint2 hi = remaining > 8 ? __ldcs(reinterpret_cast<const uint2*>(src + 8)) : zero;
        return make_uint4(lo.x, lo.y, hi.x, hi.y);
    }
}

// One warp's 16-token tile, as 16-byte chunks per lane. Lane (g, t) = (lane / 4, lane % 4)
// holds key rows base + g and base + 8 + g, bytes [64c + 16t, +16) of each 64-column chunk
// c < KC (its B fragments of S = Q K^T), and value rows base + 2t + {0, 1, 8, 9}, bytes
// [128c + 16g, +16) of each 128-column chunk c < VC (its A fragments of O^T = V^T P^T).
template <int KC, int VC>
struct Tile {
    uint4 k[2][KC];
    uint4 v[4][VC];

    // k_at: key row base + g at column 16t; v_at: value row base + 2t at column 16g;
    // rows_left: t_end - base (the rows at or past it, all of them when it is <= 0, are zeros)
    template <bool VEC16>
    __device__ void load(const uint8_t* k_at, const uint8_t* v_at, int rows_left, int head_dim,
                         int g, int t) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const bool row_ok = 8 * j + g < rows_left;
#pragma unroll
            for (int c = 0; c < KC; ++c)
                k[j][c] = load16<VEC16>(k_at + (size_t)(8 * j) * head_dim + 64 * c,
                                        row_ok ? head_dim - 64 * c - 16 * t : 0);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int dr = (r & 1) + 8 * (r >> 1);
            const bool row_ok = 2 * t + dr < rows_left;
#pragma unroll
            for (int c = 0; c < VC; ++c)
                v[r][c] = load16<VEC16>(v_at + (size_t)dr * head_dim + 128 * c,
                                        row_ok ? head_dim - 128 * c - 16 * g : 0);
        }
    }
};

// Shared-memory row of a warp's merged output: dim d at d + d / 32, rows 4 banks apart, so
// the 32 lanes' stores of one accumulator register hit 32 different banks.
template <int VC>
struct OutRow {
    static constexpr int STRIDE = (132 * VC - 4 + 31) / 32 * 32 + 4;
    __device__ static int at(int d) { return d + (d >> 5); }
};

// Dynamic shared memory of a block: the warps' outputs for the merge, then the query fragments.
template <int KC, int VC>
struct Smem {
    static constexpr size_t OUTPUTS =
        sizeof(float) * warps_per_block(VC) * MAX_HEADS * OutRow<VC>::STRIDE;
    static constexpr size_t BYTES = OUTPUTS + (size_t)4 * KC * 32 * 16;
};

// One block: query heads [h0, h0 + heads_here) of kv_head and batch blockIdx.z, tokens
// [t_begin, t_end) of their cache. KC 64-column chunks of a key row, VC 128-column chunks of a
// value row (head_dim <= 64 * KC <= 128 * VC).
template <int KC, int VC, int NT, bool VEC16, int MIN_BLOCKS>
__global__ void __launch_bounds__(warps_per_block(VC) * 32, MIN_BLOCKS)
    fp8_decode_kernel(const float* __restrict__ Q, const uint8_t* __restrict__ K,
                      const uint8_t* __restrict__ V, const float* __restrict__ k_scale,
                      const float* __restrict__ v_scale, float* __restrict__ output,
                      float* __restrict__ part_out, float* __restrict__ part_lse,
                      unsigned* __restrict__ finished, int num_q_heads, int num_kv_heads,
                      int cache_len, int head_dim, int group, int head_groups, int tokens_per_split,
                      int splits) {
    constexpr int WARPS = warps_per_block(VC);
    constexpr int STEP = WARPS * TILE;  // tokens per block iteration
    const int split = blockIdx.x;
    const int kv_head = blockIdx.y / head_groups;
    const int h0 = kv_head * group + (blockIdx.y % head_groups) * (4 * NT);
    const int heads_here = min(4 * NT, kv_head * group + group - h0);
    const int batch = blockIdx.z;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;  // the mma fragments' groupID and threadID_in_group

    const size_t kv_rows = ((size_t)batch * num_kv_heads + kv_head) * cache_len;
    const uint8_t* k_rows = K + kv_rows * head_dim;
    const uint8_t* v_rows = V + kv_rows * head_dim;
    const int t_begin = split * tokens_per_split;
    const int t_end = min(cache_len, t_begin + tokens_per_split);
    const int first = t_begin + warp * TILE;  // this warp's first token
    const int tiles = first < t_end ? (t_end - first + STEP - 1) / STEP : 0;
    const uint8_t* k_at = k_rows + (size_t)(first + g) * head_dim + 16 * t;
    const uint8_t* v_at = v_rows + (size_t)(first + 2 * t) * head_dim + 16 * g;
    const size_t advance = (size_t)STEP * head_dim;  // bytes from one tile of a warp to its next

#ifdef CUDA_CPU_MODEL
    uint4* smem = reinterpret_cast<uint4*>(shared_memory_base());
#else
    extern __shared__ uint4 smem[];
#endif
    uint4(*s_qfrag)[32] = reinterpret_cast<uint4(*)[32]>(smem + Smem<KC, VC>::OUTPUTS / 16);

    // the warp's first tile starts landing while the query fragments are built
    Tile<KC, VC> tile;
    tile.template load<VEC16>(k_at, v_at, t_end - first, head_dim, g, t);

    // Query fragments (A of S = Q K^T), the same for every warp: built once by warp 0. Lane
    // (g, t) holds head h0 + g at columns 64c + 16t + [0, 16): k-step 4c + s takes columns
    // 4s + {0, 1} (k = 2t, 2t+1) and 4s + {2, 3} (k = 2t+8, 2t+9), hi in row g, lo in row g+8.
    __shared__ float s_row_scale[MAX_HEADS];
    if (warp == 0) {
        const float q_scale = k_scale[kv_head] * (1.4426950408889634f / sqrtf((float)head_dim));
        const float* q_row = Q + ((size_t)batch * num_q_heads + h0 + g) * head_dim;
        float q[KC][16], largest = 0.0f;
#pragma unroll
        for (int c = 0; c < KC; ++c)
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                const int d = 64 * c + 16 * t + i;
                q[c][i] = g < heads_here && d < head_dim ? q_row[d] * q_scale : 0.0f;
                largest = fmaxf(largest, fabsf(q[c][i]));
            }
        largest = fmaxf(largest, __shfl_xor_sync(0xffffffff, largest, 1));
        largest = fmaxf(largest, __shfl_xor_sync(0xffffffff, largest, 2));
        const float row_scale = largest > 0.0f ? largest / Q_MAX : 1.0f;
        const float inv = 1.0f / row_scale;
#pragma unroll
        for (int c = 0; c < KC; ++c)
#pragma unroll
            for (int s = 0; s < 4; ++s) {
                uint4 a;
                split_f16x2(q[c][4 * s] * inv, q[c][4 * s + 1] * inv, a.x, a.y);
                split_f16x2(q[c][4 * s + 2] * inv, q[c][4 * s + 3] * inv, a.z, a.w);
                s_qfrag[4 * c + s][lane] = a;
            }
        if (t == 0) s_row_scale[g] = row_scale;
    }
    __syncthreads();
    const float row_scale = s_row_scale[g];  // multiplies each score of head h0 + g

    // the warp's online softmax for head h0 + g: running max m (base 2), this lane's share of
    // the running sum l, and its share of the O^T accumulator tiles
    float m = -INFINITY, l = 0.0f;
    // O^T tiles [(4c + w) * 2 + q][nt]: 16 dims each (see the V^T P^T step below) by n-tile
    constexpr int DIM_TILES = 8 * VC;
    float o[DIM_TILES][NT][4] = {};

    // one tile of the warp's stream: tile i, base its first token
    const auto attend = [&](const Tile<KC, VC>& tile, int i) {
        const int base = first + i * STEP;

        // S = Q K^T for tokens base + 8j + n (n-tile j, column n); s[j][0, 1] hi rows,
        // s[j][2, 3] lo rows, columns 2t and 2t + 1
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int c = 0; c < KC; ++c)
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {
                const uint4 a = s_qfrag[4 * c + ks][lane];
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    uint32_t b0, b1;  // columns 4ks + {0, 1} and 4ks + {2, 3} of the 16
                    e4m3x4_to_f16x2(word(tile.k[j][c], ks), b0, b1);
                    mma_16x8x16(s[j], a, b0, b1);
                }
            }

        // scores of head h0 + g for tokens base + 8j + 2t + e; -inf past the chunk
        float score[2][2], tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const bool ok = base + 8 * j + 2 * t + e < t_end;
                score[j][e] = ok ? (s[j][e] + s[j][2 + e]) * row_scale : -INFINITY;
                tile_max = fmaxf(tile_max, score[j][e]);
            }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 2));
        if (__any_sync(0xffffffff, tile_max > m + RESCALE_AT)) {  // rare after the first tiles
            const float m_new = fmaxf(m, tile_max);
            const float rescale = exp2f(m - m_new);  // 0 on the first tile
            l *= rescale;
            // this lane's O^T columns are heads 4nt + (2t + e) % 4: their factors come from
            // lanes (head, 0), where m is that head's
            float factor[NT][2];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    factor[nt][e] =
                        __shfl_sync(0xffffffff, rescale, 4 * (4 * nt + ((2 * t + e) & 3)));
#pragma unroll
            for (int d = 0; d < DIM_TILES; ++d)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int r = 0; r < 4; ++r) o[d][nt][r] *= factor[nt][r & 1];
            m = m_new;
        }

        // weights of head h0 + g for tokens base + 2t + e (j = 0) and base + 8 + 2t + e (j = 1)
        const float m_ref = m - P_SHIFT;
        float p[2][2];
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                p[j][e] = exp2f(score[j][e] - m_ref);
                l += p[j][e];
            }
        uint32_t hi01, lo01, hi89, lo89;  // tokens 2t, 2t+1 and 2t+8, 2t+9, as f16x2
        split_f16x2(p[0][0], p[0][1], hi01, lo01);
        split_f16x2(p[1][0], p[1][1], hi89, lo89);

        // O^T += V^T P^T, so that the 16 rows of an mma are 16 dims of the output and its 8
        // columns 4 heads' hi and lo weights: none of it is padding when G = 4, and the
        // accumulators are half those of O = P V with hi and lo weights in rows h and h + 8.
        // B = P^T: column n of n-tile nt is head 4nt + n % 4, its hi (n < 4) or lo weights;
        // lane (g, t) takes them for tokens 2t, 2t+1, 2t+8, 2t+9 from lane (4nt + g % 4, t),
        // which holds them: itself or the lane 16 away.
        uint32_t pb[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int from = 4 * (4 * nt + (g & 3)) + t;
            const bool lo = g >= 4;
            // a lane that is not its own source is in the other half: the lo lanes of n-tile
            // 0 get lo weights, the hi lanes of n-tile 1 hi weights
            const uint32_t got01 = __shfl_sync(0xffffffff, nt == 0 ? lo01 : hi01, from);
            const uint32_t got89 = __shfl_sync(0xffffffff, nt == 0 ? lo89 : hi89, from);
            const bool own = (g >> 2) == nt;
            pb[nt][0] = own ? (lo ? lo01 : hi01) : got01;
            pb[nt][1] = own ? (lo ? lo89 : hi89) : got89;
        }

        // A = V^T: lane (g, t) has dims 128c + 16g + 4w + i in byte i of word w of its 16 bytes
        // of value rows 2t, 2t+1 (k = 2t, 2t+1) and 2t+8, 2t+9 (k = 2t+8, 2t+9); a byte permute
        // pairs two rows' byte i per 16 bits. Tile (4c + w) * 2 + q takes dims 128c + 16g + 4w + q
        // (row g) and + 2 (row g + 8): c0, c1 of its accumulator are the first dim for columns
        // 2t, 2t + 1, c2, c3 the second.
#pragma unroll
        for (int c = 0; c < VC; ++c)
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                const uint32_t r0 = word(tile.v[0][c], w), r1 = word(tile.v[1][c], w);
                const uint32_t r8 = word(tile.v[2][c], w), r9 = word(tile.v[3][c], w);
                uint32_t b01[4], b89[4];  // byte i of the word: rows 2t, 2t+1 and 2t+8, 2t+9
                e4m3x4_to_f16x2(__byte_perm(r0, r1, 0x5140), b01[0], b01[1]);
                e4m3x4_to_f16x2(__byte_perm(r0, r1, 0x7362), b01[2], b01[3]);
                e4m3x4_to_f16x2(__byte_perm(r8, r9, 0x5140), b89[0], b89[1]);
                e4m3x4_to_f16x2(__byte_perm(r8, r9, 0x7362), b89[2], b89[3]);
#pragma unroll
                for (int q = 0; q < 2; ++q) {
                    const uint4 va = make_uint4(b01[q], b01[q + 2], b89[q], b89[q + 2]);
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt)
                        mma_16x8x16(o[(4 * c + w) * 2 + q][nt], va, pb[nt][0], pb[nt][1]);
                }
            }
    };
    // the tile's registers are reloaded with the warp's next tile once it is used (while it
    // lands, the block's other warps compute)
    for (int i = 0; i < tiles; ++i) {
        attend(tile, i);
        const int next = i + 1;
        tile.template load<VEC16>(k_at + next * advance, v_at + next * advance,
                                  t_end - first - next * STEP, head_dim, g, t);
    }

    // merge the block's WARPS softmax states through shared memory
    l += __shfl_xor_sync(0xffffffff, l, 1);
    l += __shfl_xor_sync(0xffffffff, l, 2);
    __shared__ float s_m[WARPS][MAX_HEADS], s_l[WARPS][MAX_HEADS];
    float (*s_o)[MAX_HEADS][OutRow<VC>::STRIDE] =
        reinterpret_cast<float (*)[MAX_HEADS][OutRow<VC>::STRIDE]>(smem);
    if (t == 0) {
        s_m[warp][g] = m;
        s_l[warp][g] = l;
    }
    // column 2t + e (t < 2) is head 4nt + 2t + e's hi part, column 2t + e + 4 (lane t + 2)
    // its lo part
#pragma unroll
    for (int c = 0; c < VC; ++c)
#pragma unroll
        for (int w = 0; w < 4; ++w)
#pragma unroll
            for (int q = 0; q < 2; ++q)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int r = 0; r < 4; ++r) {
                        const float sum =
                            o[(4 * c + w) * 2 + q][nt][r] +
                            __shfl_xor_sync(0xffffffff, o[(4 * c + w) * 2 + q][nt][r], 2);
                        const int d = 128 * c + 16 * g + 4 * w + q + 2 * (r >> 1);
                        if (t < 2) s_o[warp][4 * nt + 2 * t + (r & 1)][OutRow<VC>::at(d)] = sum;
                    }
    __syncthreads();
    const float out_scale = v_scale[kv_head];
    for (int i = threadIdx.x; i < heads_here * head_dim; i += WARPS * 32) {
        const int h = i / head_dim, d = i % head_dim;
        float m_all = -INFINITY;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, s_m[w][h]);
        float l_all = 0.0f, sum = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) {
            const float f = exp2f(s_m[w][h] - m_all);  // 0 for a warp that had no tile
            l_all += s_l[w][h] * f;
            sum += s_o[w][h][OutRow<VC>::at(d)] * f;
        }
        const size_t q_row = (size_t)batch * num_q_heads + h0 + h;
        if (splits == 1) {  // the whole cache: this is the answer
            output[q_row * head_dim + d] = sum / l_all * out_scale;
            continue;
        }
        const size_t row = q_row * splits + split;
        part_out[row * head_dim + d] = sum / l_all;
        if (d == 0) part_lse[row] = m_all + log2f(l_all);
    }
    if (splits == 1) return;

    // the last block of this (batch, KV head, head group) to get here merges all its splits
    __shared__ bool s_last;
    const int group_id = blockIdx.z * gridDim.y + blockIdx.y;
    __threadfence();  // this block's partial results are visible before the count
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(finished + group_id, 1u) == (unsigned)splits - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    for (int i = threadIdx.x; i < heads_here * head_dim; i += WARPS * 32) {
        const int h = i / head_dim, d = i % head_dim;
        const size_t q_row = (size_t)batch * num_q_heads + h0 + h;
        const float* lse = part_lse + q_row * splits;
        const float* out = part_out + q_row * splits * head_dim + d;
        // MERGE splits at a time, all their loads issued before the first is used: one trip
        // to L2 per MERGE splits, not two per split
        float lse_max = -INFINITY, sum = 0.0f, weight_sum = 0.0f;
        for (int s0 = 0; s0 < splits; s0 += MERGE) {
            float part_lse_s[MERGE], part_out_s[MERGE];
#pragma unroll
            for (int s = 0; s < MERGE; ++s) {
                const bool ok = s0 + s < splits;
                part_lse_s[s] = ok ? __ldcg(lse + s0 + s) : -INFINITY;
                part_out_s[s] = ok ? __ldcg(out + (size_t)(s0 + s) * head_dim) : 0.0f;
            }
            float chunk_max = lse_max;
#pragma unroll
            for (int s = 0; s < MERGE; ++s) chunk_max = fmaxf(chunk_max, part_lse_s[s]);
            const float rescale = exp2f(lse_max - chunk_max);  // 0 on the first chunk
            sum *= rescale;
            weight_sum *= rescale;
#pragma unroll
            for (int s = 0; s < MERGE; ++s) {
                const float w = exp2f(part_lse_s[s] - chunk_max);
                weight_sum += w;
                sum += w * part_out_s[s];
            }
            lse_max = chunk_max;
        }
        output[q_row * head_dim + d] = sum / weight_sum * out_scale;
    }
    if (threadIdx.x == 0) finished[group_id] = 0;  // ready for the next call
}

// The split-KV plan of a launch: as many splits of each group's tokens as fill WAVES full
// waves of the GPU's `resident` blocks (never a partial extra wave), in steps of a block's
// STEP = warps * TILE tokens. nt: the kernel's n-tiles of 4 query heads.
struct Plan {
    int group, head_groups, tokens_per_split, splits;
};

static Plan plan_launch(int batch_size, int num_q_heads, int num_kv_heads, int cache_len, int nt,
                        int warps, int resident) {
    Plan p;
    p.group = num_q_heads / num_kv_heads;
    p.head_groups = (p.group + 4 * nt - 1) / (4 * nt);
    const int base_blocks = batch_size * num_kv_heads * p.head_groups;
    const int wanted = max(1, WAVES * resident / base_blocks);
    const int step = warps * TILE;
    const int tokens_per_split = (cache_len + wanted - 1) / wanted;
    p.tokens_per_split = max(step, (tokens_per_split + step - 1) / step * step);
    p.splits = (cache_len + p.tokens_per_split - 1) / p.tokens_per_split;
    return p;
}

// The kernel's template arguments for the shapes: run(KernelShape<KC, VC, NT, VEC16>{}). NT:
// n-tiles of 4 query heads (hi and lo weights) per block, 2 for groups of more than 4.
template <int KC_, int VC_, int NT_, bool VEC16_>
struct KernelShape {
    static constexpr int KC = KC_, VC = VC_, NT = NT_;
    static constexpr bool VEC16 = VEC16_;
};

template <int NT, bool VEC16, class Run>
static void by_head_dim(int head_dim, Run&& run) {
    if (head_dim <= 64)
        run(KernelShape<1, 1, NT, VEC16>{});
    else if (head_dim <= 128)
        run(KernelShape<2, 1, NT, VEC16>{});
    else if (head_dim <= 192)
        run(KernelShape<3, 2, NT, VEC16>{});
    else
        run(KernelShape<4, 2, NT, VEC16>{});
}

template <class Run>
static void with_kernel_shape(int group, int head_dim, Run&& run) {
    const bool wide = group > 4, vec16 = head_dim % 16 == 0;
    if (wide && vec16)
        by_head_dim<2, true>(head_dim, run);
    else if (wide)
        by_head_dim<2, false>(head_dim, run);
    else if (vec16)
        by_head_dim<1, true>(head_dim, run);
    else
        by_head_dim<1, false>(head_dim, run);
}

#ifndef CUDA_CPU_MODEL
// Scratch for the partial results and one counter per (batch, KV head, head group) (zeroed
// once: the last block of a group resets its counter), grown on demand and kept between calls.
static float* workspace(size_t floats, unsigned** counters, int groups) {
    static float* buffer = nullptr;
    static unsigned* finished = nullptr;
    static size_t capacity = 0;
    static int counter_capacity = 0;
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

// How many blocks of `kernel` (of `threads` threads and `smem` bytes of dynamic shared memory)
// the whole GPU runs at once.
template <typename Kernel>
static int resident_blocks(Kernel kernel, int threads, size_t smem) {
    int device, sms, per_sm;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem);
    return sms * per_sm;
}

template <int KC, int VC, int NT, bool VEC16>
static void launch(const float* Q, const uint8_t* K, const uint8_t* V, const float* k_scale,
                   const float* v_scale, float* output, int batch_size, int num_q_heads,
                   int num_kv_heads, int cache_len, int head_dim) {
    // one block per SM: 16 warps of up to 128 registers (head_dim <= 128) or 8 of up to 255
    constexpr int MIN_BLOCKS = 1;
    constexpr int WARPS = warps_per_block(VC);
    const auto kernel = fp8_decode_kernel<KC, VC, NT, VEC16, MIN_BLOCKS>;
    constexpr size_t smem = Smem<KC, VC>::BYTES;
    static const bool opted_in =  // more than the default 48 KB of dynamic shared memory
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) ==
        cudaSuccess;
    (void)opted_in;
    static const int resident = resident_blocks(kernel, WARPS * 32, smem);
    const Plan p =
        plan_launch(batch_size, num_q_heads, num_kv_heads, cache_len, NT, WARPS, resident);

    const size_t rows = (size_t)batch_size * num_q_heads * p.splits;
    unsigned* finished;
    float* part_out =
        workspace(rows * head_dim + rows, &finished, batch_size * num_kv_heads * p.head_groups);
    float* part_lse = part_out + rows * head_dim;
    dim3 grid(p.splits, num_kv_heads * p.head_groups, batch_size);
    kernel<<<grid, WARPS * 32, smem>>>(Q, K, V, k_scale, v_scale, output, part_out, part_lse,
                                       finished, num_q_heads, num_kv_heads, cache_len, head_dim,
                                       p.group, p.head_groups, p.tokens_per_split, p.splits);
}

// Q, K_fp8, V_fp8, k_scale, v_scale, output are device pointers
extern "C" void solve(const float* Q, const uint8_t* K_fp8, const uint8_t* V_fp8,
                      const float* k_scale, const float* v_scale, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int cache_len, int head_dim) {
    with_kernel_shape(num_q_heads / num_kv_heads, head_dim, [&](auto shape) {
        using S = decltype(shape);
        launch<S::KC, S::VC, S::NT, S::VEC16>(Q, K_fp8, V_fp8, k_scale, v_scale, output, batch_size,
                                              num_q_heads, num_kv_heads, cache_len, head_dim);
    });
}
#endif  // CUDA_CPU_MODEL
