"""MLA decode (weight-absorbed) in Triton: one program per (block of heads, batch), online
softmax.

All heads of a sequence read the same latent rows kv_c[b] and rotary keys k_pe[b], so a
program takes BLOCK_H heads at once and streams the cache in BLOCK_N-token tiles: the scores of
its heads are the (BLOCK_H, BLOCK_N) products q_nope kv_c^T + q_pe k_pe^T, and the same latent
tile, weighted by exp(score - m), is added to the output: O += P kv_c. Per head a running
maximum m, running sum row_sum and unnormalized output acc are rescaled by exp(m_old - m_new)
whenever the maximum grows. The products are plain float32 ("ieee"). Clear rather than fast:
a sequence's whole cache is one program's loop, so batch_size * num_heads / BLOCK_H programs
leave most of a GPU idle; the editorial version adds split-KV and tensor cores.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def mla_decode_kernel(
    QNope,  # (B, H, R) float32
    QPe,  # (B, H, P) float32
    KvC,  # (B, T, R) float32: latent rows, shared by all heads
    KPe,  # (B, T, P) float32: rotary keys, shared by all heads
    Out,  # (B, H, R) float32
    num_heads,  # H
    cache_len,  # T
    kv_lora_rank,  # R
    rope_dim,  # P
    scale_log2,  # softmax_scale * log2(e): scores in the exp2 domain
    BLOCK_H: tl.constexpr,  # heads per program
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_R: tl.constexpr,  # kv_lora_rank rounded up to a power of two
    BLOCK_P: tl.constexpr,  # rope_dim rounded up to a power of two
):
    heads = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    batch = tl.program_id(1)
    ranks = tl.arange(0, BLOCK_R)
    ropes = tl.arange(0, BLOCK_P)
    head_ok = heads < num_heads
    rank_ok = ranks < kv_lora_rank
    rope_ok = ropes < rope_dim
    q_rows = batch * num_heads + heads
    q_nope = tl.load(
        QNope + q_rows[:, None] * kv_lora_rank + ranks[None, :],
        mask=head_ok[:, None] & rank_ok[None, :],
        other=0.0,
    )
    q_pe = tl.load(
        QPe + q_rows[:, None] * rope_dim + ropes[None, :],
        mask=head_ok[:, None] & rope_ok[None, :],
        other=0.0,
    )
    first_token = batch.to(tl.int64) * cache_len

    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_R), tl.float32)
    for start in range(0, cache_len, BLOCK_N):
        tokens = start + tl.arange(0, BLOCK_N)
        tok_ok = tokens < cache_len
        rows = first_token + tokens
        latent = tl.load(
            KvC + rows[:, None] * kv_lora_rank + ranks[None, :],
            mask=tok_ok[:, None] & rank_ok[None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_R): the keys of the score and the values of the sum
        rotary = tl.load(
            KPe + rows[:, None] * rope_dim + ropes[None, :],
            mask=tok_ok[:, None] & rope_ok[None, :],
            other=0.0,
        )
        scores = tl.dot(q_nope, tl.trans(latent), input_precision="ieee")
        scores += tl.dot(q_pe, tl.trans(rotary), input_precision="ieee")
        scores = tl.where(tok_ok[None, :], scores * scale_log2, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        correction = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new[:, None])
        acc = acc * correction[:, None] + tl.dot(p, latent, input_precision="ieee")
        row_sum = row_sum * correction + tl.sum(p, axis=1)
        m = m_new
    out = Out + q_rows[:, None] * kv_lora_rank + ranks[None, :]
    tl.store(out, acc / row_sum[:, None], mask=head_ok[:, None] & rank_ok[None, :])


# q_nope, q_pe, kv_c, k_pe, output are tensors on the GPU
def solve(
    q_nope: torch.Tensor,
    q_pe: torch.Tensor,
    kv_c: torch.Tensor,
    k_pe: torch.Tensor,
    output: torch.Tensor,
    batch_size: int,
    num_heads: int,
    cache_len: int,
    kv_lora_rank: int,
    rope_dim: int,
    softmax_scale: float,
):
    block_h = 16  # the smallest tile tl.dot takes
    mla_decode_kernel[(triton.cdiv(num_heads, block_h), batch_size)](
        q_nope,
        q_pe,
        kv_c,
        k_pe,
        output,
        num_heads,
        cache_len,
        kv_lora_rank,
        rope_dim,
        softmax_scale * 1.4426950408889634,
        BLOCK_H=block_h,
        BLOCK_N=32,
        BLOCK_R=triton.next_power_of_2(kv_lora_rank),
        BLOCK_P=max(16, triton.next_power_of_2(rope_dim)),
        num_warps=8,  # a 32 x 512 tile is 64 registers a thread
    )
