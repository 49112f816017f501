// MLA decode (weight-absorbed) in CUDA: one block per (head, batch), a warp per cached token.
//
// Each of the block's warps takes every WARPS-th token of the sequence: its 32 lanes split the
// latent row kv_c[b, t] (at most 16 elements each) and the rotary key k_pe[b, t] (at most 2),
// reduce the score q_nope . kv_c + q_pe . k_pe with shuffles, and keep an online softmax
// (running max m, running sum l, unnormalized output acc) whose values are the same latent row.
// At the end the warps' partial states are merged through shared memory:
// out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M).
// Clear rather than fast: every head re-reads the cache all heads of its sequence share, on
// CUDA cores; the editorial version loads each tile once for all heads and uses tensor cores.
#include <cuda_runtime.h>
#include <math.h>

constexpr int WARPS = 8;
constexpr int MAX_RANK_PER_LANE = 16;  // kv_lora_rank <= 512 = 32 lanes * 16
constexpr int MAX_ROPE_PER_LANE = 2;   // rope_dim <= 64 = 32 lanes * 2

__device__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}

__global__ void mla_decode_kernel(const float* q_nope, const float* q_pe, const float* kv_c,
                                  const float* k_pe, float* output, int num_heads, int cache_len,
                                  int kv_lora_rank, int rope_dim, float softmax_scale) {
    const int head = blockIdx.x, batch = blockIdx.y;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t q_row = (size_t)batch * num_heads + head;
    const float* qn = q_nope + q_row * kv_lora_rank;
    const float* qp = q_pe + q_row * rope_dim;
    const float* latent = kv_c + (size_t)batch * cache_len * kv_lora_rank;
    const float* rotary = k_pe + (size_t)batch * cache_len * rope_dim;

    float qn_reg[MAX_RANK_PER_LANE], qp_reg[MAX_ROPE_PER_LANE], acc[MAX_RANK_PER_LANE];
    for (int i = 0; i < MAX_RANK_PER_LANE; ++i) {
        const int r = lane + 32 * i;
        qn_reg[i] = r < kv_lora_rank ? qn[r] * softmax_scale : 0.0f;
        acc[i] = 0.0f;
    }
    for (int i = 0; i < MAX_ROPE_PER_LANE; ++i) {
        const int p = lane + 32 * i;
        qp_reg[i] = p < rope_dim ? qp[p] * softmax_scale : 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int token = warp; token < cache_len; token += WARPS) {
        const float* c_row = latent + (size_t)token * kv_lora_rank;
        const float* pe_row = rotary + (size_t)token * rope_dim;
        float c[MAX_RANK_PER_LANE];
        float score = 0.0f;
        for (int i = 0; i < MAX_RANK_PER_LANE; ++i) {
            const int r = lane + 32 * i;
            c[i] = r < kv_lora_rank ? c_row[r] : 0.0f;
            score += qn_reg[i] * c[i];
        }
        for (int i = 0; i < MAX_ROPE_PER_LANE; ++i) {
            const int p = lane + 32 * i;
            if (p < rope_dim) score += qp_reg[i] * pe_row[p];
        }
        score = warp_sum(score);
        const float m_new = fmaxf(m, score);
        const float correction = expf(m - m_new);
        const float weight = expf(score - m_new);
        l = l * correction + weight;
        for (int i = 0; i < MAX_RANK_PER_LANE; ++i) acc[i] = acc[i] * correction + weight * c[i];
        m = m_new;
    }

    __shared__ float warp_m[WARPS], warp_l[WARPS], warp_acc[WARPS][32 * MAX_RANK_PER_LANE];
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
    }
    for (int i = 0; i < MAX_RANK_PER_LANE; ++i) warp_acc[warp][lane + 32 * i] = acc[i];
    __syncthreads();

    float m_all = -INFINITY;
    for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, warp_m[w]);
    float l_all = 0.0f;  // warps without tokens have m = -inf and add nothing
    for (int w = 0; w < WARPS; ++w)
        if (warp_m[w] != -INFINITY) l_all += warp_l[w] * expf(warp_m[w] - m_all);
    float* out = output + q_row * kv_lora_rank;
    for (int r = threadIdx.x; r < kv_lora_rank; r += blockDim.x) {
        float sum = 0.0f;
        for (int w = 0; w < WARPS; ++w)
            if (warp_m[w] != -INFINITY) sum += warp_acc[w][r] * expf(warp_m[w] - m_all);
        out[r] = sum / l_all;
    }
}

// q_nope, q_pe, kv_c, k_pe, output are device pointers
extern "C" void solve(const float* q_nope, const float* q_pe, const float* kv_c, const float* k_pe,
                      float* output, int batch_size, int num_heads, int cache_len, int kv_lora_rank,
                      int rope_dim, float softmax_scale) {
    dim3 grid(num_heads, batch_size);
    mla_decode_kernel<<<grid, WARPS * 32>>>(q_nope, q_pe, kv_c, k_pe, output, num_heads, cache_len,
                                            kv_lora_rank, rope_dim, softmax_scale);
}
