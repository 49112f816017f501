"""MLA decode (weight-absorbed) in PyTorch: two batched matrix products and a softmax.

All heads of a sequence share its latent rows kv_c[b] and rotary keys k_pe[b], so the scores
of every head are one batched product (B, H, R) x (B, R, T) plus the rotary one, fused into a
single baddbmm with the scale; the output is the softmax weights times the same latent rows.
Concatenating [kv_c | k_pe] into one key would copy the whole cache; two products read it in
place.
"""

import torch


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
    rotary = torch.bmm(q_pe, k_pe.transpose(1, 2))  # (B, H, T)
    # scale * (rotary + q_nope @ kv_c^T) in one call
    scores = torch.baddbmm(
        rotary, q_nope, kv_c.transpose(1, 2), beta=softmax_scale, alpha=softmax_scale
    )
    weights = torch.softmax(scores, dim=-1)
    torch.bmm(weights, kv_c, out=output)
