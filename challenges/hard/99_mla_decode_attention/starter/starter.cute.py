import cutlass
import cutlass.cute as cute


# q_nope, q_pe, kv_c, k_pe, output are tensors on the GPU
@cute.jit
def solve(
    q_nope: cute.Tensor,
    q_pe: cute.Tensor,
    kv_c: cute.Tensor,
    k_pe: cute.Tensor,
    output: cute.Tensor,
    batch_size: cute.Int32,
    num_heads: cute.Int32,
    cache_len: cute.Int32,
    kv_lora_rank: cute.Int32,
    rope_dim: cute.Int32,
    softmax_scale: cute.Float32,
):
    pass
