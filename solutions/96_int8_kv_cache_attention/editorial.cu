// INT8 KV-cache attention at the memory-bandwidth limit: split-KV (flash-decoding) in one
// kernel, scales folded into scores and weights, and an exact int8-to-float conversion at
// full rate.
//
// The floor. At the performance shape (32 heads, 8,192 tokens, head_dim 128) K_int8 and V_int8
// are 2 * 32 * 8192 * 128 B = 67.1 MB and the scales 2.1 MB: ~17 us at ~4.1 TB/s of streaming
// read (H200), ~23 us at ~3.0 TB/s (H100). A kernel this short also pays its ramp-up and
// tail, so the practical floor is a single streaming-read kernel over the same bytes.
//
// 1. Split-KV. 32 heads are 32 blocks, a quarter of the SMs, so each head's tokens are cut into
//    chunks: as many blocks as the GPU holds at once (one full wave, from the occupancy API).
//    Each block writes its chunk's normalized partial output and log-sum-exp (base 2); the last
//    block of a head to finish (an atomic counter per head) merges the chunks:
//    out = sum_s 2^(lse_s - L) O_s / sum_s 2^(lse_s - L). One kernel: no second launch, and no
//    idle gap while the host launches it.
// 2. Lane groups. Each lane loads 16 int8 of a row in one instruction (8 when head_dim is not
//    a multiple of 16); G2 lanes (a power of two) cover a row, so a warp handles 32 / G2 tokens
//    per load and reduces their dot products together with log2(G2) shuffles. Each warp loads
//    its next UNROLL rows of K and V before the math on the current UNROLL (double buffering in
//    registers), so its loads are always in flight; the online softmax rescales once per
//    UNROLL rows.
// 3. Scales per token, not per element: score = (q . k_int8) * k_scale * log2(e) / sqrt(d) and
//    the softmax weight p becomes p * v_scale before it multiplies the int8 values of V.
// 4. int8 -> float without I2F (a low-throughput conversion that would compete with the FMAs
//    the kernel needs): flip the sign bit (x ^ 0x80 = x + 128, as an unsigned byte), place the
//    byte in the mantissa of 2^23 with one byte permute (0x4B0000bb), and subtract 2^23 + 128.
//    The result is exact for all 256 values.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

constexpr int WARPS = 8;       // warps per block
constexpr int UNROLL = 2;      // warp-loads of K and V per batch of math
constexpr int WAVES = 1;       // blocks per resident block slot of the GPU
constexpr int MIN_BLOCKS = 1;  // resident blocks per SM the register allocation must allow

// Four int8 values packed in a word -> four exact floats.
__device__ __forceinline__ void int8x4_to_float(uint32_t packed, float* out) {
    const uint32_t biased = packed ^ 0x80808080u;  // each byte + 128, as unsigned
    const float bias = 8388736.0f;                 // 2^23 + 128
    out[0] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7440)) - bias;
    out[1] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7441)) - bias;
    out[2] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7442)) - bias;
    out[3] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7443)) - bias;
}

// VEC int8 per lane per load (16 bytes, or 8 when head_dim is not a multiple of 16).
template <int VEC>
__device__ __forceinline__ void load_int8(const int8_t* p, bool ok, uint32_t (&w)[VEC / 4]) {
    if constexpr (VEC == 16) {
        const uint4 x = ok ? __ldcs(reinterpret_cast<const uint4*>(p)) : make_uint4(0, 0, 0, 0);
        w[0] = x.x, w[1] = x.y, w[2] = x.z, w[3] = x.w;
    } else {
        const uint2 x = ok ? __ldcs(reinterpret_cast<const uint2*>(p)) : make_uint2(0, 0);
        w[0] = x.x, w[1] = x.y;
    }
}

// UNROLL rows of K and V for one lane (VEC int8 each) and their scales.
template <int VEC, int UNROLL>
struct Rows {
    uint32_t k[UNROLL][VEC / 4], v[UNROLL][VEC / 4];
    float k_scale[UNROLL], v_scale[UNROLL];

    // rows t0 + u * stride for u < UNROLL; rows at or past t_end read as zeros
    __device__ __forceinline__ void load(const int8_t* k_rows, const int8_t* v_rows,
                                         const float* ks, const float* vs, int t0, int stride,
                                         int t_end, bool col_ok, int head_dim) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int t = t0 + u * stride;
            const bool ok = t < t_end && col_ok;
            load_int8<VEC>(k_rows + (size_t)t * head_dim, ok, k[u]);
            load_int8<VEC>(v_rows + (size_t)t * head_dim, ok, v[u]);
            k_scale[u] = t < t_end ? __ldcs(ks + t) : 0.f;
            v_scale[u] = t < t_end ? __ldcs(vs + t) : 0.f;
        }
    }
};

