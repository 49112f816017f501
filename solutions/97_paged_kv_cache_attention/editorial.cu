// Paged KV-cache decode attention at the memory-bandwidth limit: split-KV balanced over the
// ragged work (every warp gets the same number of blocks of tokens), GQA packing, float4 loads
// along head_dim within a block, one kernel.
//
// The floor. At the performance shape (32 sequences of 256 to 16,384 tokens, 131,072 in all;
// 8 KV heads, head_dim 128, fp32) the attended K and V rows are 131072 * 8 * 128 * 4 B * 2 =
// 1073.7 MB; Q, the output and the tables add 1.2 MB. Each attended byte must come from HBM
// once: ~237 us at the ~4.5 TB/s of streaming read measured on an H200, ~350 us at ~3.0 TB/s
// (H100). Arithmetic is ~2 FLOP per byte, far below the compute roofline.
//
// 1. Balance. One block per (sequence, KV head) would make the GPU wait for the longest
//    sequence, 16,384 tokens against 4,096 on average. Instead the work is a list of units,
//    one per (sequence, segment, tile of UNROLL tokens) in that order, where a segment is a KV
//    head (and a tile of HEADS of its query heads), and every warp of the grid (one full wave
//    of resident blocks, from the occupancy API) takes the same number of consecutive units.
//    Tiles, not pages, as units: at the performance shape 65,536 pages over 2,112 warps is
//    32 pages (512 tokens) for the busiest warp and none for the last 64 (4 SMs idle);
//    262,144 tiles is 125 tiles (500 tokens). On an H200 89.8% -> 90.5% of the read floor
//    (scripts/tune.py, one run: within the spread).
//    A warp's range crosses whole or partial segments; it walks each with an online softmax
//    and leaves one partial result per segment it touched. Every warp derives the schedule
//    from seq_lens itself (at most 64 numbers, two per lane: a warp scan), so there is no host
//    round trip and no second kernel, and warps need no barrier: a warp is the unit of work.
// 2. Merging. Warp w's partial for segment s goes to slot w + s: along the unit list w and s
//    never both stay the same, so w + s never repeats, and the slots of a segment are
//    consecutive. A segment that one warp covers goes straight to the output; otherwise every
//    warp bumps the segment's atomic counter after storing its partial (log-sum-exp in base
//    2 and the normalized output), and the last one merges the slots:
//    out = sum_i 2^(lse_i - L) O_i / sum_i 2^(lse_i - L), then resets the counter.
// 3. GQA packing. A warp holds HEADS query heads of its KV head in registers (q pre-scaled by
//    log2(e) / sqrt(head_dim), so scores are in the exp2 domain), so each K/V row it loads
//    serves all of them.
// 4. Loads, through shared memory. Row t of a block for one KV head is head_dim contiguous
//    floats (NHD layout). A tile is UNROLL rows of K and UNROLL of V of one block (UNROLL
//    divides block_size); each warp keeps a ring of STAGES tiles in shared memory, filled by
//    the bulk-copy engine (cp.async.bulk, sm_90+: one instruction per row, issued by 2 * UNROLL
//    lanes at once) and awaited on the stage's mbarrier. 16 warps per SM with two 4 KB tiles
//    each keep 128 KB per SM in flight, with no registers held for it. The block number of a
//    tile comes from a register: lane i holds the block number of page window + i, refilled
//    every 32 pages, and a shuffle hands it to the warp, so no dependent table load waits in
//    front of a row. Measured on an H200 (performance test, scripts/tune.py, % of the read
//    floor): the same math with UNROLL rows loaded into registers and no tile ahead 75.8%; two
//    register tiles, 12 warps per SM 81.1%; the bulk-copy ring 82.1%; with 5 below 88-90%.
//    Three stages (192 KB per SM in flight) measured 75%.
// 5. Scores for a whole tile at once. The HEADS * UNROLL dot products of a tile are summed
//    over the warp together (warp_sum_scatter: halving exchanges, 16 shuffles for 16 sums
//    instead of 80), which leaves lane i with one score; the softmax then takes one exp2 per
//    lane, shuffles hand each lane the weights, and the running maximum of a head moves (and
//    its accumulators are rescaled) only in tiles that raise it. Tiles with rows past the end
//    of the range, or rows shorter than the lanes' float4s, take a masked copy of the code.
#include <cuda_runtime.h>
#include <math.h>

