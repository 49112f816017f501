"""Decode-phase attention in CuTe DSL: one thread per (batch, query head, output column).

Thread d of the block for (query head h, batch b) walks every cached token of KV head
h // (num_q_heads / num_kv_heads): it computes the token's score q . k / sqrt(head_dim), keeps
a running maximum m, a running sum row_sum of exp(score - m) and its own output element acc
(an online softmax: both are rescaled by exp(m_old - m_new) when the maximum grows), and adds
V[b, kv, t, d] weighted by exp(score - m). Every thread of a block computes the same scores:
clear rather than fast. The tensors arrive with their shapes and are indexed by coordinates.
"""

import math

import cutlass
import cutlass.cute as cute


@cute.kernel
def attention_kernel(
    Q: cute.Tensor,  # (batch, num_q_heads, head_dim) float32
    K: cute.Tensor,  # (batch, num_kv_heads, cache_len, head_dim) float32
    V: cute.Tensor,  # (batch, num_kv_heads, cache_len, head_dim) float32
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
        m = cutlass.Float32(-math.inf)
        row_sum = cutlass.Float32(0.0)
        acc = cutlass.Float32(0.0)
        for t in range(cache_len):
            dot = cutlass.Float32(0.0)
            for i in range(head_dim):
                dot += Q[batch, head, i] * K[batch, kv_head, t, i]
            score = dot * scale
            m_new = cute.arch.fmax(m, score)
            rescale = cute.math.exp(m - m_new)
            p = cute.math.exp(score - m_new)
            row_sum = row_sum * rescale + p
            acc = acc * rescale + p * V[batch, kv_head, t, d]
            m = m_new
        output[batch, head, d] = acc / row_sum


# Q, K, V, output are tensors on the GPU
@cute.jit
def solve(
    Q: cute.Tensor,
    K: cute.Tensor,
    V: cute.Tensor,
    output: cute.Tensor,
    batch_size: cute.Int32,
    num_q_heads: cute.Int32,
    num_kv_heads: cute.Int32,
    cache_len: cute.Int32,
    head_dim: cute.Int32,
):
    scale = cutlass.Float32(1.0) / cute.math.sqrt(cutlass.Float32(head_dim))
    group = num_q_heads // num_kv_heads
    attention_kernel(Q, K, V, output, group, cache_len, head_dim, scale).launch(
        grid=(num_q_heads, batch_size, 1), block=(head_dim, 1, 1)
    )
