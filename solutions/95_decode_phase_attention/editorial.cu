// Decode-phase attention at the memory-bandwidth limit: split-KV (flash-decoding) in one
// kernel, with GQA packing, float4 streaming loads and an exp2 online softmax.
//
// The floor. At the performance shape (batch 4, 8 KV heads, 16,384 tokens, head_dim 128, fp32)
// K and V are 4 * 8 * 16384 * 128 * 4 B * 2 = 536.9 MB; Q and the output are 0.13 MB. Every
// byte must come from HBM once: at ~4.1 TB/s of streaming read (H200) that is ~130 us, at
// ~3.0 TB/s (H100) ~175 us. Arithmetic is ~2 FLOP per byte, far below the compute roofline.
//
// 1. GQA packing. A block serves HEADS query heads of one KV head, so each K/V row it loads is
//    used HEADS times from registers instead of being re-read per query head.
// 2. Split-KV. batch * kv_heads = 32 (KV head, batch) pairs cannot fill 132 SMs, so the cache
//    is cut into `splits` chunks of tokens; the grid is (splits, kv_heads * head_groups, batch)
//    and fills exactly one wave of resident blocks (from the occupancy API: a few blocks of a
//    second wave would add a whole block's time). Each block writes its chunk's normalized
//    partial output and its log-sum-exp; the last block of a (batch, head group) to finish,
//    counted with an atomic, merges the chunks: out = sum_s 2^(lse_s - L) * O_s with
//    L = log2(sum_s 2^lse_s). One kernel: no second launch, and no idle gap while the host
//    launches it.
// 3. Loads. A warp reads one 512-byte row per instruction (a float4 per lane, cache-streaming
//    hint: the data is used once), UNROLL rows for K and V before any math: 4 KB per warp,
//    32 KB per block of 8 warps, more than the ~25 KB per SM that HBM latency needs in flight.
// 4. Online softmax in base 2. q is pre-multiplied by log2(e) / sqrt(head_dim), so scores are
//    already in the exp2 domain: one exp2 per weight and one per rescale.
#include <cuda_runtime.h>
#include <math.h>

constexpr int WARPS = 8;       // warps per block: rows of a chunk go round-robin to warps
constexpr int WAVES = 1;       // blocks per resident block slot of the GPU
constexpr int UNROLL_128 = 4;  // rows in flight per warp when head_dim <= 128 (2 above)
constexpr int MIN_BLOCKS = 1;  // resident blocks per SM the register allocation must allow

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffff, x, offset);
    return x;
}

__device__ __forceinline__ float dot4(float4 a, float4 b) {
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ __forceinline__ float4 axpby4(float4 acc, float scale, float p, float4 v) {
    return make_float4(acc.x * scale + p * v.x, acc.y * scale + p * v.y, acc.z * scale + p * v.z,
                       acc.w * scale + p * v.w);
}

// One block: query heads [h0, h0 + HEADS) of kv_head, tokens [t_begin, t_end) of one batch.
// CHUNKS float4s per lane cover head_dim <= 128 * CHUNKS; UNROLL rows per warp are in flight.
template <int HEADS, int CHUNKS, int UNROLL>
__global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS)
    decode_attention_kernel(const float* __restrict__ Q, const float* __restrict__ K,
                            const float* __restrict__ V, float* __restrict__ output,
                            float* __restrict__ part_out, float* __restrict__ part_lse,
                            unsigned* __restrict__ finished, int num_q_heads, int num_kv_heads,
                            int cache_len, int head_dim, int group, int head_groups,
                            int tokens_per_split, int splits, float scale_log2) {
    const int split = blockIdx.x;
    const int kv_head = blockIdx.y / head_groups;
    const int h0 = kv_head * group + (blockIdx.y % head_groups) * HEADS;
    const int heads_here = min(HEADS, kv_head * group + group - h0);
    const int batch = blockIdx.z;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int vec_per_row = head_dim / 4;

    float4 q[HEADS][CHUNKS];
#pragma unroll
    for (int h = 0; h < HEADS; ++h)
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) {
            const int v = lane + 32 * c;
            float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
            if (h < heads_here && v < vec_per_row)
                x = reinterpret_cast<const float4*>(Q + ((size_t)batch * num_q_heads + h0 + h) *
                                                            head_dim)[v];
            q[h][c] =
                make_float4(x.x * scale_log2, x.y * scale_log2, x.z * scale_log2, x.w * scale_log2);
        }

    float m[HEADS], l[HEADS];
    float4 acc[HEADS][CHUNKS];
