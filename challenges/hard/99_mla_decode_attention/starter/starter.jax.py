import jax
import jax.numpy as jnp


# q_nope, q_pe, kv_c, k_pe are tensors on the device; return the output tensor
@jax.jit
def solve(
    q_nope: jax.Array,
    q_pe: jax.Array,
    kv_c: jax.Array,
    k_pe: jax.Array,
    batch_size: int,
    num_heads: int,
    cache_len: int,
    kv_lora_rank: int,
    rope_dim: int,
    softmax_scale: float,
) -> jax.Array:
    pass