// The last block of a head merges the splits' partial outputs by their log-sum-exp.
__device__ void merge_splits(const float* part_out, const float* part_lse, float* out, int head_dim,
                             int splits) {
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float lse_max = -INFINITY;
        for (int s = 0; s < splits; ++s) lse_max = fmaxf(lse_max, __ldcg(part_lse + s));
        float sum = 0.f, weight_sum = 0.f;
        for (int s = 0; s < splits; ++s) {
            const float w = exp2f(__ldcg(part_lse + s) - lse_max);
            weight_sum += w;
            sum += w * __ldcg(part_out + (size_t)s * head_dim + d);
        }
        out[d] = sum / weight_sum;
    }
}

// G2 lanes share one row (VEC columns each); TOKENS = 32 / G2 rows per warp-load.
template <int VEC, int G2>
__global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS)
    int8_decode_kernel(const float* __restrict__ Q, const int8_t* __restrict__ K,
                       const int8_t* __restrict__ V, const float* __restrict__ k_scale,
                       const float* __restrict__ v_scale, float* __restrict__ output,
                       float* __restrict__ part_out, float* __restrict__ part_lse,
                       unsigned* __restrict__ finished, int seq_len, int head_dim,
                       int tokens_per_split, int splits, float scale_log2) {
    constexpr int TOKENS = 32 / G2;
    const int split = blockIdx.x, head = blockIdx.y;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int slot = lane / G2;  // which row of the warp-load
    const int col = lane % G2;   // which VEC columns of that row
    const bool col_ok = col * VEC < head_dim;

    float q[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i)
        q[i] = col_ok ? Q[(size_t)head * head_dim + col * VEC + i] * scale_log2 : 0.f;

    float m = -INFINITY, l = 0.f, acc[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = 0.f;

    const size_t base = (size_t)head * seq_len;
    const int8_t* k_rows = K + base * head_dim + col * VEC;
    const int8_t* v_rows = V + base * head_dim + col * VEC;
    const float* ks = k_scale + base;
    const float* vs = v_scale + base;
    const int t_begin = split * tokens_per_split;
    const int t_end = min(seq_len, t_begin + tokens_per_split);
    constexpr int STEP = WARPS * UNROLL * TOKENS;  // tokens per block iteration

    Rows<VEC, UNROLL> next;
    int t0 = t_begin + warp * UNROLL * TOKENS;
    next.load(k_rows, v_rows, ks, vs, t0 + slot, TOKENS, t_end, col_ok, head_dim);
    for (; t0 < t_end; t0 += STEP) {
        const Rows<VEC, UNROLL> rows = next;
        if (t0 + STEP < t_end)  // the next rows load while this batch's math runs
            next.load(k_rows, v_rows, ks, vs, t0 + STEP + slot, TOKENS, t_end, col_ok, head_dim);
        // scores of the UNROLL rows first, then one rescale of the running state per batch
        float s[UNROLL];
        float batch_max = -INFINITY;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            float kf[VEC];
#pragma unroll
            for (int w = 0; w < VEC / 4; ++w) int8x4_to_float(rows.k[u][w], kf + 4 * w);
            float dot = 0.f;
#pragma unroll
            for (int i = 0; i < VEC; ++i) dot += q[i] * kf[i];
#pragma unroll
            for (int offset = G2 / 2; offset > 0; offset /= 2)
                dot += __shfl_xor_sync(0xffffffff, dot, offset);
            s[u] = t0 + u * TOKENS + slot < t_end ? dot * rows.k_scale[u] : -INFINITY;
            batch_max = fmaxf(batch_max, s[u]);
        }
        if (batch_max == -INFINITY) continue;  // this lane group is past the end
        const float m_new = fmaxf(m, batch_max);
        const float rescale = exp2f(m - m_new);
        m = m_new;
        l *= rescale;
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[i] *= rescale;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const float p = exp2f(s[u] - m_new);  // 0 for rows past the end
            l += p;
            const float weight = p * rows.v_scale[u];
            float vf[VEC];
#pragma unroll
            for (int w = 0; w < VEC / 4; ++w) int8x4_to_float(rows.v[u][w], vf + 4 * w);
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[i] += weight * vf[i];
        }
    }

    // merge the block's WARPS * TOKENS states (one per lane group) through shared memory
    constexpr int STATES = WARPS * TOKENS;
    __shared__ float s_m[STATES], s_l[STATES];
    __shared__ float s_acc[STATES][G2 * VEC];
    __shared__ bool s_last;
    const int state = warp * TOKENS + slot;
    if (col == 0) {
        s_m[state] = m;
        s_l[state] = l;
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) s_acc[state][col * VEC + i] = acc[i];
    __syncthreads();
    const size_t row = (size_t)head * splits + split;
    for (int d = threadIdx.x; d < head_dim; d += WARPS * 32) {
        float m_all = -INFINITY;
        for (int i = 0; i < STATES; ++i) m_all = fmaxf(m_all, s_m[i]);
        float l_all = 0.f, o = 0.f;
        for (int i = 0; i < STATES; ++i) {
            const float f = exp2f(s_m[i] - m_all);
            l_all += s_l[i] * f;
            o += s_acc[i][d] * f;
        }
        if (splits == 1) {  // the whole sequence: this is the answer
            output[(size_t)head * head_dim + d] = o / l_all;
            continue;
        }
        part_out[row * head_dim + d] = o / l_all;
        if (d == 0) part_lse[row] = m_all + log2f(l_all);
    }
    if (splits == 1) return;

    // the last block of this head to get here merges all of its splits
    __threadfence();  // this block's partial results are visible before the count
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(finished + head, 1u) == (unsigned)splits - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    merge_splits(part_out + (size_t)head * splits * head_dim, part_lse + (size_t)head * splits,
                 output + (size_t)head * head_dim, head_dim, splits);
    if (threadIdx.x == 0) finished[head] = 0;  // ready for the next call
}