#pragma unroll
    for (int h = 0; h < HEADS; ++h) {
        m[h] = -INFINITY;
        l[h] = 0.f;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) acc[h][c] = make_float4(0.f, 0.f, 0.f, 0.f);
    }

    const size_t kv_offset = ((size_t)batch * num_kv_heads + kv_head) * cache_len * head_dim;
    const float4* k_rows = reinterpret_cast<const float4*>(K + kv_offset);
    const float4* v_rows = reinterpret_cast<const float4*>(V + kv_offset);
    const int t_begin = split * tokens_per_split;
    const int t_end = min(cache_len, t_begin + tokens_per_split);

    for (int t0 = t_begin + warp * UNROLL; t0 < t_end; t0 += WARPS * UNROLL) {
        float4 k[UNROLL][CHUNKS], v[UNROLL][CHUNKS];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)
#pragma unroll
            for (int c = 0; c < CHUNKS; ++c) {
                const int col = lane + 32 * c;
                const bool ok = t0 + u < t_end && col < vec_per_row;
                const size_t at = (size_t)(t0 + u) * vec_per_row + col;
                k[u][c] = ok ? __ldcs(k_rows + at) : make_float4(0.f, 0.f, 0.f, 0.f);
                v[u][c] = ok ? __ldcs(v_rows + at) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            if (t0 + u >= t_end) break;
#pragma unroll
            for (int h = 0; h < HEADS; ++h) {
                float s = 0.f;
#pragma unroll
                for (int c = 0; c < CHUNKS; ++c) s += dot4(q[h][c], k[u][c]);
                s = warp_sum(s);
                const float m_new = fmaxf(m[h], s);
                const float rescale = exp2f(m[h] - m_new);
                const float p = exp2f(s - m_new);
                l[h] = l[h] * rescale + p;
                m[h] = m_new;
#pragma unroll
                for (int c = 0; c < CHUNKS; ++c) acc[h][c] = axpby4(acc[h][c], rescale, p, v[u][c]);
            }
        }
    }

    // merge the warps' states for this chunk through shared memory
    __shared__ float s_m[WARPS][HEADS], s_l[WARPS][HEADS];
    __shared__ float4 s_acc[WARPS][HEADS][32 * CHUNKS];
#pragma unroll
    for (int h = 0; h < HEADS; ++h) {
        if (lane == 0) {
            s_m[warp][h] = m[h];
            s_l[warp][h] = l[h];
        }
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) s_acc[warp][h][lane + 32 * c] = acc[h][c];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < heads_here * vec_per_row; i += WARPS * 32) {
        const int h = i / vec_per_row, col = i % vec_per_row;
        float m_all = -INFINITY;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, s_m[w][h]);
        float l_all = 0.f;
        float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
        if (m_all != -INFINITY) {
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                const float f = exp2f(s_m[w][h] - m_all);
                l_all += s_l[w][h] * f;
                o = axpby4(o, 1.f, f, s_acc[w][h][col]);
            }
            const float inv = 1.f / l_all;
            o = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
        }
        const size_t q_row = (size_t)batch * num_q_heads + h0 + h;
        if (splits == 1) {  // the whole cache: this is the answer
            reinterpret_cast<float4*>(output + q_row * head_dim)[col] = o;
            continue;
        }
        const size_t row = q_row * splits + split;
        reinterpret_cast<float4*>(part_out + row * head_dim)[col] = o;
        if (col == 0) part_lse[row] = m_all == -INFINITY ? -INFINITY : m_all + log2f(l_all);
    }
    if (splits == 1) return;

    // the last block of this (batch, head group) to get here merges all of its splits
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
        float lse_max = -INFINITY;
        for (int s = 0; s < splits; ++s) lse_max = fmaxf(lse_max, __ldcg(lse + s));
        float sum = 0.f, weight_sum = 0.f;
        for (int s = 0; s < splits; ++s) {
            const float w = exp2f(__ldcg(lse + s) - lse_max);
            weight_sum += w;
            sum += w * __ldcg(part_out + (q_row * splits + s) * head_dim + d);
        }
        output[q_row * head_dim + d] = sum / weight_sum;
    }
    if (threadIdx.x == 0) finished[group_id] = 0;  // ready for the next call
}

