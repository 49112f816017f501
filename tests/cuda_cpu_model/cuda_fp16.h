// The part of cuda_fp16.h that the challenge-98 CUDA editorial uses, for the CPU model (see
// cuda_runtime.h): a __half2 is two float16 bit patterns, the first in the low 16 bits.
#pragma once

#include "cuda_runtime.h"

struct alignas(4) __half2 {
    uint16_t x, y;
};

inline __half2 __floats2half2_rn(float low, float high) {
    return __half2{f16_bits(low), f16_bits(high)};
}
inline float __low2float(__half2 h) { return f16_value(h.x); }
inline float __high2float(__half2 h) { return f16_value(h.y); }
