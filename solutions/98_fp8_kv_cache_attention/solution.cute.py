"""FP8 KV-cache attention in CuTe DSL: one thread per (batch, query head, output column).

Thread d of the block for (query head h, batch b) walks every cached token of KV head
k = h // (num_q_heads / num_kv_heads). It decodes each uint8 E4M3 code from its bits (sign,
4-bit exponent with bias 7, 3-bit mantissa; exponent 0 is subnormal), computes the token's
score q . K_e4m3 * k_scale[k] / sqrt(head_dim), keeps a running maximum m, a running sum
row_sum of exp(score - m) and its own output element acc (an online softmax), and multiplies
the finished element by v_scale[k] once. Every thread of a block decodes the same keys and
computes the same scores: clear rather than fast.
"""

import math

import cutlass
import cutlass.cute as cute


@cute.jit
def e4m3_to_float(code: cutlass.Uint8) -> cutlass.Float32:
    """(-1)^s * (8 + m) * 2^e / 1024 for exponent e >= 1; (-1)^s * m / 512 for e = 0."""
    bits = code.to(cutlass.Int32)
    exponent = (bits >> 3) & 0xF
    mantissa = (bits & 0x7).to(cutlass.Float32)
    magnitude = mantissa * cutlass.Float32(1.0 / 512.0)
    if exponent != 0:
        power = (cutlass.Int32(1) << exponent).to(cutlass.Float32)
        magnitude = (mantissa + 8.0) * power * cutlass.Float32(1.0 / 1024.0)
    value = magnitude
    if bits >= 0x80:
        value = -magnitude
    return value


@cute.kernel
def attention_kernel(
    Q: cute.Tensor,  # (batch, num_q_heads, head_dim) float32
    K_fp8: cute.Tensor,  # (batch, num_kv_heads, cache_len, head_dim) uint8 E4M3 codes
    V_fp8: cute.Tensor,  # (batch, num_kv_heads, cache_len, head_dim) uint8 E4M3 codes
    k_scale: cute.Tensor,  # (num_kv_heads,) float32
    v_scale: cute.Tensor,  # (num_kv_heads,) float32
    output: cute.Tensor,  # (batch, num_q_heads, head_dim) float32
    group: cutlass.Int32,  # query heads per KV head
    cache_len: cutlass.Int32,
    head_dim: cutlass.Int32,
    scale: cutlass.Float32,  # 1 / sqrt(head_dim)
):
    d, _, _ = cute.arch.thread_idx()
    head, batch, _ = cute.arch.block_idx()
    kv_head = head // group
    if d < head_dim:
        score_scale = k_scale[kv_head] * scale
        m = cutlass.Float32(-math.inf)
        row_sum = cutlass.Float32(0.0)
        acc = cutlass.Float32(0.0)
        for t in range(cache_len):
            dot = cutlass.Float32(0.0)
            for i in range(head_dim):
                dot += Q[batch, head, i] * e4m3_to_float(K_fp8[batch, kv_head, t, i])
            score = dot * score_scale
            m_new = cute.arch.fmax(m, score)
            rescale = cute.math.exp(m - m_new)
            p = cute.math.exp(score - m_new)
            row_sum = row_sum * rescale + p
            acc = acc * rescale + p * e4m3_to_float(V_fp8[batch, kv_head, t, d])
            m = m_new
        output[batch, head, d] = acc * v_scale[kv_head] / row_sum


# Q, K_fp8, V_fp8, k_scale, v_scale, output are tensors on the GPU
@cute.jit
def solve(
    Q: cute.Tensor,
    K_fp8: cute.Tensor,
    V_fp8: cute.Tensor,
    k_scale: cute.Tensor,
    v_scale: cute.Tensor,
    output: cute.Tensor,
    batch_size: cute.Int32,
    num_q_heads: cute.Int32,
    num_kv_heads: cute.Int32,
    cache_len: cute.Int32,
    head_dim: cute.Int32,
):
    scale = cutlass.Float32(1.0) / cute.math.sqrt(cutlass.Float32(head_dim))
    group = num_q_heads // num_kv_heads
    attention_kernel(
        Q, K_fp8, V_fp8, k_scale, v_scale, output, group, cache_len, head_dim, scale
    ).launch(grid=(num_q_heads, batch_size, 1), block=(head_dim, 1, 1))
