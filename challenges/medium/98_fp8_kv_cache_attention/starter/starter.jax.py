import jax
import jax.numpy as jnp


# Q, K_fp8, V_fp8, k_scale, v_scale are tensors on the device; return the output tensor
@jax.jit
def solve(
    Q: jax.Array,
    K_fp8: jax.Array,
    V_fp8: jax.Array,
    k_scale: jax.Array,
    v_scale: jax.Array,
    batch_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    cache_len: int,
    head_dim: int,
) -> jax.Array:
    pass
