import cutlass
import cutlass.cute as cute


# Q, K_fp8, V_fp8, k_scale, v_scale, output are tensors on the GPU
@cute.jit
def solve(
    Q: cute.Tensor,
    K_fp8: cute.Tensor,
    V_fp8: cute.Tensor,
    k_scale: cute.Tensor,
    v_scale: cute.Tensor,
    output: cute.Tensor,
    batch_size: cute.Int32,
    num_q_heads: cute.Int32,
    num_kv_heads: cute.Int32,
    cache_len: cute.Int32,
    head_dim: cute.Int32,
):
    pass
