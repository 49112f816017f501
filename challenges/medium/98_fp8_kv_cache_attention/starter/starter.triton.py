import torch
import triton
import triton.language as tl


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
    pass
