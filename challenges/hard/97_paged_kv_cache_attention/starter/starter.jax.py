import jax
import jax.numpy as jnp


# Q, K_cache, V_cache, block_table, seq_lens are tensors on the device; return the output tensor
@jax.jit
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
    pass
