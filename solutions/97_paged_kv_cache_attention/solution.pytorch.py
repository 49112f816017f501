"""Paged KV-cache decode attention in PyTorch: gather each sequence's pages, then attend.

The first ceil(seq_len / block_size) entries of a sequence's block_table row name its pages;
K_cache[pages] is (pages, block_size, Hkv, D), which flattens to the sequence's tokens in
order, and the slots past seq_len are cut off. GQA is a view: the (Hkv, G, D) queries of a
sequence meet its (T, Hkv, D) keys in one einsum, without repeating the cache per query head.
Clear rather than fast: seq_lens comes to the host once and every sequence is its own handful
of kernels, so the host's launch latency adds up over the batch.
"""

import math

import torch


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
    group = num_q_heads // num_kv_heads
    scale = 1.0 / math.sqrt(head_dim)
    for b, length in enumerate(seq_lens.tolist()):
        pages = block_table[b, : -(-length // block_size)].long()
        keys = K_cache[pages].reshape(-1, num_kv_heads, head_dim)[:length]  # (T, Hkv, D)
        values = V_cache[pages].reshape(-1, num_kv_heads, head_dim)[:length]
        queries = Q[b].view(num_kv_heads, group, head_dim)
        weights = torch.softmax(torch.einsum("kgd,tkd->kgt", queries, keys) * scale, dim=-1)
        out = torch.einsum("kgt,tkd->kgd", weights, values)
        output[b].copy_(out.reshape(num_q_heads, head_dim))