#include <type_traits>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#error "this kernel copies the cache with cp.async.bulk, which needs sm_90 (Hopper) or newer"
#endif

constexpr int WARPS = 8;   // warps per block; each warp is a worker of its own
constexpr int UNROLL = 4;  // rows of K (and of V) per tile
constexpr int STAGES = 2;  // tiles in each warp's ring
constexpr unsigned FULL = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(FULL, x, offset);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(FULL, x, offset));
    return x;
}

__host__ __device__ constexpr int log2_of(int n) { return n <= 1 ? 0 : 1 + log2_of(n / 2); }

// One halving step of warp_sum_scatter: each lane trades HALF of its 2 HALF values with the
// lane `o` away and keeps the sums of the other HALF (the upper ones where its bit o is set).
template <int N, int HALF>
__device__ __forceinline__ void scatter_step(float (&x)[N], int lane) {
    constexpr int o = 16 >> (log2_of(N) - log2_of(2 * HALF));
    // a bitwise blend, not ?:, which nvcc may turn into a dynamically indexed local array
    const unsigned upper = lane & o ? 0xffffffffu : 0u;
#pragma unroll
    for (int i = 0; i < HALF; ++i) {
        const unsigned lo = __float_as_uint(x[i]), hi = __float_as_uint(x[i + HALF]);
        const float keep = __uint_as_float((lo & ~upper) | (hi & upper));
        const float send = __uint_as_float((hi & ~upper) | (lo & upper));
        x[i] = keep + __shfl_xor_sync(FULL, send, o);
    }
    if constexpr (HALF > 1) scatter_step<N, HALF / 2>(x, lane);
}

// Sums N values (a power of two <= 32) over the warp at once: halving steps (scatter_step),
// then whole-warp sums over the lane bits left, so that lane i ends with the warp sum of value
// i >> (5 - log2 N), in N - 1 + 5 - log2 N shuffles instead of 5 N.
template <int N>
__device__ __forceinline__ float warp_sum_scatter(float (&x)[N], int lane) {
    if constexpr (N > 1) scatter_step<N, N / 2>(x, lane);
    float sum = x[0];
#pragma unroll
    for (int o = 16 >> log2_of(N); o > 0; o /= 2) sum += __shfl_xor_sync(FULL, sum, o);
    return sum;
}

__device__ __forceinline__ int warp_inclusive_scan(int x, int lane) {
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
        const int y = __shfl_up_sync(FULL, x, offset);
        if (lane >= offset) x += y;
    }
    return x;
}

// The value of sequence b (uniform over the warp) from the pair (lane b, lane b - 32).
__device__ __forceinline__ int pick(int lo, int hi, int b) {
    const int from_lo = __shfl_sync(FULL, lo, b & 31);
    const int from_hi = __shfl_sync(FULL, hi, b & 31);
    return b < 32 ? from_lo : from_hi;
}

__device__ __forceinline__ float dot4(float4 a, float4 b) {
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ __forceinline__ float4 axpby4(float4 acc, float scale, float p, float4 v) {
    return make_float4(acc.x * scale + p * v.x, acc.y * scale + p * v.y, acc.z * scale + p * v.z,
                       acc.w * scale + p * v.w);
}

__device__ __forceinline__ float4 scale4(float4 a, float s) {
    return make_float4(a.x * s, a.y * s, a.z * s, a.w * s);
}

// The bulk-copy engine's side of a warp's ring (sm_90+), on shared-memory addresses: an
// mbarrier per stage, counting one arrival (with the bytes to expect) and the bytes copied.
__device__ __forceinline__ void barrier_init(unsigned bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar) : "memory");
}

