"""Paged KV-cache decode attention in CuTe DSL: one thread per (sequence, query head, column).

Thread d of the block for (query head h, sequence b) walks the sequence's seq_lens[b] tokens:
token t is slot t % block_size of block block_table[b, t // block_size], so its key row of KV
head h // (num_q_heads / num_kv_heads) is K_cache[block, slot, kv_head, :]. The thread
computes the token's score q . k / sqrt(head_dim), keeps a running maximum m, a running sum
row_sum of exp(score - m) and its own output element acc (an online softmax: both are
rescaled by exp(m_old - m_new) when the maximum grows), and adds V_cache[block, slot, kv_head,
d] weighted by exp(score - m). Only table entries below seq_len are followed. Every thread of a
block computes the same scores: clear rather than fast. The tensors arrive with their shapes
and are indexed by coordinates.
"""

import math

import cutlass
import cutlass.cute as cute


@cute.kernel
def paged_attention_kernel(
    Q: cute.Tensor,  # (batch, num_q_heads, head_dim) float32
    K_cache: cute.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim) float32
    V_cache: cute.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim) float32
    block_table: cute.Tensor,  # (batch, max_blocks_per_seq) int32
    seq_lens: cute.Tensor,  # (batch,) int32
    output: cute.Tensor,  # (batch, num_q_heads, head_dim) float32
    group: cutlass.Int32,  # query heads per KV head
    head_dim: cutlass.Int32,
    block_size: cutlass.Int32,
    scale: cutlass.Float32,  # 1 / sqrt(head_dim)
):
    d, _, _ = cute.arch.thread_idx()
    head, batch, _ = cute.arch.block_idx()
    kv_head = head // group
    if d < head_dim:
        seq_len = seq_lens[batch]
        m = cutlass.Float32(-math.inf)
        row_sum = cutlass.Float32(0.0)
        acc = cutlass.Float32(0.0)
        for t in range(seq_len):
            block = block_table[batch, t // block_size]
            slot = t % block_size
            dot = cutlass.Float32(0.0)
            for i in range(head_dim):
                dot += Q[batch, head, i] * K_cache[block, slot, kv_head, i]
            score = dot * scale
            m_new = cute.arch.fmax(m, score)
            rescale = cute.math.exp(m - m_new)
            p = cute.math.exp(score - m_new)
            row_sum = row_sum * rescale + p
            acc = acc * rescale + p * V_cache[block, slot, kv_head, d]
            m = m_new
        output[batch, head, d] = acc / row_sum


# Q, K_cache, V_cache, block_table, seq_lens, output are tensors on the GPU
@cute.jit
def solve(
    Q: cute.Tensor,
    K_cache: cute.Tensor,
    V_cache: cute.Tensor,
    block_table: cute.Tensor,
    seq_lens: cute.Tensor,
    output: cute.Tensor,
    batch_size: cute.Int32,
    num_q_heads: cute.Int32,
    num_kv_heads: cute.Int32,
    head_dim: cute.Int32,
    block_size: cute.Int32,
    max_blocks_per_seq: cute.Int32,
    num_blocks: cute.Int32,
):
    scale = cutlass.Float32(1.0) / cute.math.sqrt(cutlass.Float32(head_dim))
    group = num_q_heads // num_kv_heads
    paged_attention_kernel(
        Q, K_cache, V_cache, block_table, seq_lens, output, group, head_dim, block_size, scale
    ).launch(grid=(num_q_heads, batch_size, 1), block=(head_dim, 1, 1))
