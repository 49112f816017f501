"""Decode-phase attention in PyTorch, without copying the KV cache for GQA.

The reference repeats every KV head for each query head of its group (repeat_interleave), which
writes and reads a group-size-times larger cache. Viewing the queries as (B, Hkv, G, D) instead
lets one batched matmul serve all G query heads of a KV head from the cache as it is.
"""

import math

import torch


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
    group = num_q_heads // num_kv_heads
    queries = Q.view(batch_size, num_kv_heads, group, head_dim)
    scores = torch.matmul(queries, K.transpose(-1, -2)) * (1.0 / math.sqrt(head_dim))
    weights = torch.softmax(scores, dim=-1)  # (B, Hkv, G, S)
    torch.matmul(weights, V, out=output.view(batch_size, num_kv_heads, group, head_dim))
