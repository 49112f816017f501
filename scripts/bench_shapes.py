"""The shapes scripts/benchmark.py sweeps: one declarative input spec per point.

Challenges 95, 96, 98 and 99 take their performance test with one size changed (``resize``).
Challenge 97's performance test holds a concrete block table and ragged ``seq_lens``, which no
size change can scale, so its points are built with the challenge's own helpers
(``ragged_lengths``, ``_block_table``, ``_make_test_case``): ``paged_case``.
"""

import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

import judge  # noqa: F401  (puts challenges/, the package core, on sys.path)

from core.challenge_base import InputSpec, OutTensor, RandnTensor  # noqa: E402  # isort: skip


@dataclass(frozen=True)
class Axis:
    """One sweep: the size ``name`` takes each of ``values``, every other size stays at the
    performance test's. ``tokens`` is the tokens per sequence at every point where the size
    swept is not a length (a batch sweep); None where the value itself is the length (for 97,
    the mean length)."""

    name: str
    values: Tuple[int, ...]
    tokens: Optional[int] = None

    def tokens_at(self, value: int) -> int:
        """Tokens per sequence (97: the mean over the batch) at one point."""
        return value if self.tokens is None else self.tokens


K = 1024
SWEEPS: Dict[str, Tuple[Axis, ...]] = {
    "95": (
        Axis("cache_len", (K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K, 64 * K)),
        Axis("batch_size", (1, 2, 4, 8, 16), tokens=16 * K),
    ),
    "96": (Axis("seq_len", (K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K)),),
    "97": (
        Axis("mean_len", (K, 2 * K, 4 * K, 8 * K, 16 * K)),
        Axis("batch_size", (1, 2, 4, 8, 16, 32, 64), tokens=4 * K),
    ),
    "98": (Axis("cache_len", (K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K, 64 * K)),),
    "99": (
        Axis("cache_len", (K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K)),
        Axis("batch_size", (1, 2, 4, 8, 16, 32, 64), tokens=8 * K),
    ),
}

# 97's sweep shape: the performance test's heads, head_dim and block size, ragged lengths
PAGED_SHAPE = {"batch": 32, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "block_size": 16}


def resize(spec: Dict[str, Any], sizes: Dict[str, int]) -> Dict[str, Any]:
    """A copy of a declarative performance spec with some integer sizes changed: every tensor
    spec's dimension equal to an old size takes the new size (the shapes here use each size
    once); other values (floats such as 99's softmax_scale) are kept."""
    old = {k: v for k, v in spec.items() if isinstance(v, int)}
    mapping = {old[k]: v for k, v in sizes.items()}
    out = {}
    for key, value in spec.items():
        if isinstance(value, int):
            out[key] = sizes.get(key, value)
        elif isinstance(value, InputSpec):
            shape = tuple(mapping.get(n, n) for n in value.shape)
            fields = {f: getattr(value, f) for f in value.__dataclass_fields__ if f != "shape"}
            out[key] = type(value)(shape, **fields)
        else:
            out[key] = value
    return out


def paged_length_range(batch: int, mean_len: int) -> Tuple[int, int]:
    """(shortest, longest) sequence length of a ragged 97 batch averaging ``mean_len`` tokens.

    The performance test's proportions, 256 and 16,384 around a mean of 4,096 (1/16 and 4x
    the mean), for batches of 7 and more. A smaller batch cannot hold one sequence of 4x the
    mean with the others at least 1/16 of it, so the longest is ``mean * (batch + 1) / 2``
    there: the mean itself for one sequence, 1.5x for two, 2.5x for four."""
    longest = mean_len * min(8, batch + 1) // 2
    return max(1, mean_len // 16), longest


def paged_case(
    challenge,
    batch: int,
    mean_len: int,
    seed: int = 0,
    q_heads: int = PAGED_SHAPE["q_heads"],
    kv_heads: int = PAGED_SHAPE["kv_heads"],
    head_dim: int = PAGED_SHAPE["head_dim"],
    block_size: int = PAGED_SHAPE["block_size"],
) -> Dict[str, Any]:
    """A declarative input spec for challenge 97 (``challenge``, its ``Challenge`` instance):
    ``batch`` ragged sequences summing to ``batch * mean_len`` tokens (the challenge's
    ``ragged_lengths`` between ``paged_length_range``), their pages a random permutation of a
    pool of exactly the pages needed plus the challenge's spare blocks (its ``_block_table``,
    layout "shuffled": -1 past each sequence's pages). Q, K_cache and V_cache are float32
    RandnTensor specs ((batch, q_heads, head_dim) and (num_blocks, block_size, kv_heads,
    head_dim)), block_table and seq_lens concrete int32 tensors, drawn from their own RNG
    seeded with ``seed`` (the global one is left as it was)."""
    module = sys.modules[type(challenge).__module__]
    low, high = paged_length_range(batch, mean_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lengths = module.ragged_lengths(batch, low, high, batch * mean_len)
        table, num_blocks = challenge._block_table(lengths, block_size, "shuffled")

    def meta(*shape):
        return torch.empty(shape, device="meta")

    cache = (num_blocks, block_size, kv_heads, head_dim)
    seq_lens = torch.tensor(lengths, dtype=torch.int32)
    case = challenge._make_test_case(
        meta(batch, q_heads, head_dim), meta(*cache), meta(*cache), table, seq_lens
    )
    return {
        key: (
            (OutTensor(value.shape) if key == "output" else RandnTensor(value.shape))
            if isinstance(value, torch.Tensor) and value.is_meta
            else value
        )
        for key, value in case.items()
    }


def sweep_spec(number: str, challenge, axis: Axis, value: int) -> Dict[str, Any]:
    """The input spec at one sweep point: 97's ``paged_case`` (a mean-length sweep at the
    batch of PAGED_SHAPE, a batch sweep at the axis's mean length), else the performance
    test with the size ``axis.name`` set to ``value``."""
    if number == "97":
        if axis.name == "mean_len":
            return paged_case(challenge, PAGED_SHAPE["batch"], value)
        return paged_case(challenge, value, axis.tokens_at(value))
    return resize(challenge.generate_performance_test(), {axis.name: value})
