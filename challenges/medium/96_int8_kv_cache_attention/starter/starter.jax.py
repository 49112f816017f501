import jax
import jax.numpy as jnp


# Q, K_int8, V_int8, k_scale, v_scale are tensors on the device; return the output tensor
@jax.jit
def solve(
    Q: jax.Array,
    K_int8: jax.Array,
    V_int8: jax.Array,
    k_scale: jax.Array,
    v_scale: jax.Array,
    num_heads: int,
    seq_len: int,
    head_dim: int,
) -> jax.Array:
    pass
