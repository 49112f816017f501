// The part of cuda_fp8.h that the challenge-98 CUDA editorial uses, for the CPU model (see
// cuda_runtime.h): the exact conversion of two OCP E4M3 codes to float16.
#pragma once

#include "cuda_fp16.h"

enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 };

struct __half2_raw {
    unsigned short x, y;
};

// one E4M3 code: sign, 4 exponent bits (bias 7), 3 mantissa bits; 0x7F and 0xFF are NaN
inline uint16_t e4m3_to_f16_bits(unsigned code) {
    const unsigned exponent = (code >> 3) & 0xF, mantissa = code & 7;
    if (exponent == 0xF && mantissa == 7) return static_cast<uint16_t>(0x7E00 | (code & 0x80) << 8);
    const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                          : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
    return f16_bits(code & 0x80 ? -magnitude : magnitude);  // exact: float16 holds every one
}

// the low byte -> x, the high byte -> y
inline __half2_raw __nv_cvt_fp8x2_to_halfraw2(unsigned short codes,
                                              __nv_fp8_interpretation_t kind) {
    if (kind != __NV_E4M3) cpu_model::fail("only E4M3 is modelled");
    return __half2_raw{e4m3_to_f16_bits(codes & 0xFF), e4m3_to_f16_bits(codes >> 8)};
}