__device__ __forceinline__ void barrier_expect(unsigned bar, int bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
                 : "memory");
}

// the initialized barriers are visible to the copy engine
__device__ __forceinline__ void barriers_ready() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// this thread's reads of shared memory are ordered before later bulk copies into it
__device__ __forceinline__ void shared_reads_done() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// blocks until phase `parity` (0, 1, 0, ...) of the barrier has completed
__device__ __forceinline__ void barrier_wait(unsigned bar, unsigned parity) {
    asm volatile(
        "{\n .reg .pred done;\n wait:\n"
        " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        " @!done bra wait;\n}" ::"r"(bar),
        "r"(parity)
        : "memory");
}

// bytes (a multiple of 16) from global src to shared dst, both 16-byte aligned; their arrival
// counts towards the barrier. The lines are marked evict-first in L2, since every byte is used
// once; on an H200 that measured within the run-to-run spread (88.1-89.9% of the read floor
// with it, 88.2-89.0% without, scripts/tune.py).
__device__ __forceinline__ void bulk_copy(unsigned dst, const void* src, int bytes, unsigned bar) {
    asm volatile(
        "{\n .reg .b64 policy;\n"
        " createpolicy.fractional.L2::evict_first.b64 policy, 1.0;\n"
        " cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
        " [%0], [%1], %2, [%3], policy;\n}" ::"r"(dst),
        "l"(src), "r"(bytes), "r"(bar)
        : "memory");
}

// The last warp of a segment merges its `count` partial results (slots first_slot ...):
// out = sum_i 2^(lse_i - L) O_i / sum_i 2^(lse_i - L), with L the largest lse. Lane i weighs
// slot i of each batch of 32; the warp then adds ROUND slots per step, every head's row of
// each, so 8 float4 loads are in flight at once: the merges run at the kernel's tail, where
// a merge of 33 slots (the longest sequence at the performance shape) one load at a time
// would take 4 * 33 L2 round trips, over 10 us; this takes 17.
template <int HEADS, int CHUNKS>
__device__ __forceinline__ void merge_slots(const float* __restrict__ part_out,
                                            const float* __restrict__ part_lse,
                                            float* __restrict__ output, size_t first_slot,
                                            int count, size_t q_row, int heads_here, int head_dim,
                                            int lane) {
    constexpr int ROUND = HEADS * CHUNKS >= 8 ? 1 : 8 / (HEADS * CHUNKS);  // divides 32
    const int vec_per_row = head_dim / 4;
    float lse_max[HEADS], weight_sum[HEADS];
    float4 merged[HEADS][CHUNKS];
#pragma unroll
    for (int h = 0; h < HEADS; ++h) {
        lse_max[h] = -INFINITY;
        weight_sum[h] = 0.f;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) merged[h][c] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    for (int i = lane; i < count; i += 32)
#pragma unroll
        for (int h = 0; h < HEADS; ++h)
            if (h < heads_here)
                lse_max[h] = fmaxf(lse_max[h], __ldcg(part_lse + (first_slot + i) * HEADS + h));
#pragma unroll
    for (int h = 0; h < HEADS; ++h) lse_max[h] = warp_max(lse_max[h]);

    for (int base = 0; base < count; base += 32) {
        const int n = min(32, count - base);
        float weight[HEADS];  // lane i: the weight of slot base + i (0 past the slots)
#pragma unroll
        for (int h = 0; h < HEADS; ++h) {
            const size_t at = (first_slot + base + lane) * HEADS + h;
            weight[h] =
                lane < n && h < heads_here ? exp2f(__ldcg(part_lse + at) - lse_max[h]) : 0.f;
            weight_sum[h] += warp_sum(weight[h]);
        }
        for (int j = 0; j < n; j += ROUND) {
            float4 rows[ROUND][HEADS][CHUNKS];
#pragma unroll
            for (int u = 0; u < ROUND; ++u)
#pragma unroll
                for (int h = 0; h < HEADS; ++h)
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c) {
                        const int col = lane + 32 * c;
                        const size_t row = (first_slot + base + j + u) * HEADS + h;
                        const bool ok = j + u < n && h < heads_here && col < vec_per_row;
                        rows[u][h][c] =
                            ok ? __ldcg(reinterpret_cast<const float4*>(part_out + row * head_dim) +
                                        col)
                               : make_float4(0.f, 0.f, 0.f, 0.f);
                    }
#pragma unroll
            for (int u = 0; u < ROUND; ++u)
#pragma unroll
                for (int h = 0; h < HEADS; ++h) {
                    const float w = __shfl_sync(FULL, weight[h], j + u);  // j + u < 32
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c)
                        merged[h][c] = axpby4(merged[h][c], 1.f, w, rows[u][h][c]);
                }
        }
    }
