"""INT8 KV-cache attention in PyTorch, with the per-token scales folded in.

Each token's key scale multiplies its score and each token's value scale multiplies its
softmax weight, so the int8 tensors are converted to float once and never rescaled element
by element: scores = (K_int8 @ q) * k_scale / sqrt(d), out = (softmax(scores) * v_scale) @ V_int8.
"""

import math

import torch


# Q, K_int8, V_int8, k_scale, v_scale, output are tensors on the GPU
def solve(
    Q: torch.Tensor,
    K_int8: torch.Tensor,
    V_int8: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    output: torch.Tensor,
    num_heads: int,
    seq_len: int,
    head_dim: int,
):
    raw_scores = torch.bmm(K_int8.float(), Q.unsqueeze(-1)).squeeze(-1)  # (H, S)
    scores = raw_scores * k_scale * (1.0 / math.sqrt(head_dim))
    weights = torch.softmax(scores, dim=-1) * v_scale  # (H, S)
    torch.bmm(weights.unsqueeze(1), V_int8.float(), out=output.unsqueeze(1))
