#include <cuda_runtime.h>

// Q, K, V, output are device pointers
extern "C" void solve(const float* Q, const float* K, const float* V, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int cache_len, int head_dim) {}
