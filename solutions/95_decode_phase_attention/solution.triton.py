"""Decode-phase attention in Triton: one program per (query head, batch), online softmax.

Each program streams its KV head in BLOCK_N-token tiles and keeps a running maximum m, a
running sum row_sum and an unnormalized output acc, rescaling both by exp(m_old - m_new) whenever
the maximum grows, so the softmax never overflows and K and V are read once per query head.
Clear rather than fast: the query heads of a GQA group each re-read their KV head (L2 absorbs
part of it) and the grid has only batch_size * num_q_heads programs; the editorial version
adds split-KV and GQA packing.
"""

import math

import torch
import triton
import triton.language as tl


@triton.jit
def decode_attention_kernel(
    Q,  # (B, Hq, D) float32
    K,  # (B, Hkv, S, D) float32
    V,  # (B, Hkv, S, D) float32
    Out,  # (B, Hq, D) float32
    num_q_heads,  # Hq
    num_kv_heads,  # Hkv
    cache_len,  # S
    head_dim,  # D
    scale,  # 1 / sqrt(head_dim), folded into the query
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim rounded up to a power of two
):
    head = tl.program_id(0)
    batch = tl.program_id(1)
    kv_head = head // (num_q_heads // num_kv_heads)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < head_dim

    q = tl.load(Q + (batch * num_q_heads + head) * head_dim + dims, mask=dim_ok, other=0.0)
    q = q * scale
    kv_base = (batch * num_kv_heads + kv_head).to(tl.int64) * cache_len * head_dim

    m = tl.full((), float("-inf"), tl.float32)
    row_sum = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for start in range(0, cache_len, BLOCK_N):
        tokens = start + tl.arange(0, BLOCK_N)
        tok_ok = tokens < cache_len
        offsets = kv_base + tokens[:, None] * head_dim + dims[None, :]
        tile_ok = tok_ok[:, None] & dim_ok[None, :]
        k = tl.load(K + offsets, mask=tile_ok, other=0.0)
        scores = tl.sum(k * q[None, :], axis=1)
        scores = tl.where(tok_ok, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        correction = tl.exp(m - m_new)
        p = tl.exp(scores - m_new)
        v = tl.load(V + offsets, mask=tile_ok, other=0.0)
        acc = acc * correction + tl.sum(p[:, None] * v, axis=0)
        row_sum = row_sum * correction + tl.sum(p, axis=0)
        m = m_new
    out = Out + (batch * num_q_heads + head) * head_dim + dims
    tl.store(out, acc / row_sum, mask=dim_ok)


# Q, K, V, output are tensors on the GPU
def solve(
    Q: torch.Tensor,
    K: torch.Tensor,
    V: torch.Tensor,
    output: torch.Tensor,
    batch_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    cache_len: int,
    head_dim: int,
):
    grid = (num_q_heads, batch_size)
    decode_attention_kernel[grid](
        Q,
        K,
        V,
        output,
        num_q_heads,
        num_kv_heads,
        cache_len,
        head_dim,
        1.0 / math.sqrt(head_dim),
        BLOCK_N=64 if Q.is_cuda else 512,  # fewer, larger steps in the CPU interpreter
        BLOCK_D=triton.next_power_of_2(head_dim),
    )