#pragma unroll
    for (int h = 0; h < HEADS; ++h)
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) {
            const int col = lane + 32 * c;
            if (h < heads_here && col < vec_per_row)
                reinterpret_cast<float4*>(output + (q_row + h) * head_dim)[col] =
                    scale4(merged[h][c], 1.f / weight_sum[h]);
        }
}

// One warp per worker. HEADS query heads of a KV head per segment; CHUNKS float4s per lane
// cover head_dim <= 128 * CHUNKS; STAGES tiles of UNROLL rows of K and V are in flight per warp.
template <int HEADS, int CHUNKS, int MIN_BLOCKS>
__global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS)
    paged_decode_kernel(const float* __restrict__ Q, const float* __restrict__ K_cache,
                        const float* __restrict__ V_cache, const int* __restrict__ block_table,
                        const int* __restrict__ seq_lens, float* __restrict__ output,
                        float* __restrict__ part_out, float* __restrict__ part_lse,
                        unsigned* __restrict__ finished, int batch_size, int num_q_heads,
                        int num_kv_heads, int head_dim, int block_size, int max_blocks_per_seq,
                        int group, int head_groups, float scale_log2) {
    const int lane = threadIdx.x % 32;
    const int worker = blockIdx.x * WARPS + threadIdx.x / 32;
    const int workers = gridDim.x * WARPS;
    const int segments = num_kv_heads * head_groups;  // per sequence
    const int vec_per_row = head_dim / 4;
    const size_t row_stride = (size_t)num_kv_heads * head_dim;  // floats from slot to slot
    const int page_shift = __ffs(block_size) - 1;               // block_size is a power of two

    // The schedule. Lane i keeps sequence i in *_lo and sequence i + 32 in *_hi; ends_* are
    // one past each sequence's last unit. Sequences past the batch have no units, so their
    // ends equal the total and never count as ending at or before a position inside it.
    const int len_lo = lane < batch_size ? seq_lens[lane] : 0;
    const int len_hi = lane + 32 < batch_size ? seq_lens[lane + 32] : 0;
    const int tiles_lo = (len_lo + UNROLL - 1) / UNROLL;
    const int tiles_hi = (len_hi + UNROLL - 1) / UNROLL;
    const int ends_lo = warp_inclusive_scan(tiles_lo * segments, lane);
    const int ends_hi =
        warp_inclusive_scan(tiles_hi * segments, lane) + __shfl_sync(FULL, ends_lo, 31);
    const int total = __shfl_sync(FULL, ends_hi, 31);
    const int per = (total + workers - 1) / workers;  // units per warp
    const int begin = min(worker * per, total);
    const int end = min(begin + per, total);

    // this warp's ring of STAGES tiles in shared memory and its mbarriers (one arrival, the
    // expect_tx of lane 0, per phase)
    extern __shared__ float4 smem_rings[];
    __shared__ alignas(8) unsigned long long stage_bars[WARPS][STAGES];
    const int row_bytes = head_dim * 4;
    const bool full_rows = vec_per_row == 32 * CHUNKS;  // every lane has a float4 per chunk
    const float4* ring_ptr =
        smem_rings + (size_t)(threadIdx.x / 32) * STAGES * 2 * UNROLL * vec_per_row;
    const unsigned ring = (unsigned)__cvta_generic_to_shared(ring_ptr);
    const unsigned bars = (unsigned)__cvta_generic_to_shared(&stage_bars[threadIdx.x / 32][0]);
    if (lane < STAGES) barrier_init(bars + 8u * lane);
    barriers_ready();
    __syncwarp();
    int tile_base = 0;  // tiles this warp has taken so far

    for (int pos = begin; pos < end;) {
        // the segment that holds unit `pos`, and the tiles [u0, u1) of it this warp takes
        const int b = __popc(__ballot_sync(FULL, ends_lo <= pos)) +
                      __popc(__ballot_sync(FULL, ends_hi <= pos));
        const int seq_len = pick(len_lo, len_hi, b);
        const int seq_tiles = pick(tiles_lo, tiles_hi, b);
        const int seq_start = pick(ends_lo, ends_hi, b) - seq_tiles * segments;
        const int seg = (pos - seq_start) / seq_tiles;
        const int seg_start = seq_start + seg * seq_tiles;
        const int u0 = pos - seg_start;
        const int u1 = min(seq_tiles, u0 + (end - pos));
        const int s = b * segments + seg;
        const int kv_head = seg / head_groups;
        const int h0 = (seg % head_groups) * HEADS;
        const int heads_here = min(HEADS, group - h0);
        const size_t q_row = (size_t)b * num_q_heads + kv_head * group + h0;

        float4 q[HEADS][CHUNKS], acc[HEADS][CHUNKS];
        float m[HEADS], l[HEADS];
#pragma unroll
        for (int h = 0; h < HEADS; ++h) {
            m[h] = -INFINITY;
            l[h] = 0.f;
#pragma unroll
            for (int c = 0; c < CHUNKS; ++c) {
                const int col = lane + 32 * c;
                float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
                if (h < heads_here && col < vec_per_row)
                    x = reinterpret_cast<const float4*>(Q + (q_row + h) * head_dim)[col];
                q[h][c] = scale4(x, scale_log2);
                acc[h][c] = make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }

        // tokens [t0, t1), in pages [page0, page1): whole tiles, except that the last tile of
        // the sequence stops at seq_len; tile i is rows t0 + UNROLL * i ..., all in one page.
        // Lane j holds the block number of page window + j; only the loads move the window.
        const int* table = block_table + (size_t)b * max_blocks_per_seq;
        const int t0 = u0 * UNROLL;
        const int t1 = min(seq_len, u1 * UNROLL);
        const int page0 = t0 >> page_shift, page1 = ((t1 - 1) >> page_shift) + 1;
        const int tiles = (t1 - t0 + UNROLL - 1) / UNROLL;
        int window = page0;
        int my_block = window + lane < page1 ? table[window + lane] : 0;

        // Tile n of the warp (counted over all its segments) goes to stage n % STAGES of the
        // warp's ring in shared memory: UNROLL rows of K, then UNROLL of V, head_dim floats
        // each, copied by the bulk-copy engine (one cp.async.bulk per row, lanes in parallel)
        // and awaited on the stage's mbarrier, whose phase n / STAGES completes with it.
        const auto issue = [&](int i) {
            const int t = t0 + i * UNROLL;
            if (t >= t1) return;  // uniform: past the range, nothing to copy
            const int page = t >> page_shift;
            if (page - window >= 32) {
                window += (page - window) & ~31;
                my_block = window + lane < page1 ? table[window + lane] : 0;
            }
            const int block = __shfl_sync(FULL, my_block, page - window);
            const int rows = min(UNROLL, t1 - t);
            const int stage = (tile_base + i) % STAGES;
            const unsigned bar = bars + 8u * stage;
            if (lane == 0) barrier_expect(bar, 2 * rows * row_bytes);
            if (lane < 2 * UNROLL && lane % UNROLL < rows) {
                const int u = lane % UNROLL;
                const float* cache = lane < UNROLL ? K_cache : V_cache;
                const float* src =
                    cache + ((size_t)block * block_size + (t & (block_size - 1)) + u) * row_stride +
                    (size_t)kv_head * head_dim;
                const unsigned dst = ring + (unsigned)((stage * 2 * UNROLL + lane) * row_bytes);
                bulk_copy(dst, src, row_bytes, bar);
            }
        };

        // the online softmax of every head over tile i, once its stage has landed
        const auto attend = [&](int i, auto masked) {
            constexpr bool MASKED = decltype(masked)::value;  // rows past t1 or short rows
            const int t = t0 + i * UNROLL;
            const int n = tile_base + i;
            const int stage = n % STAGES;
            const unsigned bar = bars + 8u * stage;
            barrier_wait(bar, (n / STAGES) & 1);
            const float4* rows = ring_ptr + (size_t)stage * 2 * UNROLL * vec_per_row;
            // row u of K (part = 0) or V (part = 1) of the stage; zeros where MASKED says
            const auto row = [&](int part, int u, int c) {
                const int col = lane + 32 * c;
                if (MASKED && !(t + u < t1 && col < vec_per_row))
                    return make_float4(0.f, 0.f, 0.f, 0.f);
                return rows[(part * UNROLL + u) * vec_per_row + col];
            };
            float4 k[UNROLL][CHUNKS];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u)
#pragma unroll
                for (int c = 0; c < CHUNKS; ++c) k[u][c] = row(0, u, c);
            // the HEADS * UNROLL dot products, summed over the warp at once: lane i ends
            // with the score of pair j = i >> SHIFT (head j / UNROLL, row j % UNROLL)
            constexpr int PAIRS = HEADS * UNROLL;
            constexpr int SHIFT = 5 - log2_of(PAIRS);
            float part[PAIRS];
#pragma unroll
            for (int h = 0; h < HEADS; ++h)
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) {
                    float x = 0.f;
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c) x += dot4(q[h][c], k[u][c]);
                    part[h * UNROLL + u] = x;
                }
            const int j = lane >> SHIFT;
            const int my_h = j / UNROLL;
            float s = warp_sum_scatter<PAIRS>(part, lane);
            if (MASKED) s = t + j % UNROLL < t1 ? s : -INFINITY;
            float4 v[UNROLL][CHUNKS];  // read once the keys are done with
#pragma unroll
            for (int u = 0; u < UNROLL; ++u)
#pragma unroll
                for (int c = 0; c < CHUNKS; ++c) v[u][c] = row(1, u, c);
            float top = s;  // the tile's max for head my_h, then the running max
#pragma unroll
            for (int o = 1 << SHIFT; o < (UNROLL << SHIFT); o *= 2)
                top = fmaxf(top, __shfl_xor_sync(FULL, top, o));
            float m_mine = m[0];
#pragma unroll
            for (int h = 1; h < HEADS; ++h) m_mine = my_h == h ? m[h] : m_mine;
            top = fmaxf(top, m_mine);
            const float p_mine = exp2f(s - top);
#pragma unroll
            for (int h = 0; h < HEADS; ++h) {
                const float top_h = __shfl_sync(FULL, top, (h * UNROLL) << SHIFT);
                if (top_h > m[h]) {  // uniform: the running max moves
                    const float rescale = exp2f(m[h] - top_h);
                    l[h] *= rescale;
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c) acc[h][c] = scale4(acc[h][c], rescale);
                    m[h] = top_h;
                }
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) {
                    const float p = __shfl_sync(FULL, p_mine, (h * UNROLL + u) << SHIFT);
                    l[h] += p;
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c) acc[h][c] = axpby4(acc[h][c], 1.f, p, v[u][c]);
                }
            }
            // every lane's reads of the stage are ordered before the copies that refill it:
            // each lane's proxy fence, then the warp's barrier, then the issuing lanes' copies
            shared_reads_done();
            __syncwarp();
        };

