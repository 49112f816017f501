"""Challenge 97 (paged KV-cache decode attention): the reference and the JAX reference against
the float64 oracle, the named functional tests and their edges, the performance test's
sizes and draws, and the CUDA builds (tests/test_judge.py runs the CPU-runnable solutions)."""

import math
import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import requires_nvcc
from core.challenge_base import materialize_test
from oracles import paged_kv_attention_oracle
from test_judge import SOLUTIONS

from judge.challenges import find_challenge, functional_test_names, load_challenge

FOLDER = SOLUTIONS / "97_paged_kv_cache_attention"
INPUTS = ["Q", "K_cache", "V_cache", "block_table", "seq_lens"]


@pytest.fixture(scope="module")
def challenge():
    return load_challenge(find_challenge("97"), "cpu")


@pytest.fixture(scope="module")
def functional(challenge):
    """The named functional tests, drawn once with a fixed seed."""
    torch.manual_seed(1)
    tests = challenge.generate_functional_test()
    return dict(zip(functional_test_names(challenge, len(tests)), tests))


def oracle(test):
    return paged_kv_attention_oracle(*[test[n].numpy() for n in INPUTS])


def check_against_oracle(challenge, test):
    test = dict(test, output=torch.full_like(test["output"], float("nan")))
    challenge.reference_impl(**test)
    got = test["output"].numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, oracle(test), atol=challenge.atol, rtol=challenge.rtol)


