"""FP8 KV-cache attention in PyTorch, with the per-KV-head scales folded in.

The uint8 caches are viewed as torch.float8_e4m3fn and widened to float32 once, unscaled.
A scale is constant over a whole KV head, so k_scale multiplies that head's (G, D) queries
instead of its (S, D) keys, and v_scale multiplies the (G, D) output instead of the values:
scores = (q * k_scale / sqrt(d)) @ K_e4m3^T, out = (softmax(scores) @ V_e4m3) * v_scale. GQA
is a view of Q as (B, Hkv, G, D), so the cache is never repeated per query head.
"""

import math

import torch


# Q, K_fp8, V_fp8, k_scale, v_scale, output are tensors on the GPU
def solve(
    Q: torch.Tensor,
    K_fp8: torch.Tensor,
    V_fp8: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    output: torch.Tensor,
    batch_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    cache_len: int,
    head_dim: int,
):
    group = num_q_heads // num_kv_heads
    keys = K_fp8.view(torch.float8_e4m3fn).to(torch.float32)  # (B, Hkv, S, D), unscaled
    values = V_fp8.view(torch.float8_e4m3fn).to(torch.float32)
    per_head = (1, num_kv_heads, 1, 1)
    queries = Q.view(batch_size, num_kv_heads, group, head_dim)
    queries = queries * (k_scale.view(per_head) / math.sqrt(head_dim))
    weights = torch.softmax(torch.matmul(queries, keys.transpose(-1, -2)), dim=-1)  # (B, Hkv, G, S)
    out = torch.matmul(weights, values) * v_scale.view(per_head)
    output.copy_(out.view(batch_size, num_q_heads, head_dim))