#pragma unroll
        for (int j = 0; j < STAGES; ++j) issue(j);
        for (int i = 0; i < tiles; ++i) {
            if (full_rows && t0 + (i + 1) * UNROLL <= t1)
                attend(i, std::false_type{});
            else
                attend(i, std::true_type{});
            issue(i + STAGES);
        }
        tile_base += tiles;

        // the warps whose ranges meet this segment: first_worker ... last_worker
        const int first_worker = seg_start / per;
        const int last_worker = (seg_start + seq_tiles - 1) / per;
        if (first_worker == last_worker) {  // this warp saw the whole segment
#pragma unroll
            for (int h = 0; h < HEADS; ++h)
#pragma unroll
                for (int c = 0; c < CHUNKS; ++c) {
                    const int col = lane + 32 * c;
                    if (h < heads_here && col < vec_per_row)
                        reinterpret_cast<float4*>(output + (q_row + h) * head_dim)[col] =
                            scale4(acc[h][c], 1.f / l[h]);
                }
        } else {
            const size_t slot = (size_t)worker + s;
#pragma unroll
            for (int h = 0; h < HEADS; ++h) {
                if (h >= heads_here) break;
#pragma unroll
                for (int c = 0; c < CHUNKS; ++c) {
                    const int col = lane + 32 * c;
                    if (col < vec_per_row)
                        reinterpret_cast<float4*>(part_out + (slot * HEADS + h) * head_dim)[col] =
                            scale4(acc[h][c], 1.f / l[h]);
                }
                if (lane == 0) part_lse[slot * HEADS + h] = m[h] + log2f(l[h]);
            }
            __threadfence();  // this warp's partial is visible before the count says so
            __syncwarp();
            unsigned done = 0;
            if (lane == 0) done = atomicAdd(finished + s, 1u);
            done = __shfl_sync(FULL, done, 0);
            if (done == (unsigned)(last_worker - first_worker)) {  // the last one merges
                __threadfence();
                merge_slots<HEADS, CHUNKS>(part_out, part_lse, output, (size_t)first_worker + s,
                                           last_worker - first_worker + 1, q_row, heads_here,
                                           head_dim, lane);
                if (lane == 0) finished[s] = 0;  // ready for the next call
            }
        }
        pos += u1 - u0;
    }
}

