// Paged KV-cache decode attention in CUDA: one block per (query head, sequence), a warp per
// token.
//
// Token t of sequence b is slot t % block_size of block block_table[b][t / block_size], so
// its row of KV head k starts at ((block * block_size + slot) * num_kv_heads + k) * head_dim.
// Each of the block's warps takes every WARPS-th token below seq_lens[b] (so a -1 table entry
// is never followed and a stale slot never attended): its 32 lanes split the head_dim elements
// (at most 8 each), reduce the dot product with shuffles, and keep an online softmax (running
// max m, running sum l, unnormalized output acc). At the end the warps' partial states are
// merged through shared memory: out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M).
// Clear rather than fast: a block's work is as long as its sequence (the longest one sets the
// time), a GQA group's query heads each re-read their KV head, and every token waits for its
// table entry; the editorial version balances the work, packs GQA heads and loads float4s.
#include <cuda_runtime.h>
#include <math.h>

constexpr int WARPS = 8;
constexpr int MAX_DIMS_PER_LANE = 8;  // head_dim <= 256 = 32 lanes * 8

__device__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}

__global__ void paged_attention_kernel(const float* Q, const float* K_cache, const float* V_cache,
                                       const int* block_table, const int* seq_lens, float* output,
                                       int num_q_heads, int num_kv_heads, int head_dim,
                                       int block_size, int max_blocks_per_seq, float scale) {
    const int head = blockIdx.x, batch = blockIdx.y;
    const int kv_head = head / (num_q_heads / num_kv_heads);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int seq_len = seq_lens[batch];
    const int* table = block_table + (size_t)batch * max_blocks_per_seq;
    const float* q = Q + ((size_t)batch * num_q_heads + head) * head_dim;

    float q_reg[MAX_DIMS_PER_LANE], acc[MAX_DIMS_PER_LANE];
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        q_reg[i] = d < head_dim ? q[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int token = warp; token < seq_len; token += WARPS) {
        const int block = table[token / block_size];
        const size_t row =
            ((size_t)block * block_size + token % block_size) * num_kv_heads + kv_head;
        const float* k_row = K_cache + row * head_dim;
        const float* v_row = V_cache + row * head_dim;
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

    // a warp that saw no token (seq_len < WARPS) has m = -inf: its weight e^(m - M) is 0
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

// Q, K_cache, V_cache, block_table, seq_lens, output are device pointers
extern "C" void solve(const float* Q, const float* K_cache, const float* V_cache,
                      const int* block_table, const int* seq_lens, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                      int max_blocks_per_seq, int num_blocks) {
    dim3 grid(num_q_heads, batch_size);
    paged_attention_kernel<<<grid, WARPS * 32>>>(Q, K_cache, V_cache, block_table, seq_lens, output,
                                                 num_q_heads, num_kv_heads, head_dim, block_size,
                                                 max_blocks_per_seq, 1.0f / sqrtf((float)head_dim));
}