def pages(test, b):
    return -(-int(test["seq_lens"][b]) // test["block_size"])


def test_example_and_functional_tests_match_oracle(challenge, functional):
    for test in [challenge.generate_example_test(), *functional.values()]:
        check_against_oracle(challenge, test)


def test_every_block_table_row_is_its_pages_then_minus_one(challenge, functional):
    for name, test in [("example", challenge.generate_example_test()), *functional.items()]:
        table = test["block_table"]
        for b in range(test["batch_size"]):
            used = table[b, : pages(test, b)]
            assert ((used >= 0) & (used < test["num_blocks"])).all(), name
            assert (table[b, pages(test, b) :] == -1).all(), name
        assert test["max_blocks_per_seq"] * test["block_size"] <= 65536


def test_functional_tests_cover_the_edges(functional):
    assert 7 <= len(functional) <= 10
    lengths = {(int(n), t["block_size"]) for t in functional.values() for n in t["seq_lens"]}
    assert any(n == 1 for n, _ in lengths)
    assert any(n == bs for n, bs in lengths) and any(n == bs + 1 for n, bs in lengths)

    shared = functional["shared_prefix_blocks"]
    rows = [set(shared["block_table"][b, : pages(shared, b)].tolist()) for b in range(4)]
    assert len(set.intersection(*rows)) >= 2, "the sequences share their first blocks"

    reverse = functional["blocks_in_reverse_order"]
    for b in range(reverse["batch_size"]):
        row = reverse["block_table"][b, : pages(reverse, b)]
        assert (row[1:] < row[:-1]).all()

    poisoned = functional["minus_one_past_the_end_poisoned_pool"]
    table = poisoned["block_table"]
    owned = set(table[table >= 0].tolist())
    unused = [k for k in range(poisoned["num_blocks"]) if k not in owned]
    assert {0, poisoned["num_blocks"] - 1} <= set(unused)  # where a -1 clamped or wrapped lands
    assert torch.isinf(poisoned["K_cache"][unused]).all()
    assert torch.isinf(poisoned["V_cache"][unused]).all()
    for b, length in enumerate(poisoned["seq_lens"].tolist()):  # the stale slots of last blocks
        block_size = poisoned["block_size"]
        last, used = int(table[b, pages(poisoned, b) - 1]), (length - 1) % block_size + 1
        assert used < block_size and torch.isinf(poisoned["V_cache"][last, used:]).all()
        assert torch.isfinite(poisoned["V_cache"][last, :used]).all()
    assert (table == -1).sum() > poisoned["batch_size"]

    mqa, mha = functional["mqa_one_kv_head"], functional["mha_no_grouping"]
    assert mqa["num_kv_heads"] == 1 < mqa["num_q_heads"]
    assert mha["num_kv_heads"] == mha["num_q_heads"] > 1

    ragged = functional["ragged_batch_block_size_128_head_dim_256"]
    assert ragged["block_size"] == 128 and ragged["head_dim"] == 256
    assert len(set(ragged["seq_lens"].tolist())) == ragged["batch_size"] >= 4


def test_large_score_case_overflows_a_naive_softmax(challenge, functional):
    test = functional["large_scores_need_max_subtraction"]
    blocks = test["block_table"][0, : pages(test, 0)].long()
    keys = test["K_cache"][blocks, :, 0].reshape(-1, test["head_dim"])  # sequence 0, KV head 0
    scores = keys[: int(test["seq_lens"][0])] @ test["Q"][0, 0] / math.sqrt(test["head_dim"])
    assert torch.isinf(torch.exp(scores)).any()
    check_against_oracle(challenge, test)


def _attend_whole_pages(test):
    """A wrong kernel: every slot of a sequence's pages, ignoring seq_lens inside the last one."""
    whole = dict(
        test,
        seq_lens=torch.tensor(
            [pages(test, b) * test["block_size"] for b in range(test["batch_size"])],
            dtype=torch.int32,
        ),
    )
    return oracle(whole)


def test_attending_the_stale_slots_of_a_last_block_fails(challenge, functional):
    test = functional["one_block_plus_one_token"]
    wrong = _attend_whole_pages(test)
    assert not np.allclose(wrong, oracle(test), atol=challenge.atol, rtol=challenge.rtol)


# batch, q heads, kv heads, head_dim, block_size, max_blocks_per_seq, lengths (None: drawn)
EDGE_SHAPES = [
    (64, 1, 1, 8, 8, 1, None),
    (1, 64, 64, 8, 8, 2, (9,)),
    (1, 64, 1, 16, 16, 1, (16,)),
    (1, 1, 1, 8, 8, 8192, (65536,)),
    (1, 2, 1, 8, 128, 512, (65536,)),
    (2, 2, 1, 256, 128, 2, (1, 256)),
    (1, 1, 1, 8, 8, 1, (1,)),
    (3, 8, 2, 24, 32, 4, (1, 64, 128)),
    (2, 64, 8, 256, 8, 3, (17, 24)),
]


def _random_shapes(count: int):
    rng = np.random.default_rng(97)
    shapes = list(EDGE_SHAPES)
    while len(shapes) < count:
        kv = int(rng.choice([1, 2, 4, 8, 3, 5]))
        group = int(rng.choice([1, 2, 3, 4, 8]))
        head_dim = 8 * int(rng.integers(1, 33))
        block_size = 2 ** int(rng.integers(3, 8))
        batch = int(rng.choice([1, 2, 3, 5, 8, 64]))
        budget = (1 << 19) // (batch * kv * head_dim)  # keeps each case small
        longest = max(1, min(65536, budget, int(np.exp(rng.uniform(0, math.log(65536))))))
        max_blocks = -(-longest // block_size)
        shapes.append((batch, kv * group, kv, head_dim, block_size, max_blocks, None))
    return shapes


def _paged_inputs(shape, seed):
    """Random paged inputs for one shape: a shuffled pool with spare blocks, a shared first
    block when the sequences are long enough, -1 past every sequence's pages."""
    batch, q_heads, kv_heads, head_dim, block_size, max_blocks, lengths = shape
    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.integers(1, max_blocks * block_size + 1, batch)
    lengths = [int(n) for n in lengths]
    need = [-(-n // block_size) for n in lengths]
    share = 1 if min(lengths) > block_size and batch > 1 else 0
    pool = share + sum(n - share for n in need) + int(rng.integers(0, 3))
    order = rng.permutation(pool).tolist()
    table = np.full((batch, max_blocks), -1, dtype=np.int32)
    prefix, order = order[:share], order[share:]
    for b, n in enumerate(need):
        table[b, :n] = prefix + order[: n - share]
        order = order[n - share :]
    cache = (pool, block_size, kv_heads, head_dim)
    return {
        "Q": torch.from_numpy(rng.normal(0, 1, (batch, q_heads, head_dim)).astype(np.float32)),
        "K_cache": torch.from_numpy(rng.normal(0, 2, cache).astype(np.float32)),
        "V_cache": torch.from_numpy(rng.uniform(-3, 3, cache).astype(np.float32)),
        "block_table": torch.from_numpy(table),
        "seq_lens": torch.tensor(lengths, dtype=torch.int32),
        "output": torch.empty(batch, q_heads, head_dim),
        "batch_size": batch,
        "num_q_heads": q_heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "block_size": block_size,
        "max_blocks_per_seq": max_blocks,
        "num_blocks": pool,
    }


@pytest.mark.parametrize("seed, shape", list(enumerate(_random_shapes(50))))
def test_reference_on_random_shapes(challenge, seed, shape):
    check_against_oracle(challenge, _paged_inputs(shape, seed))


def test_jax_reference_matches_oracle(challenge, functional):
    jnp = pytest.importorskip("jax.numpy", reason="the jax extra is not installed")
    signature = challenge.get_solve_signature()
    for test in [challenge.generate_example_test(), *functional.values()]:
        args = [
            jnp.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v
            for k, v in test.items()
            if signature[k][1] == "in"
        ]
        got = np.asarray(challenge.reference_impl_jax(*args))
        np.testing.assert_allclose(got, oracle(test), atol=challenge.atol, rtol=challenge.rtol)


def test_performance_test_has_the_specified_sizes_and_draws():
    meta = load_challenge(find_challenge("97"), "meta")
    torch.manual_seed(5)
    perf = meta.generate_performance_test()
    sizes = {k: v for k, v in perf.items() if isinstance(v, int)}
    assert sizes == dict(
        batch_size=32,
        num_q_heads=32,
        num_kv_heads=8,
        block_size=16,
        max_blocks_per_seq=1024,
        num_blocks=8224,
        head_dim=128,
    )
    assert perf["K_cache"].shape == perf["V_cache"].shape == (8224, 16, 8, 128)
    lengths = perf["seq_lens"]
    assert lengths.dtype == torch.int32 and lengths.shape == (32,)
    assert int(lengths.sum()) == 32 * 4096 and int(lengths.min()) >= 256
    assert int(lengths.max()) == 16384 and int((lengths == 16384).sum()) == 1
    assert int(lengths.min()) < 1024 and len(set(lengths.tolist())) > 24, "ragged"
    table = perf["block_table"]
    used = torch.cat([table[b, : -(-int(n) // 16)] for b, n in enumerate(lengths)])
    assert (table >= 0).sum() == used.numel() and len(set(used.tolist())) == used.numel()
    assert used.max() < 8224 and not torch.equal(used, used.sort().values), "shuffled"

    kwargs = dict(materialize_test(perf, "meta", seed=0), seq_lens=lengths, block_table=table)
    tables = table.nbytes + lengths.nbytes
    expected = 32 * 4096 * 8 * 128 * 4 * 2 + 2 * 32 * 32 * 128 * 4 + tables
    assert meta.get_bytes_moved(**kwargs) == expected

    torch.manual_seed(5)
    again = meta.generate_performance_test()
    torch.manual_seed(6)
    other = meta.generate_performance_test()
    assert torch.equal(again["seq_lens"], lengths) and torch.equal(again["block_table"], table)
    assert not torch.equal(other["seq_lens"], lengths)


def ptxas_report(source, tmp_path):
    """Compile a CUDA solution for sm_90a as the judge does (a shared library with solve
    exported); return {kernel's mangled name: (registers, stack frame and spill store bytes)}
    from ptxas."""
    library = tmp_path / "solution.so"
    result = subprocess.run(
        ["nvcc", "-O3", "-shared", "-Xcompiler", "-fPIC", "-arch=sm_90a", "-Xptxas", "-v"]
        + ["-o", str(library), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    symbols = subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True).stdout
    assert " T solve" in symbols
    kernels, name, spills = {}, None, 0
    for line in result.stderr.splitlines():
        if "Compiling entry function" in line:
            name = line.split("'")[1]
        elif "spill stores" in line:
            frame = int(re.search(r"(\d+) bytes stack frame", line).group(1))
            spills = frame + int(re.search(r"(\d+) bytes spill stores", line).group(1))
        elif "Used" in line and name:
            kernels[name] = (int(re.search(r"Used (\d+) registers", line).group(1)), spills)
    return kernels


@requires_nvcc
def test_editorial_cuda_builds_for_hopper_without_spills(tmp_path):
    """Every instantiation builds without spilling or local arrays (a register array indexed
    at run time lands in local memory), and the performance shape's (4 query heads
    per KV head, head_dim <= 128) fits 128 registers: two 8-warp blocks per SM, the occupancy
    its loads in flight are sized for. (test_judge.py builds every CUDA solution too.)"""
    kernels = ptxas_report(FOLDER / "editorial.cu", tmp_path)
    assert len(kernels) == 7 and not any(spills for _, spills in kernels.values()), kernels
    (perf,) = [regs for name, (regs, _) in kernels.items() if "kernelILi4ELi1E" in name]
    assert perf <= 128
