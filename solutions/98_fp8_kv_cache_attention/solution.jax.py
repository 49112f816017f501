"""FP8 KV-cache attention in JAX, with the per-KV-head scales folded in.

The uint8 caches are bitcast to float8_e4m3fn and widened to float32 once, unscaled; k_scale
multiplies each KV head's group of queries and v_scale its outputs, never the cache. GQA is a
reshape of Q to (B, Hkv, G, D). `precision="highest"` keeps the products in float32.
"""

import jax
import jax.numpy as jnp


# Q, K_fp8, V_fp8, k_scale, v_scale are tensors on the device; return the output tensor
@jax.jit(static_argnames=("batch_size", "num_q_heads", "num_kv_heads", "cache_len", "head_dim"))
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
    group = num_q_heads // num_kv_heads
    keys = jax.lax.bitcast_convert_type(K_fp8, jnp.float8_e4m3fn).astype(jnp.float32)
    values = jax.lax.bitcast_convert_type(V_fp8, jnp.float8_e4m3fn).astype(jnp.float32)
    queries = Q.reshape(batch_size, num_kv_heads, group, head_dim)
    queries = queries * (k_scale / head_dim**0.5)[None, :, None, None]
    scores = jnp.einsum("bhgd,bhsd->bhgs", queries, keys, precision="highest")
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhgs,bhsd->bhgd", weights, values, precision="highest")
    out = out * v_scale[None, :, None, None]
    return out.reshape(batch_size, num_q_heads, head_dim)
