// INT8 KV-cache attention in CUDA: one block per head, a warp per token, scales folded in.
//
// Each warp takes every WARPS-th token; its lanes split head_dim (at most 8 elements each),
// widen the int8 values to float, and reduce the dot product with shuffles. The token's key
// scale multiplies the finished score and its value scale multiplies the softmax weight, so no
// element is dequantized on its own. Warps keep an online softmax (running max m, sum l,
// unnormalized acc) and merge through shared memory at the end.
// Clear rather than fast: num_heads blocks cannot fill a GPU; the editorial version splits
// the sequence (split-KV) and loads 16 int8 values per instruction.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

constexpr int WARPS = 8;
constexpr int MAX_DIMS_PER_LANE = 8;  // head_dim <= 256 = 32 lanes * 8

__device__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}

__global__ void int8_attention_kernel(const float* Q, const int8_t* K, const int8_t* V,
                                      const float* k_scale, const float* v_scale, float* output,
                                      int seq_len, int head_dim, float scale) {
    const int head = blockIdx.x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* q = Q + (size_t)head * head_dim;
    const int8_t* k = K + (size_t)head * seq_len * head_dim;
    const int8_t* v = V + (size_t)head * seq_len * head_dim;
    const float* ks = k_scale + (size_t)head * seq_len;
    const float* vs = v_scale + (size_t)head * seq_len;

    float q_reg[MAX_DIMS_PER_LANE], acc[MAX_DIMS_PER_LANE];
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        q_reg[i] = d < head_dim ? q[d] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int token = warp; token < seq_len; token += WARPS) {
        const int8_t* k_row = k + (size_t)token * head_dim;
        const int8_t* v_row = v + (size_t)token * head_dim;
        float dot = 0.0f;
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) dot += q_reg[i] * (float)k_row[d];
        }
        const float score = warp_sum(dot) * ks[token] * scale;
        const float m_new = fmaxf(m, score);
        const float correction = expf(m - m_new);
        const float p = expf(score - m_new);
        const float weight = p * vs[token];
        l = l * correction + p;
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            acc[i] = acc[i] * correction + (d < head_dim ? weight * (float)v_row[d] : 0.0f);
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
    float* out = output + (size_t)head * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.0f;
        for (int w = 0; w < WARPS; ++w) sum += warp_acc[w][d] * expf(warp_m[w] - m_all);
        out[d] = sum / l_all;
    }
}

// Q, K_int8, V_int8, k_scale, v_scale, output are device pointers
extern "C" void solve(const float* Q, const int8_t* K_int8, const int8_t* V_int8,
                      const float* k_scale, const float* v_scale, float* output, int num_heads,
                      int seq_len, int head_dim) {
    int8_attention_kernel<<<num_heads, WARPS * 32>>>(Q, K_int8, V_int8, k_scale, v_scale, output,
                                                     seq_len, head_dim, 1.0f / sqrtf(head_dim));
}