// Scratch for the partial results and one counter per segment (zeroed once: the merging warp
// resets its counter), grown on demand and kept between calls.
static float* workspace(size_t floats, unsigned** counters, size_t segments) {
    static float* buffer = nullptr;
    static unsigned* finished = nullptr;
    static size_t capacity = 0, counter_capacity = 0;
    if (floats > capacity) {
        if (buffer) cudaFree(buffer);
        cudaMalloc(&buffer, floats * sizeof(float));
        capacity = floats;
    }
    if (segments > counter_capacity) {
        if (finished) cudaFree(finished);
        cudaMalloc(&finished, segments * sizeof(unsigned));
        cudaMemset(finished, 0, segments * sizeof(unsigned));
        counter_capacity = segments;
    }
    *counters = finished;
    return buffer;
}

// How many blocks of `kernel` (with `smem` bytes of dynamic shared memory) the whole GPU runs
// at once: one wave.
template <typename Kernel>
static int resident_blocks(Kernel kernel, size_t smem) {
    int device, sms, per_sm;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, WARPS * 32, smem);
    return sms * (per_sm > 0 ? per_sm : 1);
}

template <int HEADS, int CHUNKS>
static void launch(const float* Q, const float* K_cache, const float* V_cache,
                   const int* block_table, const int* seq_lens, float* output, int batch_size,
                   int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                   int max_blocks_per_seq) {
    // UNROLL rows share a block (UNROLL = 4 divides block_size >= 8). Up to 4 heads of head_dim
    // <= 128, q, acc, a tile's rows and its scores fit 128 registers: two blocks (16 warps, two
    // 64 KB rings) per SM. More heads or columns take more registers and one block per SM.
    constexpr int MIN_BLOCKS = HEADS * CHUNKS <= 4 && CHUNKS == 1 ? 2 : 1;
    const auto kernel = paged_decode_kernel<HEADS, CHUNKS, MIN_BLOCKS>;
    const size_t smem = (size_t)WARPS * STAGES * 2 * UNROLL * head_dim * sizeof(float);
    static int known_dim = 0, blocks = 0;  // the rings (and so the wave) depend on head_dim
    if (head_dim != known_dim) {
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
        blocks = resident_blocks(kernel, smem);
        known_dim = head_dim;
    }
    const int group = num_q_heads / num_kv_heads;
    const int head_groups = (group + HEADS - 1) / HEADS;
    const size_t segments = (size_t)batch_size * num_kv_heads * head_groups;
    const size_t slots = (size_t)blocks * WARPS + segments;  // w + s < workers + segments
    unsigned* finished;
    float* part_out = workspace(slots * HEADS * (head_dim + 1), &finished, segments);
    float* part_lse = part_out + slots * HEADS * head_dim;
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)head_dim);
    kernel<<<blocks, WARPS * 32, smem>>>(Q, K_cache, V_cache, block_table, seq_lens, output,
                                         part_out, part_lse, finished, batch_size, num_q_heads,
                                         num_kv_heads, head_dim, block_size, max_blocks_per_seq,
                                         group, head_groups, scale_log2);
}

