"""MLA decode (weight-absorbed) in JAX: two einsums for the scores, a softmax, one einsum out.

Every head of sequence b reads the same latent rows kv_c[b] (the keys of the score and the
values of the sum) and rotary keys k_pe[b], so no per-head cache is ever formed.
`precision="highest"` keeps the products in float32 (no TF32 on GPUs that have it).
"""

import jax
import jax.numpy as jnp


# q_nope, q_pe, kv_c, k_pe are tensors on the device; return the output tensor
@jax.jit(
    static_argnames=("batch_size", "num_heads", "cache_len", "kv_lora_rank", "rope_dim"),
)
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
    scores = jnp.einsum("bhr,btr->bht", q_nope, kv_c, precision="highest")
    scores = scores + jnp.einsum("bhp,btp->bht", q_pe, k_pe, precision="highest")
    weights = jax.nn.softmax(scores * softmax_scale, axis=-1)
    return jnp.einsum("bht,btr->bhr", weights, kv_c, precision="highest")
