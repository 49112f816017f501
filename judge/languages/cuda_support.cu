// Linked into every CUDA submission's library, so that the judge reads errors from the same
// CUDA runtime instance the submission's kernels were launched with.
#include <cuda_runtime.h>

// Synchronizes the device and returns the first error of the call: an asynchronous fault
// (illegal address, trap) or a launch error (bad configuration, too many resources).
extern "C" int judge_cuda_check(char* message, int capacity) {
    cudaError_t sync_error = cudaDeviceSynchronize();
    cudaError_t launch_error = cudaGetLastError();
    cudaError_t error = sync_error != cudaSuccess ? sync_error : launch_error;
    if (error != cudaSuccess && capacity > 0) {
        const char* text = cudaGetErrorString(error);
        int i = 0;
        for (; i < capacity - 1 && text[i] != '\0'; ++i) message[i] = text[i];
        message[i] = '\0';
    }
    return static_cast<int>(error);
}