// HEADS: the group size rounded up to a power of two, so one segment holds a whole group, up
// to 8 heads (4 when head_dim > 128: the registers of q and acc grow with both).
template <int CHUNKS>
static void dispatch_heads(const float* Q, const float* K_cache, const float* V_cache,
                           const int* block_table, const int* seq_lens, float* output,
                           int batch_size, int num_q_heads, int num_kv_heads, int head_dim,
                           int block_size, int max_blocks_per_seq) {
    const int group = num_q_heads / num_kv_heads;
    if constexpr (CHUNKS == 1) {
        if (group > 4) {
            launch<8, 1>(Q, K_cache, V_cache, block_table, seq_lens, output, batch_size,
                         num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq);
            return;
        }
    }
    if (group > 2)
        launch<4, CHUNKS>(Q, K_cache, V_cache, block_table, seq_lens, output, batch_size,
                          num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq);
    else if (group == 2)
        launch<2, CHUNKS>(Q, K_cache, V_cache, block_table, seq_lens, output, batch_size,
                          num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq);
    else
        launch<1, CHUNKS>(Q, K_cache, V_cache, block_table, seq_lens, output, batch_size,
                          num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq);
}

// Q, K_cache, V_cache, block_table, seq_lens, output are device pointers
extern "C" void solve(const float* Q, const float* K_cache, const float* V_cache,
                      const int* block_table, const int* seq_lens, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                      int max_blocks_per_seq, int num_blocks) {
    if (head_dim <= 128)
        dispatch_heads<1>(Q, K_cache, V_cache, block_table, seq_lens, output, batch_size,
                          num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq);
    else
        dispatch_heads<2>(Q, K_cache, V_cache, block_table, seq_lens, output, batch_size,
                          num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq);
}