// Scratch for the partial results and per-head counters (zeroed once: the last block of a
// head resets its counter), grown on demand and kept between calls.
static float* workspace(size_t floats, unsigned** counters, int heads) {
    static float* buffer = nullptr;
    static unsigned* finished = nullptr;
    static size_t capacity = 0;
    static int counter_capacity = 0;
    if (floats > capacity) {
        if (buffer) cudaFree(buffer);
        cudaMalloc(&buffer, floats * sizeof(float));
        capacity = floats;
    }
    if (heads > counter_capacity) {
        if (finished) cudaFree(finished);
        cudaMalloc(&finished, heads * sizeof(unsigned));
        cudaMemset(finished, 0, heads * sizeof(unsigned));
        counter_capacity = heads;
    }
    *counters = finished;
    return buffer;
}

// How many blocks of `kernel` the whole GPU runs at once: the split count aims for WAVES full
// waves.
template <typename Kernel>
static int resident_blocks(Kernel kernel) {
    int device, sms, per_sm;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, WARPS * 32, 0);
    return sms * per_sm;
}

template <int VEC, int G2>
static void launch(const float* Q, const int8_t* K, const int8_t* V, const float* k_scale,
                   const float* v_scale, float* output, int num_heads, int seq_len, int head_dim) {
    const int step = WARPS * UNROLL * (32 / G2);
    static const int resident = resident_blocks(int8_decode_kernel<VEC, G2>);
    const int wanted = max(1, WAVES * resident / num_heads);  // never a partial extra wave
    int tokens_per_split = (seq_len + wanted - 1) / wanted;
    tokens_per_split = max(step, (tokens_per_split + step - 1) / step * step);
    const int splits = (seq_len + tokens_per_split - 1) / tokens_per_split;

    const size_t rows = (size_t)num_heads * splits;
    unsigned* finished;
    float* part_out = workspace(rows * head_dim + rows, &finished, num_heads);
    float* part_lse = part_out + rows * head_dim;
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)head_dim);
    int8_decode_kernel<VEC, G2><<<dim3(splits, num_heads), WARPS * 32>>>(
        Q, K, V, k_scale, v_scale, output, part_out, part_lse, finished, seq_len, head_dim,
        tokens_per_split, splits, scale_log2);
}

// Picks the lane-group size: the fewest power-of-two lanes whose VEC columns cover a row.
template <int VEC>
static void dispatch(const float* Q, const int8_t* K, const int8_t* V, const float* k_scale,
                     const float* v_scale, float* output, int num_heads, int seq_len,
                     int head_dim) {
    const int pieces = head_dim / VEC;
    if (pieces > 16)
        launch<VEC, 32>(Q, K, V, k_scale, v_scale, output, num_heads, seq_len, head_dim);
    else if (pieces > 8)
        launch<VEC, 16>(Q, K, V, k_scale, v_scale, output, num_heads, seq_len, head_dim);
    else if (pieces > 4)
        launch<VEC, 8>(Q, K, V, k_scale, v_scale, output, num_heads, seq_len, head_dim);
    else if (pieces > 2)
        launch<VEC, 4>(Q, K, V, k_scale, v_scale, output, num_heads, seq_len, head_dim);
    else if (pieces > 1)
        launch<VEC, 2>(Q, K, V, k_scale, v_scale, output, num_heads, seq_len, head_dim);
    else
        launch<VEC, 1>(Q, K, V, k_scale, v_scale, output, num_heads, seq_len, head_dim);
}

// Q, K_int8, V_int8, k_scale, v_scale, output are device pointers
extern "C" void solve(const float* Q, const int8_t* K_int8, const int8_t* V_int8,
                      const float* k_scale, const float* v_scale, float* output, int num_heads,
                      int seq_len, int head_dim) {
    if (head_dim % 16 == 0)
        dispatch<16>(Q, K_int8, V_int8, k_scale, v_scale, output, num_heads, seq_len, head_dim);
    else
        dispatch<8>(Q, K_int8, V_int8, k_scale, v_scale, output, num_heads, seq_len, head_dim);
}
