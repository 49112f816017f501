// FP8 KV-cache attention in CUDA: one block per (query head, batch), a warp per token.
//
// Every byte of the cache is an OCP FP8 E4M3 code, decoded here from its bits: sign, 4-bit
// exponent e with bias 7, 3-bit mantissa m; (1 + m/8) * 2^(e-7) for e >= 1 and m/8 * 2^-6
// for the subnormals at e = 0. The KV head's key scale is folded into the query once, and its
// value scale multiplies each finished output element once, so no cached element is scaled.
// Each of the block's warps takes every WARPS-th token: its 32 lanes split head_dim (at most
// 8 elements each), reduce the dot product with shuffles and keep an online softmax (running
// max m, running sum l, unnormalized output acc); the warps' states are merged through shared
// memory at the end. Clear rather than fast: batch_size * num_q_heads blocks, each query head
// of a GQA group re-reads its KV head, one byte per load; the editorial version adds split-KV,
// GQA packing, 16-byte loads and the GPU's own E4M3 conversion.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

constexpr int WARPS = 8;
constexpr int MAX_DIMS_PER_LANE = 8;  // head_dim <= 256 = 32 lanes * 8

__host__ __device__ float e4m3_to_float(uint8_t code) {
    const int exponent = (code >> 3) & 0xF, mantissa = code & 0x7;
    const float magnitude =
        exponent == 0 ? ldexpf((float)mantissa, -9) : ldexpf((float)(8 + mantissa), exponent - 10);
    return (code & 0x80) ? -magnitude : magnitude;
}

__device__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}

__global__ void fp8_attention_kernel(const float* Q, const uint8_t* K, const uint8_t* V,
                                     const float* k_scale, const float* v_scale, float* output,
                                     int num_q_heads, int num_kv_heads, int cache_len,
                                     int head_dim) {
    const int head = blockIdx.x, batch = blockIdx.y;
    const int kv_head = head / (num_q_heads / num_kv_heads);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* q = Q + ((size_t)batch * num_q_heads + head) * head_dim;
    const size_t kv_offset = ((size_t)batch * num_kv_heads + kv_head) * cache_len * head_dim;
    const uint8_t* k = K + kv_offset;
    const uint8_t* v = V + kv_offset;
    const float score_scale = k_scale[kv_head] / sqrtf((float)head_dim);

    float q_reg[MAX_DIMS_PER_LANE], acc[MAX_DIMS_PER_LANE];
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        q_reg[i] = d < head_dim ? q[d] * score_scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int token = warp; token < cache_len; token += WARPS) {
        const uint8_t* k_row = k + (size_t)token * head_dim;
        const uint8_t* v_row = v + (size_t)token * head_dim;
        float score = 0.0f;
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) score += q_reg[i] * e4m3_to_float(k_row[d]);
        }
        score = warp_sum(score);
        const float m_new = fmaxf(m, score);
        const float correction = expf(m - m_new);
        const float p = expf(score - m_new);
        l = l * correction + p;
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            acc[i] = acc[i] * correction + (d < head_dim ? p * e4m3_to_float(v_row[d]) : 0.0f);
        }
        m = m_new;
    }

    __shared__ float warp_m[WARPS], warp_l[WARPS], warp_acc[WARPS][32 * MAX_DIMS_PER_LANE];
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
    }
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) warp_acc[warp][lane + 32 * i] = acc[i];
    __syncthreads();

    float m_all = -INFINITY;
    for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, warp_m[w]);
    float l_all = 0.0f;
    for (int w = 0; w < WARPS; ++w) l_all += warp_l[w] * expf(warp_m[w] - m_all);
    const float out_scale = v_scale[kv_head] / l_all;  // the value scale, once per output
    float* out = output + ((size_t)batch * num_q_heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.0f;
        for (int w = 0; w < WARPS; ++w) sum += warp_acc[w][d] * expf(warp_m[w] - m_all);
        out[d] = sum * out_scale;
    }
}

// Q, K_fp8, V_fp8, k_scale, v_scale, output are device pointers
extern "C" void solve(const float* Q, const uint8_t* K_fp8, const uint8_t* V_fp8,
                      const float* k_scale, const float* v_scale, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int cache_len, int head_dim) {
    dim3 grid(num_q_heads, batch_size);
    fp8_attention_kernel<<<grid, WARPS * 32>>>(Q, K_fp8, V_fp8, k_scale, v_scale, output,
                                               num_q_heads, num_kv_heads, cache_len, head_dim);
}
