"""Decode-phase attention in JAX: GQA as a reshape, two einsums and a softmax.

The queries of a KV head's group are viewed together as (B, Hkv, G, D), so one einsum scores
all G heads against their shared K without repeating the cache, and a second one weights V.
`precision="highest"` keeps the products in float32 (no TF32 on GPUs that have it).
"""

import jax
import jax.numpy as jnp


# Q, K, V are tensors on the device; return the output tensor
@jax.jit(static_argnames=("batch_size", "num_q_heads", "num_kv_heads", "cache_len", "head_dim"))
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
    group = num_q_heads // num_kv_heads
    queries = Q.reshape(batch_size, num_kv_heads, group, head_dim)
    scores = jnp.einsum("bhgd,bhsd->bhgs", queries, K, precision="highest")
    weights = jax.nn.softmax(scores * (1.0 / head_dim**0.5), axis=-1)
    out = jnp.einsum("bhgs,bhsd->bhgd", weights, V, precision="highest")
    return out.reshape(batch_size, num_q_heads, head_dim)
