// Decode-phase attention in CUDA: one block per (query head, batch), a warp per token.
//
// Each of the block's warps takes every WARPS-th token of the KV head: its 32 lanes split the
// head_dim elements (at most 8 each), reduce the dot product with shuffles, and keep an online
// softmax (running max m, running sum l, unnormalized output acc). At the end the warps' partial
// states are merged through shared memory: out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M).
// Clear rather than fast: batch_size * num_q_heads blocks, and a GQA group's query heads each
// re-read their KV head; the editorial version adds split-KV, GQA packing and 16-byte loads.
#include <cuda_runtime.h>
#include <math.h>

constexpr int WARPS = 8;
constexpr int MAX_DIMS_PER_LANE = 8;  // head_dim <= 256 = 32 lanes * 8

__device__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}

__global__ void decode_attention_kernel(const float* Q, const float* K, const float* V,
                                        float* output, int num_q_heads, int num_kv_heads,
                                        int cache_len, int head_dim, float scale) {
    const int head = blockIdx.x, batch = blockIdx.y;
    const int kv_head = head / (num_q_heads / num_kv_heads);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* q = Q + ((size_t)batch * num_q_heads + head) * head_dim;
    const size_t kv_offset = ((size_t)batch * num_kv_heads + kv_head) * cache_len * head_dim;
    const float* k = K + kv_offset;
    const float* v = V + kv_offset;

    float q_reg[MAX_DIMS_PER_LANE], acc[MAX_DIMS_PER_LANE];
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        q_reg[i] = d < head_dim ? q[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int token = warp; token < cache_len; token += WARPS) {
        const float* k_row = k + (size_t)token * head_dim;
        const float* v_row = v + (size_t)token * head_dim;
        float score = 0.0f;
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) score += q_reg[i] * k_row[d];
        }
        score = warp_sum(score);
        const float m_new = fmaxf(m, score);
        const float correction = expf(m - m_new);
        const float p = expf(score - m_new);
        l = l * correction + p;
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            acc[i] = acc[i] * correction + (d < head_dim ? p * v_row[d] : 0.0f);
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
    float* out = output + ((size_t)batch * num_q_heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.0f;
        for (int w = 0; w < WARPS; ++w) sum += warp_acc[w][d] * expf(warp_m[w] - m_all);
        out[d] = sum / l_all;
    }
}

// Q, K, V, output are device pointers
extern "C" void solve(const float* Q, const float* K, const float* V, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int cache_len, int head_dim) {
    dim3 grid(num_q_heads, batch_size);
    decode_attention_kernel<<<grid, WARPS * 32>>>(Q, K, V, output, num_q_heads, num_kv_heads,
                                                  cache_len, head_dim, 1.0f / sqrtf(head_dim));
}
