import ctypes
import math
from typing import Any, Dict, List

import torch
from core.challenge_base import ChallengeBase, OutTensor, RandnTensor

# name, seq_lens, num_q_heads, num_kv_heads, head_dim, block_size, how the cache is laid out
FUNCTIONAL_CASES = [
    ("one_token", [1, 1], 4, 2, 16, 8, "shuffled"),
    ("length_equal_to_one_block", [16, 32], 8, 2, 32, 16, "shuffled"),
    ("one_block_plus_one_token", [33, 65], 6, 2, 40, 32, "shuffled"),
    ("shared_prefix_blocks", [87, 96, 113, 80], 8, 2, 64, 16, "shared_prefix"),
    ("blocks_in_reverse_order", [100, 57], 8, 4, 24, 8, "reverse"),
    ("minus_one_past_the_end_poisoned_pool", [17, 1, 200], 4, 2, 32, 16, "poisoned_pool"),
    ("mqa_one_kv_head", [300, 45], 16, 1, 64, 32, "shuffled"),
    ("mha_no_grouping", [64, 129, 5], 4, 4, 128, 16, "shuffled"),
    ("large_scores_need_max_subtraction", [200, 333], 8, 2, 128, 16, "large_scores"),
    (
        "ragged_batch_block_size_128_head_dim_256",
        [1, 127, 128, 129, 700],
        8,
        2,
        256,
        128,
        "shuffled",
    ),
]
SHARED_PREFIX_PAGES = 5  # the "shared_prefix_blocks" sequences all start with these pages
SPARE_BLOCKS = 3  # pool blocks no sequence uses (inf in "minus_one_past_the_end_poisoned_pool")

# the performance test: 32 ragged sequences, one at the longest length, averaging 4,096 tokens
PERF_BATCH, PERF_Q_HEADS, PERF_KV_HEADS, PERF_HEAD_DIM, PERF_BLOCK_SIZE = 32, 32, 8, 128, 16
PERF_MIN_LEN, PERF_MAX_LEN, PERF_MEAN_LEN = 256, 16384, 4096


