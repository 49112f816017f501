#include <cuda_runtime.h>

// Q, K_fp8, V_fp8, k_scale, v_scale, output are device pointers
extern "C" void solve(const float* Q, const unsigned char* K_fp8, const unsigned char* V_fp8,
                      const float* k_scale, const float* v_scale, float* output, int batch_size,
                      int num_q_heads, int num_kv_heads, int cache_len, int head_dim) {}
