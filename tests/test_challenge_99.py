"""Challenge 99 (MLA decode, weight-absorbed): the reference and the JAX reference against the
float64 oracle, the named functional tests and their edges, the performance test's sizes and
floors, the CUDA builds, and the CUDA editorial's kernel run on the CPU through the model in
tests/cuda_cpu_model (tests/test_judge.py runs the CPU-runnable solutions)."""

import ctypes
import math
import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import build_cpu_model, requires_nvcc
from core.challenge_base import OutTensor, RandnTensor, RandTensor, materialize_test
from oracles import mla_decode_oracle
from test_judge import SOLUTIONS

from judge.challenges import find_challenge, functional_test_names, load_challenge

FOLDER = SOLUTIONS / "99_mla_decode_attention"
INPUTS = ["q_nope", "q_pe", "kv_c", "k_pe"]


@pytest.fixture(scope="module")
def challenge():
    return load_challenge(find_challenge("99"), "cpu")


@pytest.fixture(scope="module")
def functional(challenge):
    """The named functional tests, drawn once with a fixed seed."""
    torch.manual_seed(1)
    tests = challenge.generate_functional_test()
    return dict(zip(functional_test_names(challenge, len(tests)), tests))


def oracle(test):
    return mla_decode_oracle(*[test[n].numpy() for n in INPUTS], test["softmax_scale"])


def check_against_oracle(challenge, test):
    test = dict(test, output=torch.full_like(test["output"], float("nan")))
    challenge.reference_impl(**test)
    got = test["output"].numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, oracle(test), atol=challenge.atol, rtol=challenge.rtol)


def test_example_and_functional_tests_match_oracle(challenge, functional):
    for test in [challenge.generate_example_test(), *functional.values()]:
        check_against_oracle(challenge, test)


def test_example_scores_are_the_ones_the_page_explains(challenge):
    test = challenge.generate_example_test()
    q_nope, q_pe, kv_c, k_pe = (test[n][0].double() for n in INPUTS)
    scores = (q_nope @ kv_c.T + q_pe @ k_pe.T) * test["softmax_scale"]
    assert torch.equal(scores, torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]], dtype=torch.double))


def test_functional_tests_cover_the_edges(functional):
    assert 7 <= len(functional) <= 10
    assert not any(name.startswith("functional_") for name in functional)
    tests = list(functional.values())
    assert {1, 2, 3} <= {t["cache_len"] for t in tests}
    assert {1, 128} <= {t["num_heads"] for t in tests}
    assert {16, 512} <= {t["kv_lora_rank"] for t in tests}
    assert {8, 64} <= {t["rope_dim"] for t in tests}
    assert 64 in {t["batch_size"] for t in tests}
    assert len({t["softmax_scale"] for t in tests}) >= 6
    for name, t in functional.items():  # inside the page's constraints
        assert 1 <= t["batch_size"] <= 64 and 1 <= t["num_heads"] <= 128, name
        assert 1 <= t["cache_len"] <= 32768 and t["softmax_scale"] > 0, name
        assert 16 <= t["kv_lora_rank"] <= 512 and t["kv_lora_rank"] % 16 == 0, name
        assert 8 <= t["rope_dim"] <= 64 and t["rope_dim"] % 8 == 0, name
        assert all(t[n].abs().max() <= 1000 for n in INPUTS), name
        assert t["q_nope"].shape == (t["batch_size"], t["num_heads"], t["kv_lora_rank"]), name
        assert t["k_pe"].shape == (t["batch_size"], t["cache_len"], t["rope_dim"]), name
    zero = functional["zero_query_uniform_weights"]
    assert not zero["q_nope"].any() and not zero["q_pe"].any()
    deepseek = functional["deepseek_128_heads_rank_512"]
    assert deepseek["softmax_scale"] == 1 / math.sqrt(128 + 64)


def test_large_score_case_overflows_a_naive_softmax(challenge, functional):
    test = functional["large_scores_need_max_subtraction"]
    scores = (test["kv_c"][0] @ test["q_nope"][0, 0] + test["k_pe"][0] @ test["q_pe"][0, 0]) * test[
        "softmax_scale"
    ]
    assert torch.isinf(torch.exp(scores)).any()
    check_against_oracle(challenge, test)


