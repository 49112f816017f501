"""Paged KV-cache decode attention in JAX: one gather of every token's row, a mask, two einsums.

JAX wants static shapes, so every sequence is padded to max_blocks_per_seq * block_size
tokens: token t of sequence b is slot t % block_size of block block_table[b, t // block_size],
gathered for all t at once, and the tokens at or past seq_lens[b] are masked out of the softmax
(their block number is replaced by 0 first, so a -1 entry never indexes the pool, and their
values by 0, so a stale NaN cannot leak through a zero weight). GQA is a reshape of the queries
to (B, Hkv, G, D). `precision="highest"` keeps the products in float32.
"""

import jax
import jax.numpy as jnp


# Q, K_cache, V_cache, block_table, seq_lens are tensors on the device; return the output tensor
@jax.jit(
    static_argnames=(
        "batch_size",
        "num_q_heads",
        "num_kv_heads",
        "head_dim",
        "block_size",
        "max_blocks_per_seq",
        "num_blocks",
    )
)
def solve(
    Q: jax.Array,
    K_cache: jax.Array,
    V_cache: jax.Array,
    block_table: jax.Array,
    seq_lens: jax.Array,
    batch_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    max_blocks_per_seq: int,
    num_blocks: int,
) -> jax.Array:
    tokens = jnp.arange(max_blocks_per_seq * block_size)
    attended = tokens[None, :] < seq_lens[:, None]  # (B, T)
    blocks = jnp.where(attended, block_table[:, tokens // block_size], 0)
    slots = tokens % block_size
    keys = K_cache[blocks, slots[None, :]]  # (B, T, Hkv, D)
    values = jnp.where(attended[:, :, None, None], V_cache[blocks, slots[None, :]], 0.0)
    group = num_q_heads // num_kv_heads
    queries = Q.reshape(batch_size, num_kv_heads, group, head_dim)
    scores = jnp.einsum("bkgd,btkd->bkgt", queries, keys, precision="highest")
    scores = jnp.where(attended[:, None, None, :], scores * (1.0 / head_dim**0.5), -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgt,btkd->bkgd", weights, values, precision="highest")
    return out.reshape(batch_size, num_q_heads, head_dim)
