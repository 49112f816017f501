"""INT8 KV-cache attention in JAX, with the per-token scales folded into scores and weights.

scores = (K_int8 @ q) * k_scale / sqrt(d) and out = (softmax(scores) * v_scale) @ V_int8: the
int8 caches are widened to float32 once and never multiplied by their scales element by
element. `precision="highest"` keeps the products in float32.
"""

import jax
import jax.numpy as jnp


# Q, K_int8, V_int8, k_scale, v_scale are tensors on the device; return the output tensor
@jax.jit(static_argnames=("num_heads", "seq_len", "head_dim"))
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
    raw = jnp.einsum("hsd,hd->hs", K_int8.astype(jnp.float32), Q, precision="highest")
    weights = jax.nn.softmax(raw * k_scale * (1.0 / head_dim**0.5), axis=-1) * v_scale
    return jnp.einsum("hs,hsd->hd", weights, V_int8.astype(jnp.float32), precision="highest")
