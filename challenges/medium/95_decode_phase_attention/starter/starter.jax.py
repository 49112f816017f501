import jax
import jax.numpy as jnp


# Q, K, V are tensors on the device; return the output tensor
@jax.jit
def solve(
    Q: jax.Array,
    K: jax.Array,
    V: jax.Array,
    batch_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    cache_len: int,
    head_dim: int,
) -> jax.Array:
    pass
