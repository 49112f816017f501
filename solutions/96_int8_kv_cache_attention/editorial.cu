// INT8 KV-cache attention at the memory-bandwidth limit: split-KV (flash-decoding), scales
// folded into scores and weights, and an exact int8-to-float conversion at full rate.
//
// The floor. At the performance shape (32 heads, 8,192 tokens, head_dim 128) K_int8 and V_int8
// are 2 * 32 * 8192 * 128 B = 67.1 MB and the scales 2.1 MB: ~17 us at ~4.1 TB/s of streaming
// read (H200), ~23 us at ~3.0 TB/s (H100).
//
// 1. Split-KV. 32 heads are 32 blocks, a quarter of the SMs, so each head's tokens are cut into
//    chunks: as many blocks as the GPU holds at once (one full wave, from the occupancy API). Each
//    block writes a normalized partial output and its log-sum-exp (base 2); a second kernel merges
//    them.
// 2. Lane groups. Each lane loads 16 int8 of a row in one instruction (8 when head_dim is not
//    a multiple of 16); G2 lanes (a power of two) cover a row, so a warp handles 32 / G2 tokens
//    per load and reduces their dot products together with log2(G2) shuffles. UNROLL loads of
//    K and V are in flight before any math, and the online softmax rescales once per UNROLL.
// 3. Scales per token, not per element: score = (q . k_int8) * k_scale * log2(e) / sqrt(d) and
//    the softmax weight p becomes p * v_scale before it multiplies the int8 values of V.
// 4. int8 -> float without I2F (a quarter-rate instruction that would cap the kernel below the
//    bandwidth limit): flip the sign bit (x ^ 0x80 = x + 128, as an unsigned byte), place the
//    byte in the mantissa of 2^23 with one byte permute (0x4B0000bb), and subtract 2^23 + 128.
//    The result is exact for all 256 values.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

constexpr int WARPS = 8;   // warps per block
constexpr int UNROLL = 4;  // warp-loads of K and V in flight before the math

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

// G2 lanes share one row (VEC columns each); TOKENS = 32 / G2 rows per warp-load.
template <int VEC, int G2>
__global__ void __launch_bounds__(WARPS * 32)
    split_int8_attention_kernel(const float* __restrict__ Q, const int8_t* __restrict__ K,
                                const int8_t* __restrict__ V, const float* __restrict__ k_scale,
                                const float* __restrict__ v_scale, float* __restrict__ part_out,
                                float* __restrict__ part_lse, int seq_len, int head_dim,
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

    for (int t0 = t_begin + warp * UNROLL * TOKENS; t0 < t_end; t0 += STEP) {
        uint32_t k[UNROLL][VEC / 4], v[UNROLL][VEC / 4];
        float ksc[UNROLL], vsc[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int t = t0 + u * TOKENS + slot;
            const bool ok = t < t_end && col_ok;
            load_int8<VEC>(k_rows + (size_t)t * head_dim, ok, k[u]);
            load_int8<VEC>(v_rows + (size_t)t * head_dim, ok, v[u]);
            ksc[u] = t < t_end ? __ldcs(ks + t) : 0.f;
            vsc[u] = t < t_end ? __ldcs(vs + t) : 0.f;
        }
        // scores of the UNROLL rows first, then one rescale of the running state per batch
        float s[UNROLL];
        float batch_max = -INFINITY;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            float kf[VEC];
#pragma unroll
            for (int w = 0; w < VEC / 4; ++w) int8x4_to_float(k[u][w], kf + 4 * w);
            float dot = 0.f;
#pragma unroll
            for (int i = 0; i < VEC; ++i) dot += q[i] * kf[i];
#pragma unroll
            for (int offset = G2 / 2; offset > 0; offset /= 2)
                dot += __shfl_xor_sync(0xffffffff, dot, offset);
            s[u] = t0 + u * TOKENS + slot < t_end ? dot * ksc[u] : -INFINITY;
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
            const float weight = p * vsc[u];
            float vf[VEC];
#pragma unroll
            for (int w = 0; w < VEC / 4; ++w) int8x4_to_float(v[u][w], vf + 4 * w);
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[i] += weight * vf[i];
        }
    }

    // merge the block's WARPS * TOKENS states (one per lane group) through shared memory
    constexpr int STATES = WARPS * TOKENS;
    __shared__ float s_m[STATES], s_l[STATES];
    __shared__ float s_acc[STATES][G2 * VEC];
    const int state = warp * TOKENS + slot;
    if (col == 0) {
        s_m[state] = m;
        s_l[state] = l;
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) s_acc[state][col * VEC + i] = acc[i];
    __syncthreads();
    for (int d = threadIdx.x; d < head_dim; d += WARPS * 32) {
        float m_all = -INFINITY;
        for (int i = 0; i < STATES; ++i) m_all = fmaxf(m_all, s_m[i]);
        float l_all = 0.f, o = 0.f;
        for (int i = 0; i < STATES; ++i) {
            const float f = exp2f(s_m[i] - m_all);
            l_all += s_l[i] * f;
            o += s_acc[i][d] * f;
        }
        const size_t row = (size_t)head * splits + split;
        part_out[row * head_dim + d] = o / l_all;
        if (d == 0) part_lse[row] = m_all + log2f(l_all);
    }
}

// One block per head: merge the splits' partial outputs by their log-sum-exp.
__global__ void merge_splits_kernel(const float* __restrict__ part_out,
                                    const float* __restrict__ part_lse, float* __restrict__ output,
                                    int head_dim, int splits) {
    const size_t row0 = (size_t)blockIdx.x * splits;
    float lse_max = -INFINITY;
    for (int s = 0; s < splits; ++s) lse_max = fmaxf(lse_max, part_lse[row0 + s]);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.f, weight_sum = 0.f;
        for (int s = 0; s < splits; ++s) {
            const float w = exp2f(part_lse[row0 + s] - lse_max);
            weight_sum += w;
            sum += w * part_out[(row0 + s) * head_dim + d];
        }
        output[(size_t)blockIdx.x * head_dim + d] = sum / weight_sum;
    }
}

// Scratch for the partial results, grown on demand and kept between calls.
static float* workspace(size_t floats) {
    static float* buffer = nullptr;
    static size_t capacity = 0;
    if (floats > capacity) {
        if (buffer) cudaFree(buffer);
        cudaMalloc(&buffer, floats * sizeof(float));
        capacity = floats;
    }
    return buffer;
}

// How many blocks of `kernel` the whole GPU runs at once: the split count aims for one full wave.
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
    static const int resident = resident_blocks(split_int8_attention_kernel<VEC, G2>);
    const int wanted = (resident + num_heads - 1) / num_heads;
    int tokens_per_split = (seq_len + wanted - 1) / wanted;
    tokens_per_split = max(step, (tokens_per_split + step - 1) / step * step);
    const int splits = (seq_len + tokens_per_split - 1) / tokens_per_split;

    const size_t rows = (size_t)num_heads * splits;
    float* part_out = workspace(rows * head_dim + rows);
    float* part_lse = part_out + rows * head_dim;
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)head_dim);
    split_int8_attention_kernel<VEC, G2><<<dim3(splits, num_heads), WARPS * 32>>>(
        Q, K, V, k_scale, v_scale, part_out, part_lse, seq_len, head_dim, tokens_per_split, splits,
        scale_log2);
    merge_splits_kernel<<<num_heads, 128>>>(part_out, part_lse, output, head_dim, splits);
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