// Scratch for the partial results and one counter per (batch, head group) (zeroed once: the
// last block of a group resets its counter), grown on demand and kept between calls.
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

// How many blocks of `kernel` the whole GPU runs at once.
template <typename Kernel>
static int resident_blocks(Kernel kernel) {
    int device, sms, per_sm;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, WARPS * 32, 0);
    return sms * per_sm;
}

template <int HEADS, int CHUNKS>
static void launch(const float* Q, const float* K, const float* V, float* output, int batch_size,
                   int num_q_heads, int num_kv_heads, int cache_len, int head_dim) {
    constexpr int UNROLL = CHUNKS == 1 ? UNROLL_128 : 2;
    const int group = num_q_heads / num_kv_heads;
    const int head_groups = (group + HEADS - 1) / HEADS;
    const int base_blocks = batch_size * num_kv_heads * head_groups;
    // as many splits as fill WAVES full waves of resident blocks, never a partial extra wave
    static const int resident = resident_blocks(decode_attention_kernel<HEADS, CHUNKS, UNROLL>);
    const int wanted = max(1, WAVES * resident / base_blocks);
    const int step = WARPS * UNROLL;  // tokens one block iteration covers
    int tokens_per_split = (cache_len + wanted - 1) / wanted;
    tokens_per_split = max(step, (tokens_per_split + step - 1) / step * step);
    const int splits = (cache_len + tokens_per_split - 1) / tokens_per_split;

    const size_t rows = (size_t)batch_size * num_q_heads * splits;
    unsigned* finished;
    float* part_out = workspace(rows * head_dim + rows, &finished, base_blocks);
    float* part_lse = part_out + rows * head_dim;
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)head_dim);

    dim3 grid(splits, num_kv_heads * head_groups, batch_size);
    decode_attention_kernel<HEADS, CHUNKS, UNROLL><<<grid, WARPS * 32>>>(
        Q, K, V, output, part_out, part_lse, finished, num_q_heads, num_kv_heads, cache_len,
        head_dim, group, head_groups, tokens_per_split, splits, scale_log2);
}

template <int CHUNKS>
static void dispatch_heads(const float* Q, const float* K, const float* V, float* output,
                           int batch_size, int num_q_heads, int num_kv_heads, int cache_len,
                           int head_dim) {
    const int group = num_q_heads / num_kv_heads;
    if (group >= 8)
        launch<8, CHUNKS>(Q, K, V, output, batch_size, num_q_heads, num_kv_heads, cache_len,
                          head_dim);
    else if (group >= 4)
        launch<4, CHUNKS>(Q, K, V, output, batch_size, num_q_heads, num_kv_heads, cache_len,
                          head_dim);
    else if (group >= 2)
        launch<2, CHUNKS>(Q, K, V, output, batch_size, num_q_heads, num_kv_heads, cache_len,
                          head_dim);
    else
        launch<1, CHUNKS>(Q, K, V, output, batch_size, num_q_heads, num_kv_heads, cache_len,
                          head_dim);
}

// Q, K, V, output are device pointers
extern "C" void solve(const float* Q, const float* K, const float* V, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int cache_len, int head_dim) {
    if (head_dim <= 128)
        dispatch_heads<1>(Q, K, V, output, batch_size, num_q_heads, num_kv_heads, cache_len,
                          head_dim);
    else
        dispatch_heads<2>(Q, K, V, output, batch_size, num_q_heads, num_kv_heads, cache_len,
                          head_dim);
}
