import torch
import triton
import triton.language as tl


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
    pass
