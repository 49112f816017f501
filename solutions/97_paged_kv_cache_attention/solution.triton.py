"""Paged KV-cache decode attention in Triton: one program per (query head, sequence).

Each program walks its sequence's seq_len tokens in BLOCK_N-token tiles. For a tile it looks up
the block of every token (block_table[b, t // block_size]) and gathers the K rows at
(block * block_size + t % block_size) * num_kv_heads + kv_head, then keeps an online softmax:
a running maximum m, a running sum row_sum and an unnormalized output acc, rescaled by
exp(m_old - m_new) when the maximum grows. Tokens past seq_len are masked, so neither a -1
table entry nor a stale slot of the last block is ever read. Clear rather than fast: the query
heads of a GQA group each re-read their KV head, and the grid has only batch_size *
num_q_heads programs, each as long as its sequence; the editorial version balances the ragged
work over the whole GPU.
"""

import math

import torch
import triton
import triton.language as tl


@triton.jit
def paged_decode_kernel(
    Q,  # (B, Hq, D) float32
    K_cache,  # (num_blocks, block_size, Hkv, D) float32
    V_cache,  # (num_blocks, block_size, Hkv, D) float32
    BlockTable,  # (B, max_blocks_per_seq) int32
    SeqLens,  # (B,) int32
    Out,  # (B, Hq, D) float32
    num_q_heads,  # Hq
    num_kv_heads,  # Hkv
    head_dim,  # D
    block_size,  # tokens per block
    max_blocks_per_seq,  # columns of the block table
    scale,  # 1 / sqrt(head_dim), folded into the query
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim rounded up to a power of two
):
    head = tl.program_id(0)
    batch = tl.program_id(1)
    kv_head = head // (num_q_heads // num_kv_heads)
    seq_len = tl.load(SeqLens + batch)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < head_dim

    q = tl.load(Q + (batch * num_q_heads + head) * head_dim + dims, mask=dim_ok, other=0.0)
    q = q * scale

    m = tl.full((), float("-inf"), tl.float32)
    row_sum = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for start in range(0, seq_len, BLOCK_N):
        tokens = start + tl.arange(0, BLOCK_N)
        tok_ok = tokens < seq_len
        table_at = BlockTable + batch * max_blocks_per_seq + tokens // block_size
        blocks = tl.load(table_at, mask=tok_ok, other=0).to(tl.int64)
        rows = (blocks * block_size + tokens % block_size) * num_kv_heads + kv_head
        offsets = rows[:, None] * head_dim + dims[None, :]
        tile_ok = tok_ok[:, None] & dim_ok[None, :]
        k = tl.load(K_cache + offsets, mask=tile_ok, other=0.0)
        scores = tl.sum(k * q[None, :], axis=1)
        scores = tl.where(tok_ok, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        correction = tl.exp(m - m_new)
        p = tl.exp(scores - m_new)
        v = tl.load(V_cache + offsets, mask=tile_ok, other=0.0)
        acc = acc * correction + tl.sum(p[:, None] * v, axis=0)
        row_sum = row_sum * correction + tl.sum(p, axis=0)
        m = m_new
    out = Out + (batch * num_q_heads + head) * head_dim + dims
    tl.store(out, acc / row_sum, mask=dim_ok)


# Q, K_cache, V_cache, block_table, seq_lens, output are tensors on the GPU
def solve(
    Q: torch.Tensor,
    K_cache: torch.Tensor,
    V_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    output: torch.Tensor,
    batch_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    max_blocks_per_seq: int,
    num_blocks: int,
):
    paged_decode_kernel[(num_q_heads, batch_size)](
        Q,
        K_cache,
        V_cache,
        block_table,
        seq_lens,
        output,
        num_q_heads,
        num_kv_heads,
        head_dim,
        block_size,
        max_blocks_per_seq,
        1.0 / math.sqrt(head_dim),
        BLOCK_N=64,
        BLOCK_D=triton.next_power_of_2(head_dim),
    )
