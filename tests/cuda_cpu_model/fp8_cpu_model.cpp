// The challenge-98 CUDA editorial's kernel, run on the CPU through the model in cuda_runtime.h:
// a shared library with a C function that plans the launch as the editorial's solve does (for
// a given number of resident blocks) and runs every block of the grid in turn.
//
//   g++ -std=c++17 -O2 -shared -fPIC -I tests/cuda_cpu_model -o fp8_cpu_model.so
//     tests/cuda_cpu_model/fp8_cpu_model.cpp
#define CUDA_CPU_MODEL
#include "../../solutions/98_fp8_kv_cache_attention/editorial.cu"
#include "cuda_runtime.h"

// Q (batch, q_heads, head_dim) float32, K_fp8 and V_fp8 (batch, kv_heads, cache_len, head_dim)
// E4M3 codes, k_scale and v_scale (kv_heads,), output (batch, q_heads, head_dim). Returns the
// number of splits the launch used, or -1 when a merge counter was left nonzero.
extern "C" int fp8_cpu_model(const float* Q, const uint8_t* K_fp8, const uint8_t* V_fp8,
                             const float* k_scale, const float* v_scale, float* output,
                             int batch_size, int num_q_heads, int num_kv_heads, int cache_len,
                             int head_dim, int resident_blocks) {
    int result = -1;
    with_kernel_shape(num_q_heads / num_kv_heads, head_dim, [&](auto shape) {
        using S = decltype(shape);
        constexpr int WARPS = warps_per_block(S::VC);
        const Plan p = plan_launch(batch_size, num_q_heads, num_kv_heads, cache_len, S::NT, WARPS,
                                   resident_blocks);
        const size_t rows = static_cast<size_t>(batch_size) * num_q_heads * p.splits;
        std::vector<float> scratch(rows * head_dim + rows, NAN);
        std::vector<unsigned> finished(
            static_cast<size_t>(batch_size) * num_kv_heads * p.head_groups, 0);
        const unsigned head_blocks = static_cast<unsigned>(num_kv_heads * p.head_groups);
        cpu_model::rt().grid_dim =
            uint3{static_cast<unsigned>(p.splits), head_blocks, static_cast<unsigned>(batch_size)};
        for (unsigned z = 0; z < static_cast<unsigned>(batch_size); ++z)
            for (unsigned y = 0; y < head_blocks; ++y)
                for (unsigned x = 0; x < static_cast<unsigned>(p.splits); ++x)
                    cpu_model::launch_cluster(
                        1, uint3{x, y, z}, WARPS * 32, Smem<S::KC, S::VC>::BYTES, [&] {
                            fp8_decode_kernel<S::KC, S::VC, S::NT, S::VEC16, 1>(
                                Q, K_fp8, V_fp8, k_scale, v_scale, output, scratch.data(),
                                scratch.data() + rows * head_dim, finished.data(), num_q_heads,
                                num_kv_heads, cache_len, head_dim, p.group, p.head_groups,
                                p.tokens_per_split, p.splits);
                        });
        bool counters_reset = true;
        for (unsigned count : finished) counters_reset = counters_reset && count == 0;
        result = counters_reset ? p.splits : -1;
    });
    return result;
}

// The splits of the editorial's launch plan, for tests of the plan without running it.
extern "C" int fp8_plan_splits(int batch_size, int num_q_heads, int num_kv_heads, int cache_len,
                               int head_dim, int resident_blocks) {
    int splits = 0;
    with_kernel_shape(num_q_heads / num_kv_heads, head_dim, [&](auto shape) {
        using S = decltype(shape);
        splits = plan_launch(batch_size, num_q_heads, num_kv_heads, cache_len, S::NT,
                             warps_per_block(S::VC), resident_blocks)
                     .splits;
    });
    return splits;
}
