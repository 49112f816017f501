#include <cuda_runtime.h>

// Q, K_cache, V_cache, block_table, seq_lens, output are device pointers
extern "C" void solve(const float* Q, const float* K_cache, const float* V_cache,
                      const int* block_table, const int* seq_lens, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int head_dim, int block_size,
                      int max_blocks_per_seq, int num_blocks) {}
