"""MLA decode (weight-absorbed) in CuTe DSL: one warp per (batch, head), online softmax.

The warp for (head h, batch b) walks every cached token t of sequence b. Its 32 lanes split
the latent row kv_c[b, t] (lane l holds columns l, l + 32, ..., at most 16) and the rotary key
k_pe[b, t] (at most 2 columns each): each lane adds its share of the score
q_nope[b, h] . kv_c[b, t] + q_pe[b, h] . k_pe[b, t], a butterfly of shuffles sums the shares on
every lane, and each lane keeps a running maximum m, a running sum row_sum and its own output
columns acc (an online softmax: rescaled by exp(m_old - m_new) when the maximum grows), adding
its columns of the same latent row weighted by exp(score - m): the latent row is both the key
and the value. Clear rather than fast: every head re-reads the cache its sequence's heads
share, on CUDA cores. The tensors arrive with their shapes and are indexed by coordinates.
"""

import math

import cutlass
import cutlass.cute as cute

RANK_PER_LANE = 16  # kv_lora_rank <= 512 = 32 lanes * 16
ROPE_PER_LANE = 2  # rope_dim <= 64 = 32 lanes * 2


@cute.kernel
def mla_decode_kernel(
    q_nope: cute.Tensor,  # (batch, num_heads, kv_lora_rank) float32
    q_pe: cute.Tensor,  # (batch, num_heads, rope_dim) float32
    kv_c: cute.Tensor,  # (batch, cache_len, kv_lora_rank) float32
    k_pe: cute.Tensor,  # (batch, cache_len, rope_dim) float32
    output: cute.Tensor,  # (batch, num_heads, kv_lora_rank) float32
    cache_len: cutlass.Int32,
    kv_lora_rank: cutlass.Int32,
    rope_dim: cutlass.Int32,
    softmax_scale: cutlass.Float32,
):
    lane, _, _ = cute.arch.thread_idx()
    head, batch, _ = cute.arch.block_idx()
    q = cute.make_rmem_tensor(RANK_PER_LANE, cutlass.Float32)
    q_rot = cute.make_rmem_tensor(ROPE_PER_LANE, cutlass.Float32)
    acc = cute.make_rmem_tensor(RANK_PER_LANE, cutlass.Float32)
    for i in cutlass.range_constexpr(RANK_PER_LANE):
        q[i] = cutlass.Float32(0.0)
        acc[i] = cutlass.Float32(0.0)
        if lane + 32 * i < kv_lora_rank:
            q[i] = q_nope[batch, head, lane + 32 * i] * softmax_scale
    for i in cutlass.range_constexpr(ROPE_PER_LANE):
        q_rot[i] = cutlass.Float32(0.0)
        if lane + 32 * i < rope_dim:
            q_rot[i] = q_pe[batch, head, lane + 32 * i] * softmax_scale

    m = cutlass.Float32(-math.inf)
    row_sum = cutlass.Float32(0.0)
    for t in range(cache_len):
        share = cutlass.Float32(0.0)
        for i in cutlass.range_constexpr(RANK_PER_LANE):
            if lane + 32 * i < kv_lora_rank:
                share += q[i] * kv_c[batch, t, lane + 32 * i]
        for i in cutlass.range_constexpr(ROPE_PER_LANE):
            if lane + 32 * i < rope_dim:
                share += q_rot[i] * k_pe[batch, t, lane + 32 * i]
        for offset in cutlass.range_constexpr(5):  # 16, 8, 4, 2, 1: the sum on every lane
            share += cute.arch.shuffle_sync_bfly(share, 16 >> offset)
        m_new = cute.arch.fmax(m, share)
        rescale = cute.math.exp(m - m_new)
        p = cute.math.exp(share - m_new)
        row_sum = row_sum * rescale + p
        for i in cutlass.range_constexpr(RANK_PER_LANE):
            if lane + 32 * i < kv_lora_rank:
                acc[i] = acc[i] * rescale + p * kv_c[batch, t, lane + 32 * i]
        m = m_new
    for i in cutlass.range_constexpr(RANK_PER_LANE):
        if lane + 32 * i < kv_lora_rank:
            output[batch, head, lane + 32 * i] = acc[i] / row_sum


# q_nope, q_pe, kv_c, k_pe, output are tensors on the GPU
@cute.jit
def solve(
    q_nope: cute.Tensor,
    q_pe: cute.Tensor,
    kv_c: cute.Tensor,
    k_pe: cute.Tensor,
    output: cute.Tensor,
    batch_size: cute.Int32,
    num_heads: cute.Int32,
    cache_len: cute.Int32,
    kv_lora_rank: cute.Int32,
    rope_dim: cute.Int32,
    softmax_scale: cute.Float32,
):
    mla_decode_kernel(
        q_nope, q_pe, kv_c, k_pe, output, cache_len, kv_lora_rank, rope_dim, softmax_scale
    ).launch(grid=(num_heads, batch_size, 1), block=(32, 1, 1))
