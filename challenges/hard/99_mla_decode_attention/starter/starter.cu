#include <cuda_runtime.h>

// q_nope, q_pe, kv_c, k_pe, output are device pointers
extern "C" void solve(const float* q_nope, const float* q_pe, const float* kv_c, const float* k_pe,
                      float* output, int batch_size, int num_heads, int cache_len, int kv_lora_rank,
                      int rope_dim, float softmax_scale) {}