def pages_needed(seq_len: int, block_size: int) -> int:
    """Blocks (pages) that hold ``seq_len`` tokens: ceil(seq_len / block_size)."""
    return -(-seq_len // block_size)


def ragged_lengths(count: int, low: int, high: int, total: int) -> List[int]:
    """``count`` random lengths in [low, high] that sum to ``total``; exactly one is ``high``.

    The others are ``low * (high / low) ** (u ** a)`` for uniform draws ``u`` from torch's
    global RNG (so a seeded run replays them), with the exponent ``a`` found by bisection so
    that they sum to ``total - high``: spread from near ``low`` to near ``high``, no spike.

    Raises:
        ValueError: no such lengths exist.
    """
    others = count - 1
    if count < 1 or not others * low <= total - high <= others * (high - 1):
        raise ValueError(f"{count} lengths in [{low}, {high}] cannot sum to {total}")
    u = torch.rand(others, dtype=torch.float64)
    ratio, goal = high / low, total - high

    def lengths_for(a):
        return low * ratio ** (u**a)  # decreasing in a, from `high` (a -> 0) to `low`

    lo_a, hi_a = 1e-6, 1e6
    for _ in range(200):
        mid = math.sqrt(lo_a * hi_a)
        lo_a, hi_a = (mid, hi_a) if lengths_for(mid).sum() > goal else (lo_a, mid)
    exact = lengths_for(hi_a).clamp(low, high - 1)
    lengths = exact.floor().to(torch.int64)
    short = goal - int(lengths.sum())  # rounding down left these tokens over
    for i in torch.argsort(exact - lengths, descending=True).tolist() * 2:
        step = 1 if short > 0 else -1
        if short == 0:
            break
        if low <= int(lengths[i]) + step <= high - 1:
            lengths[i] += step
            short -= step
    if short != 0:
        raise ValueError(f"could not round {count} lengths to a sum of {total}")
    where = int(torch.randint(0, count, (1,)))
    return lengths[:where].tolist() + [high] + lengths[where:].tolist()


def _paged_attention_jax(
    Q,
    K_cache,
    V_cache,
    block_table,
    seq_lens,
    batch_size,
    num_q_heads,
    num_kv_heads,
    head_dim,
    block_size,
    max_blocks_per_seq,
    num_blocks,
):
    """The reference's computation in JAX (jitted by ``Challenge.reference_impl_jax``)."""
    import jax
    import jax.numpy as jnp

    max_len = max_blocks_per_seq * block_size
    blocks = jnp.maximum(block_table, 0)
    K = K_cache[blocks].reshape(batch_size, max_len, num_kv_heads, head_dim)
    V = V_cache[blocks].reshape(batch_size, max_len, num_kv_heads, head_dim)
    attended = jnp.arange(max_len)[None, :] < seq_lens[:, None]
    V = jnp.where(attended[:, :, None, None], V, 0.0)
    group = num_q_heads // num_kv_heads
    q = Q.reshape(batch_size, num_kv_heads, group, head_dim)
    scores = jnp.einsum("bkgd,btkd->bkgt", q, K, precision="highest") / math.sqrt(head_dim)
    scores = jnp.where(attended[:, None, None, :], scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgt,btkd->bkgd", weights, V, precision="highest")
    return out.reshape(batch_size, num_q_heads, head_dim)


_jax_reference = None


class Challenge(ChallengeBase):
    name = "Paged KV-Cache Decode Attention"
    atol = 1e-04
    rtol = 1e-04
    num_gpus = 1
    access_tier = "free"

    def reference_impl(
        self,
        Q: torch.Tensor,
        K_cache: torch.Tensor,
        V_cache: torch.Tensor,
        block_table: torch.Tensor,
        seq_lens: torch.Tensor,
        output: torch.Tensor,
        batch_size: int,
        num_q_heads: int,
        num_kv_heads: int,
        head_dim: int,
        block_size: int,
        max_blocks_per_seq: int,
        num_blocks: int,
    ):
        assert num_q_heads % num_kv_heads == 0
        assert Q.shape == output.shape == (batch_size, num_q_heads, head_dim)
        assert K_cache.shape == V_cache.shape == (num_blocks, block_size, num_kv_heads, head_dim)
        assert block_table.shape == (batch_size, max_blocks_per_seq)
        assert seq_lens.shape == (batch_size,)
        assert Q.dtype == K_cache.dtype == V_cache.dtype == output.dtype == torch.float32
        assert block_table.dtype == seq_lens.dtype == torch.int32

        # token t of sequence b is slot t % block_size of block block_table[b, t // block_size]:
        # gather every table entry's block (-1 entries point at block 0 here and are masked)
        max_len = max_blocks_per_seq * block_size
        blocks = block_table.long().clamp(min=0)
        K = K_cache[blocks].reshape(batch_size, max_len, num_kv_heads, head_dim)
        V = V_cache[blocks].reshape(batch_size, max_len, num_kv_heads, head_dim)
        attended = torch.arange(max_len, device=Q.device)[None, :] < seq_lens[:, None]  # (B, T)
        V = torch.where(attended[:, :, None, None], V, 0.0)  # no NaN of a masked slot leaks in

        # GQA: query head h = kv * group + g reads KV head kv
        group = num_q_heads // num_kv_heads
        q = Q.view(batch_size, num_kv_heads, group, head_dim)
        scores = torch.einsum("bkgd,btkd->bkgt", q, K) / math.sqrt(head_dim)
        scores = scores.masked_fill(~attended[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = torch.einsum("bkgt,btkd->bkgd", weights, V)
        output.copy_(out.reshape(batch_size, num_q_heads, head_dim))

    def reference_impl_jax(
        self,
        Q,
        K_cache,
        V_cache,
        block_table,
        seq_lens,
        batch_size: int,
        num_q_heads: int,
        num_kv_heads: int,
        head_dim: int,
        block_size: int,
        max_blocks_per_seq: int,
        num_blocks: int,
    ):
        import jax

        global _jax_reference
        if _jax_reference is None:  # one compiled program per set of sizes, as jit caches them
            _jax_reference = jax.jit(_paged_attention_jax, static_argnums=tuple(range(5, 12)))
        sizes = (batch_size, num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq)
        return _jax_reference(Q, K_cache, V_cache, block_table, seq_lens, *sizes, num_blocks)

    def get_solve_signature(self) -> Dict[str, tuple]:
        return {
            "Q": (ctypes.POINTER(ctypes.c_float), "in"),
            "K_cache": (ctypes.POINTER(ctypes.c_float), "in"),
            "V_cache": (ctypes.POINTER(ctypes.c_float), "in"),
            "block_table": (ctypes.POINTER(ctypes.c_int), "in"),
            "seq_lens": (ctypes.POINTER(ctypes.c_int), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "batch_size": (ctypes.c_int, "in"),
            "num_q_heads": (ctypes.c_int, "in"),
            "num_kv_heads": (ctypes.c_int, "in"),
            "head_dim": (ctypes.c_int, "in"),
            "block_size": (ctypes.c_int, "in"),
            "max_blocks_per_seq": (ctypes.c_int, "in"),
            "num_blocks": (ctypes.c_int, "in"),
        }

    def get_bytes_moved(self, Q, K_cache, V_cache, block_table, seq_lens, output, **sizes) -> int:
        """Bytes a call must move: the K and V rows of every attended token (not the pool's
        unused blocks, nor the unattended slots of a last block), Q, the tables and the output."""
        row_bytes = sizes["num_kv_heads"] * sizes["head_dim"] * K_cache.element_size()
        tokens = int(seq_lens.sum())
        tables = block_table.nbytes + seq_lens.nbytes
        return 2 * tokens * row_bytes + Q.nbytes + tables + output.nbytes

    def _make_test_case(self, Q, K_cache, V_cache, block_table, seq_lens) -> Dict[str, Any]:
        batch_size, num_q_heads, head_dim = Q.shape
        num_blocks, block_size, num_kv_heads, _ = K_cache.shape
        return {
            "Q": Q,
            "K_cache": K_cache,
            "V_cache": V_cache,
            "block_table": block_table,
            "seq_lens": seq_lens,
            "output": torch.empty_like(Q),
            "batch_size": batch_size,
            "num_q_heads": num_q_heads,
            "num_kv_heads": num_kv_heads,
            "head_dim": head_dim,
            "block_size": block_size,
            "max_blocks_per_seq": block_table.shape[1],
            "num_blocks": num_blocks,
        }

    def _block_table(self, seq_lens, block_size, layout):
        """Block table (-1 past each sequence's pages) and the pool size for one layout."""
        pages = [pages_needed(n, block_size) for n in seq_lens]
        shared = SHARED_PREFIX_PAGES if layout == "shared_prefix" else 0
        used = shared + sum(p - shared for p in pages)
        num_blocks = used + SPARE_BLOCKS
        if layout == "reverse":
            physical = list(range(num_blocks - 1, num_blocks - 1 - used, -1))
        elif layout == "poisoned_pool":  # blocks 0 and -1 (the last) are among the unused ones
            physical = (torch.randperm(num_blocks - 2) + 1)[:used].tolist()
        else:
            physical = torch.randperm(num_blocks)[:used].tolist()
        prefix, physical = physical[:shared], physical[shared:]
        table = torch.full((len(seq_lens), max(pages) + 1), -1, dtype=torch.int32)
        for b, count in enumerate(pages):
            own, physical = physical[: count - shared], physical[count - shared :]
            table[b, :count] = torch.tensor(prefix + own, dtype=torch.int32)
        return table, num_blocks

    def _functional_case(self, seq_lens, q_heads, kv_heads, head_dim, block_size, layout):
        table, num_blocks = self._block_table(seq_lens, block_size, layout)
        cache_shape = (num_blocks, block_size, kv_heads, head_dim)
        std = 8.0 if layout == "large_scores" else 1.0  # scores of a few hundred: exp overflows
        Q = torch.randn(len(seq_lens), q_heads, head_dim) * std
        K_cache = torch.randn(cache_shape) * std
        V_cache = torch.randn(cache_shape)
        if layout == "poisoned_pool":  # inf in every block no sequence owns and in the slots
            # of each last block past seq_len: a kernel that reads one into its sums gets inf or
            # NaN in its output
            unused = torch.ones(num_blocks, dtype=torch.bool)
            unused[table[table >= 0].long()] = False
            K_cache[unused] = float("inf")
            V_cache[unused] = float("inf")
            for b, length in enumerate(seq_lens):
                last = int(table[b, pages_needed(length, block_size) - 1])
                used_slots = length - (pages_needed(length, block_size) - 1) * block_size
                K_cache[last, used_slots:] = float("inf")
                V_cache[last, used_slots:] = float("inf")
        tensors = (Q, K_cache, V_cache, table, torch.tensor(seq_lens, dtype=torch.int32))
        return self._make_test_case(*(t.to(self.device) for t in tensors))

    def generate_example_test(self) -> Dict[str, Any]:
        # two sequences, one KV head shared by two query heads, block_size 8, a pool of 3 blocks:
        # sequence 0 has 10 tokens in blocks 2 and 0; sequence 1 has 3 tokens, the first 3 of
        # block 2 (a shared prefix); block 1 is unused (stale values that must not be read)
        eye = torch.eye(8)
        K_cache = torch.zeros(3, 8, 1, 8)
        V_cache = torch.zeros(3, 8, 1, 8)
        K_cache[1] = 9.0
        V_cache[1] = 9.0
        K_cache[2, :, 0] = eye  # the shared block: token j has a 1 in column j
        K_cache[0, 0, 0, :4] = 1.0
        K_cache[0, 1, 0, 4:] = 1.0
        V_cache[2, :, 0] = torch.arange(1.0, 9.0)[:, None] * eye[0]  # token j: value j + 1, col 0
        V_cache[0, 0, 0, 1] = 4.0
        V_cache[0, 1, 0, 2] = 8.0
        Q = torch.tensor(
            [
                [
                    [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
                ],
                [
                    [0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                ],
            ]
        )
        block_table = torch.tensor([[2, 0], [2, -1]], dtype=torch.int32)
        seq_lens = torch.tensor([10, 3], dtype=torch.int32)
        tensors = (Q, K_cache, V_cache, block_table, seq_lens)
        return self._make_test_case(*(t.to(self.device) for t in tensors))

    def get_functional_test_names(self) -> List[str]:
        return [case[0] for case in FUNCTIONAL_CASES]

    def generate_functional_test(self) -> List[Dict[str, Any]]:
        return [self._functional_case(*case[1:]) for case in FUNCTIONAL_CASES]

    def generate_performance_test(self) -> Dict[str, Any]:
        batch, block_size = PERF_BATCH, PERF_BLOCK_SIZE
        lengths = ragged_lengths(batch, PERF_MIN_LEN, PERF_MAX_LEN, batch * PERF_MEAN_LEN)
        max_blocks_per_seq = PERF_MAX_LEN // block_size
        # a fixed pool (the buffers are reused between timed calls): the pages of any draw fit
        num_blocks = batch * PERF_MEAN_LEN // block_size + batch
        physical = torch.randperm(num_blocks).to(torch.int32)
        block_table = torch.full((batch, max_blocks_per_seq), -1, dtype=torch.int32)
        taken = 0
        for b, length in enumerate(lengths):
            count = pages_needed(length, block_size)
            block_table[b, :count] = physical[taken : taken + count]
            taken += count
        cache_shape = (num_blocks, block_size, PERF_KV_HEADS, PERF_HEAD_DIM)
        return {
            "Q": RandnTensor((batch, PERF_Q_HEADS, PERF_HEAD_DIM)),
            "K_cache": RandnTensor(cache_shape),
            "V_cache": RandnTensor(cache_shape),
            "block_table": block_table,
            "seq_lens": torch.tensor(lengths, dtype=torch.int32),
            "output": OutTensor((batch, PERF_Q_HEADS, PERF_HEAD_DIM)),
            "batch_size": batch,
            "num_q_heads": PERF_Q_HEADS,
            "num_kv_heads": PERF_KV_HEADS,
            "block_size": block_size,
            "max_blocks_per_seq": max_blocks_per_seq,
            "num_blocks": num_blocks,
            "head_dim": PERF_HEAD_DIM,  # last: the Constraints bullet ends with it
        }
