"""INT8 KV-cache attention in CuTe DSL: one thread per (head, output column), online softmax.

Thread d of block h walks all tokens of head h: it computes each token's score (the dot product
of q with the int8 key row, times the key's scale and 1/sqrt(head_dim)), keeps a running
maximum m, a running sum row_sum of exp(score - m) and its own output element acc, and adds the
token's value V_int8[h, t, d] * v_scale[h, t] weighted by exp(score - m). Every thread of a
block computes the same scores: clear rather than fast.
"""

import math

import cutlass
import cutlass.cute as cute


@cute.kernel
def attention_kernel(
    Q: cute.Tensor,  # (num_heads, head_dim) float32
    K_int8: cute.Tensor,  # (num_heads, seq_len, head_dim) int8
    V_int8: cute.Tensor,  # (num_heads, seq_len, head_dim) int8
    k_scale: cute.Tensor,  # (num_heads, seq_len) float32: K = K_int8 * k_scale per token
    v_scale: cute.Tensor,  # (num_heads, seq_len) float32: V = V_int8 * v_scale per token
    output: cute.Tensor,  # (num_heads, head_dim) float32
    seq_len: cutlass.Int32,
    head_dim: cutlass.Int32,
    scale: cutlass.Float32,  # 1 / sqrt(head_dim)
):
    d, _, _ = cute.arch.thread_idx()
    head, _, _ = cute.arch.block_idx()
    if d < head_dim:
        m = cutlass.Float32(-math.inf)
        row_sum = cutlass.Float32(0.0)
        acc = cutlass.Float32(0.0)
        for t in range(seq_len):
            dot = cutlass.Float32(0.0)
            for i in range(head_dim):
                dot += Q[head, i] * K_int8[head, t, i].to(cutlass.Float32)
            score = dot * k_scale[head, t] * scale
            m_new = cute.arch.fmax(m, score)
            rescale = cute.math.exp(m - m_new)
            p = cute.math.exp(score - m_new)
            row_sum = row_sum * rescale + p
            value = V_int8[head, t, d].to(cutlass.Float32) * v_scale[head, t]
            acc = acc * rescale + p * value
            m = m_new
        output[head, d] = acc / row_sum


# Q, K_int8, V_int8, k_scale, v_scale, output are tensors on the GPU
@cute.jit
def solve(
    Q: cute.Tensor,
    K_int8: cute.Tensor,
    V_int8: cute.Tensor,
    k_scale: cute.Tensor,
    v_scale: cute.Tensor,
    output: cute.Tensor,
    num_heads: cute.Int32,
    seq_len: cute.Int32,
    head_dim: cute.Int32,
):
    scale = cutlass.Float32(1.0) / cute.math.sqrt(cutlass.Float32(head_dim))
    attention_kernel(Q, K_int8, V_int8, k_scale, v_scale, output, seq_len, head_dim, scale).launch(
        grid=(num_heads, 1, 1), block=(head_dim, 1, 1)
    )
