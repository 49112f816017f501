// A read-only kernel for the bandwidth floor (judge/floor.py): every byte of `input` is read
// once with 16-byte loads, by one wave of blocks (as many as are resident on all SMs at once),
// each thread keeping READ_UNROLL independent loads in flight. Each block writes the sum of
// what it read to output[blockIdx.x], so no load can be optimized away and the caller can
// check that every element was read. Built and called like a CUDA submission:
//   solve(const float* input, float* output, int n)  with n a multiple of 4 and output of
//   at least MAX_BLOCKS floats.
#include <cuda_runtime.h>

#define READ_THREADS 256
#define READ_UNROLL 4
#define MAX_BLOCKS 65536

__global__ void __launch_bounds__(READ_THREADS)
    read_all(const float4* __restrict__ input, long long count, float* __restrict__ output) {
    const long long stride = (long long)gridDim.x * READ_THREADS;
    long long i = (long long)blockIdx.x * READ_THREADS + threadIdx.x;
    float sum = 0.0f;
    for (; i + (READ_UNROLL - 1) * stride < count; i += READ_UNROLL * stride) {
        float4 v[READ_UNROLL];
#pragma unroll
        for (int u = 0; u < READ_UNROLL; ++u) v[u] = __ldcs(input + i + u * stride);
#pragma unroll
        for (int u = 0; u < READ_UNROLL; ++u) sum += (v[u].x + v[u].y) + (v[u].z + v[u].w);
    }
    for (; i < count; i += stride) {
        const float4 v = __ldcs(input + i);
        sum += (v.x + v.y) + (v.z + v.w);
    }
    __shared__ float warp_sums[READ_THREADS / 32];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float block_sum = 0.0f;
        for (int w = 0; w < READ_THREADS / 32; ++w) block_sum += warp_sums[w];
        output[blockIdx.x] = block_sum;
    }
}

extern "C" void solve(const float* input, float* output, int n) {
    static int blocks = 0;
    if (blocks == 0) {
        int device = 0, sms = 0, per_sm = 0;
        cudaGetDevice(&device);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, read_all, READ_THREADS, 0);
        blocks = sms * (per_sm > 0 ? per_sm : 1);
        if (blocks > MAX_BLOCKS) blocks = MAX_BLOCKS;
    }
    read_all<<<blocks, READ_THREADS>>>(reinterpret_cast<const float4*>(input), n / 4, output);
}