# batch, heads, cache_len, kv_lora_rank, rope_dim
EDGE_SHAPES = [
    (64, 1, 1, 16, 8),
    (1, 128, 3, 512, 64),
    (1, 1, 32768, 16, 8),
    (64, 128, 1, 16, 8),
    (1, 1, 1, 512, 64),
    (2, 128, 7, 512, 8),
    (3, 1, 2, 16, 64),
    (1, 2, 300, 512, 64),
]


def _random_shapes(count: int):
    rng = np.random.default_rng(99)
    shapes = list(EDGE_SHAPES)
    while len(shapes) < count:
        batch = int(rng.choice([1, 2, 3, 5, 8, 64]))
        heads = int(rng.integers(1, 129))
        rank, rope = 16 * int(rng.integers(1, 33)), 8 * int(rng.integers(1, 9))
        budget = min((1 << 19) // (batch * (rank + rope)), (1 << 17) // (batch * heads))
        cache_len = max(1, min(32768, budget, int(np.exp(rng.uniform(0, math.log(32768))))))
        shapes.append((batch, heads, cache_len, rank, rope))
    return shapes


@pytest.mark.parametrize("seed, shape", list(enumerate(_random_shapes(50))))
def test_reference_on_random_shapes(challenge, seed, shape):
    batch, heads, cache_len, rank, rope = shape
    scale = float(np.exp(np.random.default_rng(seed).uniform(math.log(0.01), math.log(2.0))))
    test = materialize_test(
        {
            "q_nope": RandnTensor((batch, heads, rank), std=2.0),
            "q_pe": RandnTensor((batch, heads, rope), std=2.0),
            "kv_c": RandnTensor((batch, cache_len, rank)),
            "k_pe": RandTensor((batch, cache_len, rope), -3.0, 3.0),
            "output": OutTensor((batch, heads, rank)),
            "batch_size": batch,
            "num_heads": heads,
            "cache_len": cache_len,
            "kv_lora_rank": rank,
            "rope_dim": rope,
            "softmax_scale": scale,
        },
        "cpu",
        seed=seed,
    )
    check_against_oracle(challenge, test)


def test_jax_reference_matches_oracle(challenge, functional):
    jax = pytest.importorskip("jax", reason="the jax extra is not installed")
    signature = challenge.get_solve_signature()
    # one XLA program per shape instead of one per operation: the sizes are static
    reference = jax.jit(challenge.reference_impl_jax, static_argnums=range(4, 10))
    for test in [challenge.generate_example_test(), *functional.values()]:
        args = [
            jax.numpy.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v
            for k, v in test.items()
            if signature[k][1] == "in"
        ]
        got = np.asarray(reference(*args))
        np.testing.assert_allclose(got, oracle(test), atol=challenge.atol, rtol=challenge.rtol)


def test_performance_test_has_the_specified_sizes_and_floors():
    meta = load_challenge(find_challenge("99"), "meta")
    perf = meta.generate_performance_test()
    sizes = {k: v for k, v in perf.items() if isinstance(v, int)}
    assert sizes == dict(
        batch_size=16, num_heads=128, cache_len=8192, kv_lora_rank=512, rope_dim=64
    )
    assert perf["softmax_scale"] == 1 / math.sqrt(192)
    kwargs = materialize_test(perf, "meta", seed=0)
    assert kwargs["kv_c"].shape == (16, 8192, 512) and kwargs["k_pe"].shape == (16, 8192, 64)
    meta.reference_impl(**kwargs)  # shapes only, on the meta device

    cache = 16 * 8192 * (512 + 64) * 4
    assert round(cache / 1e6, 1) == 302.0
    queries_and_output = 16 * 128 * (512 + 64 + 512) * 4
    assert meta.get_bytes_moved(**kwargs) == cache + queries_and_output
    flops = meta.get_flops(**kwargs)
    assert flops == 2 * 16 * 128 * 8192 * (2 * 512 + 64)
    assert round(flops / 1e9, 1) == 36.5
    # the page's floors: ~72 us of HBM at ~4.2 TB/s, ~550 us on ~67 TFLOP/s of fp32 CUDA cores
    assert 70 < cache / 4.2e12 * 1e6 < 75 and 540 < flops / 67e12 * 1e6 < 550


def ptxas_report(source, tmp_path):
    """Compile a CUDA solution for sm_90a as the judge does (a shared library with solve
    exported); return ptxas's resource report."""
    library = tmp_path / "solution.so"
    result = subprocess.run(
        ["nvcc", "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-Xptxas", "-v"]
        + ["-gencode=arch=compute_90a,code=sm_90a", "-o", str(library), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    symbols = subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True).stdout
    assert " T solve" in symbols
    return result.stderr


@requires_nvcc
@pytest.mark.parametrize("name", ["solution.cu", "editorial.cu"])
def test_cuda_solutions_build_for_hopper_without_spills(name, tmp_path):
    report = ptxas_report(FOLDER / name, tmp_path)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", report)]
    assert spills and not any(spills), report
    if name == "editorial.cu":  # both kernels (DeepSeek's dimensions and any), 255 at most
        registers = [int(n) for n in re.findall(r"Used (\d+) registers", report)]
        assert len(registers) == 2 and max(registers) <= 255


# The CuTe DSL and Mojo solutions are compiled by tests/test_judge.py (TestCuteBuild, for every
# functional test's shapes, and TestMojoBuild), which build every solution folder's files.


@pytest.fixture(scope="module")
def cpu_model_library(tmp_path_factory):
    """The CUDA editorial's kernel and launch plan built for the CPU model, through ctypes."""
    return build_cpu_model("mla_cpu_model.cpp", tmp_path_factory.mktemp("mla_cpu_model"))


@pytest.fixture(scope="module")
def cpu_model(cpu_model_library):
    """The kernel's C entry point: runs a whole launch, returns its splits (-1: a counter
    left nonzero)."""
    run = cpu_model_library.mla_cpu_model
    floats = ctypes.POINTER(ctypes.c_float)
    run.argtypes = [floats] * 5 + [ctypes.c_int] * 5 + [ctypes.c_float, ctypes.c_int]
    run.restype = ctypes.c_int
    return run


# batch, heads, cache_len, kv_lora_rank, rope_dim, softmax_scale, resident clusters (the GPU's
# room, which sets the splits), query std; what each case reaches
MODEL_CASES = [
    (1, 1, 1, 16, 8, 0.25, 1, 1.0),  # one CTA, one token, one rotary warp
    (3, 8, 2, 16, 8, 2.0, 1, 1.0),  # two tokens, a mostly masked tile
    (2, 40, 37, 32, 16, 0.3, 4, 1.0),  # clusters of 2, a partial last head group, 2 splits
    (1, 70, 40, 48, 24, 1.0, 3, 1.0),  # clusters of 3 (uneven rows per CTA), 3 splits
    (1, 100, 50, 144, 40, 0.2, 2, 1.0),  # clusters of 4, uneven latent chunks per warp
    (1, 128, 33, 512, 64, 1 / math.sqrt(192), 3, 1.0),  # DeepSeek's: wgmma, 2 head groups
    (2, 64, 100, 512, 64, 0.1, 5, 1.0),  # wgmma: 4 tiles, one each for 3 splits and a partial
    (1, 20, 70, 512, 64, 0.3, 1, 1.0),  # wgmma: a part-filled head group, one chunk, 3 tiles
    (1, 130, 1, 512, 64, 0.07, 2, 1.0),  # wgmma: one token, 3 head groups, 2 heads in the last
    (1, 16, 300, 512, 64, 1 / math.sqrt(192), 9, 50.0),  # wgmma: large scores, 9 splits
    (2, 1, 200, 64, 32, 0.125, 6, 1.0),  # one head, 3 splits of 5 tiles
    (1, 16, 512, 128, 32, 1 / math.sqrt(160), 8, 50.0),  # scores of a few hundred
]


def wave_filling_splits(batch: int, tiles: int, resident: int) -> int:
    """Chunks per sequence the editorial's plan should pick: the fewest (at most one per
    tile) whose batch * chunks clusters fill their waves of ``resident`` to 90%, else the
    fullest."""
    fills = {s: batch * s / (resident * -(-batch * s // resident)) for s in range(1, tiles + 1)}
    enough = [s for s, fill in fills.items() if fill >= 0.9]
    return enough[0] if enough else max(fills, key=lambda s: (fills[s], -s))


def planned_splits(batch, heads, cache_len, rank, rope, resident):
    """Chunks per sequence the editorial's plan should give: the wave rule over the kernel's
    tiles and clusters, then as many chunks as tiles of that size make. The wgmma kernel
    (DeepSeek's shape): 32-token tiles, a cluster per 64 heads, at most 192 chunks (so that the
    merging CTA's weights, 64 heads x chunks, fit its 48 KB of score slots). The other: 16-token
    tiles, a cluster per sequence."""
    if (rank, rope) == (512, 64):
        tiles, clusters = -(-cache_len // 32), batch * -(-heads // 64)
        wanted = min(192, wave_filling_splits(clusters, tiles, resident))
    else:
        tiles = -(-cache_len // 16)
        wanted = wave_filling_splits(batch, tiles, resident)
    per_chunk = -(-tiles // wanted)
    return -(-tiles // per_chunk)


@pytest.mark.parametrize(
    "batch, tiles, resident, splits",
    [(16, 512, 30, 7), (16, 512, 32, 2), (1, 512, 30, 27), (64, 512, 30, 3), (4, 2, 30, 2)],
)
def test_the_plan_fills_the_waves_of_resident_clusters(
    cpu_model_library, batch, tiles, resident, splits
):
    # (16, 512, 30): the performance shape on an H200's 30 clusters of four, where one chunk
    # per sequence would leave 68 of 132 SMs idle: 7 chunks, 4 waves 93% full
    split_count = cpu_model_library.mla_split_count
    split_count.argtypes = [ctypes.c_int] * 3
    assert split_count(batch, tiles, resident) == splits
    assert wave_filling_splits(batch, tiles, resident) == splits
    for other in range(1, 40):  # and the rule, against its oracle, around those shapes
        assert split_count(other, tiles, resident) == wave_filling_splits(other, tiles, resident)


@pytest.mark.parametrize(
    "batch, heads, cache_len, resident, splits",
    [
        (16, 128, 8192, 62, 7),  # the performance shape on an H200 (62 resident clusters)
        (1, 64, 32768, 10**4, 171),  # the rule: 1,024 (a tile each); 192 at most, 6 tiles a chunk
        (1, 64, 32768, 150, 128),  # under the cap, the rule's 135, 8 tiles a chunk
    ],
)
def test_the_wgmma_plan_fills_the_waves_within_its_chunk_cap(
    cpu_model_library, batch, heads, cache_len, resident, splits
):
    plan_splits = cpu_model_library.mla_plan_splits
    plan_splits.argtypes = [ctypes.c_int] * 6
    expected = planned_splits(batch, heads, cache_len, 512, 64, resident)
    assert plan_splits(batch, heads, cache_len, 512, 64, resident) == expected
    assert expected == splits <= 192


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_cuda_editorial_kernel_on_the_cpu_model(cpu_model, case):
    batch, heads, cache_len, rank, rope, scale, resident, q_std = case
    rng = np.random.default_rng(sum(case[:5]))
    q_nope = (rng.standard_normal((batch, heads, rank)) * q_std).astype(np.float32)
    q_pe = (rng.standard_normal((batch, heads, rope)) * q_std).astype(np.float32)
    kv_c = rng.standard_normal((batch, cache_len, rank)).astype(np.float32)
    k_pe = rng.uniform(-3, 3, (batch, cache_len, rope)).astype(np.float32)
    out = np.full((batch, heads, rank), np.nan, dtype=np.float32)
    arrays = [q_nope, q_pe, kv_c, k_pe, out]
    floats = ctypes.POINTER(ctypes.c_float)
    splits = cpu_model(
        *[a.ctypes.data_as(floats) for a in arrays],
        batch,
        heads,
        cache_len,
        rank,
        rope,
        scale,
        resident,
    )
    assert splits >= 1, "a merge counter was left nonzero"
    assert splits == planned_splits(batch, heads, cache_len, rank, rope, resident)
    expected = mla_decode_oracle(q_nope, q_pe, kv_c, k_pe, scale)
    assert np.isfinite(out).all()
    # fp16x3 products: within a tenth of the judge's tolerance
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
