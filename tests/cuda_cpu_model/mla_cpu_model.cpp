// The challenge-99 CUDA editorial's kernels, run on the CPU through the model in
// cuda_runtime.h: a shared library with a C function that plans the launch as the editorial's
// solve does (for a given number of resident clusters) and runs every cluster of the grid in
// turn (the wgmma kernel for DeepSeek's shape, the other kernel for the rest), and two that
// give the plan's chunks per sequence alone (the rule, and the whole plan).
//
//   g++ -std=c++17 -O2 -shared -fPIC -I tests/cuda_cpu_model -o mla_cpu_model.so
//     tests/cuda_cpu_model/mla_cpu_model.cpp
#define CUDA_CPU_MODEL
#include "../../solutions/99_mla_decode_attention/editorial.cu"
#include "cuda_runtime.h"

// Returns the number of splits the launch used, or -1 when a merge counter was left nonzero.
extern "C" int mla_cpu_model(const float* q_nope, const float* q_pe, const float* kv_c,
                             const float* k_pe, float* output, int batch_size, int num_heads,
                             int cache_len, int kv_lora_rank, int rope_dim, float softmax_scale,
                             int resident_clusters) {
    Params p = plan(q_nope, q_pe, kv_c, k_pe, output, batch_size, num_heads, cache_len,
                    kv_lora_rank, rope_dim, softmax_scale, resident_clusters);
    const size_t rows = static_cast<size_t>(batch_size) * num_heads * p.splits;
    std::vector<float> scratch(scratch_floats(p, batch_size), NAN);
    std::vector<unsigned> finished(merge_counters(p, batch_size), 0);
    p.part_out = scratch.data();
    p.part_lse = scratch.data() + rows * kv_lora_rank;
    p.finished = finished.data();
    const bool deepseek = is_deepseek_shape(kv_lora_rank, rope_dim);
    const int size = cluster_size(p), clusters = deepseek ? p.groups : 1;
    for (int batch = 0; batch < batch_size; ++batch)
        for (int split = 0; split < p.splits; ++split)
            for (int c = 0; c < clusters; ++c)
                cpu_model::launch_cluster(
                    size,
                    uint3{static_cast<unsigned>(c * size), static_cast<unsigned>(split),
                          static_cast<unsigned>(batch)},
                    block_threads(p), block_smem(p), [&p, deepseek] {
                        if (deepseek)
                            mla_wgmma_kernel(p);
                        else
                            mla_decode_kernel(p);
                    });
    for (unsigned count : finished)
        if (count != 0) return -1;
    return p.splits;
}

// The chunks per sequence the launch plan picks (split_count), for tests of the rule alone.
extern "C" int mla_split_count(int batch_size, int tiles, int resident_clusters) {
    return split_count(batch_size, tiles, resident_clusters);
}

// The chunks per sequence of the whole launch plan (the kernel's tiles, its clusters, and the
// wgmma kernel's cap on chunks), for tests of the plan without running it.
extern "C" int mla_plan_splits(int batch_size, int num_heads, int cache_len, int kv_lora_rank,
                               int rope_dim, int resident_clusters) {
    return plan(nullptr, nullptr, nullptr, nullptr, nullptr, batch_size, num_heads, cache_len,
                kv_lora_rank, rope_dim, 1.f, resident_clusters)
        .splits;
}
