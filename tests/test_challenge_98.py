"""Challenge 98 (FP8 KV-cache attention): the E4M3 decoding, the reference and the JAX reference
against the float64 oracle, the named tests' coverage, the performance test's sizes, the CUDA
solutions through nvcc, and the CUDA editorial's kernel and launch plan run on the CPU through
the model in tests/cuda_cpu_model.

The Python-language solutions run on the CPU, the CuTe DSL and Mojo ones are compiled, and
every solution runs on a GPU, in the tests that cover every folder of solutions/
(tests/test_judge.py, tests/test_gpu.py).
"""

import ctypes
import math
import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import build_cpu_model, requires_nvcc
from core.challenge_base import OutTensor, RandnTensor, RandTensor, materialize_test
from oracles import E4M3_VALUES, e4m3_value, fp8_kv_attention_oracle
from test_judge import SOLUTIONS

from judge.challenges import find_challenge, functional_test_names, load_challenge

INPUTS = ["Q", "K_fp8", "V_fp8", "k_scale", "v_scale"]
SOLUTION_DIR = SOLUTIONS / "98_fp8_kv_cache_attention"
NAN_CODES = (0x7F, 0xFF)
FINITE_CODES = [c for c in range(256) if c not in NAN_CODES]


@pytest.fixture(scope="module")
def challenge():
    return load_challenge(find_challenge("98"), "cpu")


def named_tests(challenge, seed: int):
    torch.manual_seed(seed)
    tests = challenge.generate_functional_test()
    return dict(zip(functional_test_names(challenge, len(tests)), tests))


def check_against_oracle(challenge, test):
    test = dict(test, output=torch.full_like(test["output"], float("nan")))
    challenge.reference_impl(**test)
    expected = fp8_kv_attention_oracle(*[test[n].numpy() for n in INPUTS])
    got = test["output"].numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=challenge.atol, rtol=challenge.rtol)


def random_codes(shape, gen):
    """Random finite E4M3 codes (no 0x7F, 0xFF) as uint8."""
    drawn = torch.randint(0, 254, shape, generator=gen)
    return (drawn + (drawn >= 0x7F).long()).to(torch.uint8)


class TestE4M3:
    def test_the_oracle_decodes_the_ocp_fields(self):
        # sign, exponent (bias 7), mantissa: values the OCP FP8 specification lists
        known = {
            0x00: 0.0,
            0x01: 2.0**-9,  # smallest subnormal
            0x07: 7 * 2.0**-9,  # largest subnormal
            0x08: 2.0**-6,  # smallest normal
            0x38: 1.0,
            0x3C: 1.5,
            0x56: 14.0,
            0x7E: 448.0,  # largest finite
            0xB8: -1.0,
            0xFE: -448.0,
        }
        for code, value in known.items():
            assert e4m3_value(code) == value, hex(code)
        assert math.copysign(1.0, e4m3_value(0x80)) == -1.0 and e4m3_value(0x80) == 0.0
        assert all(math.isnan(e4m3_value(c)) for c in NAN_CODES)
        assert np.isfinite(E4M3_VALUES).sum() == 254

    def test_the_oracle_agrees_with_torch_float8_e4m3fn(self):
        codes = torch.tensor(FINITE_CODES, dtype=torch.uint8)
        decoded = codes.view(torch.float8_e4m3fn).to(torch.float64).numpy()
        ours = E4M3_VALUES[FINITE_CODES]
        assert np.array_equal(decoded, ours)
        assert np.array_equal(np.signbit(decoded), np.signbit(ours))


def test_example_and_functional_tests_match_oracle(challenge):
    check_against_oracle(challenge, challenge.generate_example_test())
    for test in named_tests(challenge, seed=1).values():
        check_against_oracle(challenge, test)


class TestCoverage:
    def test_names_count_and_shortest_caches(self, challenge):
        tests = named_tests(challenge, seed=2)
        assert 7 <= len(tests) <= 10 and not any(n.startswith("functional_") for n in tests)
        assert {1, 2, 3} <= {t["cache_len"] for t in tests.values()}

    def test_no_test_holds_a_nan_code(self, challenge):
        tests = [challenge.generate_example_test(), *named_tests(challenge, seed=3).values()]
        for test in tests:
            for name in ("K_fp8", "V_fp8"):
                assert not np.isin(test[name].numpy(), NAN_CODES).any()
            assert (test["k_scale"] > 0).all() and (test["v_scale"] > 0).all()

    def test_every_code_test_holds_every_finite_code(self, challenge):
        test = named_tests(challenge, seed=4)["every_e4m3_code_subnormals_and_zeros"]
        for name in ("K_fp8", "V_fp8"):
            codes, counts = np.unique(test[name].numpy(), return_counts=True)
            assert codes.tolist() == FINITE_CODES  # both zeros, every subnormal and exponent
            assert counts.min() == counts.max()

    def test_extreme_scales_pass_float16s_range_both_ways(self, challenge):
        test = named_tests(challenge, seed=5)["extreme_scales_tiny_and_large"]
        k_scale, v_scale = test["k_scale"], test["v_scale"]
        assert k_scale.min() < 1e-6 and k_scale.max() > 100 and v_scale.max() > 100
        # the smallest subnormal key scaled falls below float16's smallest subnormal, the
        # largest value scaled past float16's largest finite value
        assert 2.0**-9 * k_scale.min() < 2.0**-24 and 448 * v_scale.max() > 65504
        check_against_oracle(challenge, test)

    def test_gqa_layouts_mqa_and_mha(self, challenge):
        tests = named_tests(challenge, seed=6)
        layouts = {(t["num_q_heads"], t["num_kv_heads"]) for t in tests.values()}
        assert any(kv == 1 < q for q, kv in layouts)  # MQA
        assert any(kv == q > 1 for q, kv in layouts)  # MHA
        assert any(1 < kv < q for q, kv in layouts)  # GQA
        realistic = tests["realistic_decode_step"]
        sizes = [realistic[k] for k in ("num_q_heads", "num_kv_heads", "cache_len", "head_dim")]
        assert sizes == [32, 8, 4096, 128]

    def test_large_scores_overflow_a_naive_exp(self, challenge):
        test = named_tests(challenge, seed=7)["large_scores_need_max_subtraction"]
        group = test["num_q_heads"] // test["num_kv_heads"]
        keys = test["K_fp8"].view(torch.float8_e4m3fn).double()
        keys = keys * test["k_scale"].double().view(1, -1, 1, 1)
        queries = test["Q"].double().view(test["batch_size"], test["num_kv_heads"], group, -1)
        scores = (queries @ keys.transpose(-1, -2) / math.sqrt(test["head_dim"])).float()
        assert torch.isinf(torch.exp(scores)).any()
        check_against_oracle(challenge, test)


def _edge_and_random_shapes(count: int):
    """(batch, q_heads, kv_heads, cache_len, head_dim): every constraint edge, then random."""
    edges = [
        (16, 1, 1, 5, 8),
        (1, 64, 64, 7, 8),
        (1, 64, 1, 9, 16),
        (1, 1, 1, 65536, 8),
        (2, 2, 1, 11, 256),
        (1, 1, 1, 1, 8),
        (16, 8, 2, 2, 16),
        (1, 4, 2, 3, 256),
    ]
    rng = np.random.default_rng(98)
    shapes = list(edges)
    while len(shapes) < count:
        kv = int(rng.choice([1, 2, 4, 8, 3, 5]))
        group = int(rng.choice([1, 2, 3, 4, 8]))
        batch = int(rng.integers(1, 17))
        head_dim = 8 * int(rng.integers(1, 33))
        cache_len = int(np.exp(rng.uniform(0, math.log(65536))))
        cache_len = max(1, min(cache_len, (1 << 20) // (batch * kv * head_dim)))
        shapes.append((batch, kv * group, kv, cache_len, head_dim))
    return shapes


@pytest.mark.parametrize("shape", _edge_and_random_shapes(50), ids=str)
def test_reference_matches_oracle_on_random_shapes(challenge, shape):
    batch, q_heads, kv_heads, cache_len, head_dim = shape
    gen = torch.Generator().manual_seed(sum(shape))
    kv_shape = (batch, kv_heads, cache_len, head_dim)
    spec = {
        "Q": RandnTensor((batch, q_heads, head_dim), std=2.0),
        "K_fp8": random_codes(kv_shape, gen),
        "V_fp8": random_codes(kv_shape, gen),
        "k_scale": RandTensor((kv_heads,), 1e-3, 0.05),
        "v_scale": RandTensor((kv_heads,), 1e-3, 0.05),
        "output": OutTensor((batch, q_heads, head_dim)),
        "batch_size": batch,
        "num_q_heads": q_heads,
        "num_kv_heads": kv_heads,
        "cache_len": cache_len,
        "head_dim": head_dim,
    }
    check_against_oracle(challenge, materialize_test(spec, "cpu", seed=sum(shape)))


def test_jax_reference_matches_oracle(challenge):
    jax = pytest.importorskip("jax", reason="the jax extra is not installed")
    signature = challenge.get_solve_signature()
    reference = jax.jit(challenge.reference_impl_jax, static_argnums=(5, 6, 7, 8, 9))  # the sizes
    tests = [challenge.generate_example_test(), *named_tests(challenge, seed=8).values()]
    for test in tests:
        args = [
            jax.numpy.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v
            for k, v in test.items()
            if signature[k][1] == "in"
        ]
        got = np.asarray(reference(*args))
        expected = fp8_kv_attention_oracle(*[test[n].numpy() for n in INPUTS])
        np.testing.assert_allclose(got, expected, atol=challenge.atol, rtol=challenge.rtol)


def test_performance_test_has_the_spec_sizes():
    meta = load_challenge(find_challenge("98"), "meta")
    spec = meta.generate_performance_test()
    sizes = {k: v for k, v in spec.items() if isinstance(v, int)}
    assert sizes == dict(
        batch_size=4, num_q_heads=32, num_kv_heads=8, cache_len=32768, head_dim=128
    )
    test = materialize_test(spec, "meta", seed=0)
    assert test["K_fp8"].shape == test["V_fp8"].shape == (4, 8, 32768, 128)
    assert test["K_fp8"].dtype == test["V_fp8"].dtype == torch.uint8
    assert test["k_scale"].shape == test["v_scale"].shape == (8,)
    assert test["K_fp8"].nbytes + test["V_fp8"].nbytes == 268_435_456
    meta.reference_impl(**test)
    for name in ("K_fp8", "V_fp8"):  # one range of finite codes each: no NaN code between
        low, high = spec[name].low, spec[name].high
        assert not set(range(low, high)) & set(NAN_CODES) and 0 <= low < high <= 256


@requires_nvcc
@pytest.mark.parametrize("source", ["solution.cu", "editorial.cu"])
def test_cuda_solutions_compile_for_hopper_without_spills(source, tmp_path):
    result = subprocess.run(
        [
            "nvcc",
            "-O3",
            "-std=c++17",
            "-gencode=arch=compute_90a,code=sm_90a",
            "-Xptxas",
            "-v",
            "-c",
            "-o",
            str(tmp_path / "solution.o"),
            str(SOLUTION_DIR / source),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", result.stderr)
    assert spills and all(s == ("0", "0") for s in spills), result.stderr


@pytest.fixture(scope="module")
def cpu_model_library(tmp_path_factory):
    """The CUDA editorial's kernel and launch plan built for the CPU model, through ctypes."""
    library = build_cpu_model("fp8_cpu_model.cpp", tmp_path_factory.mktemp("fp8_cpu_model"))
    floats, codes = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_uint8)
    library.fp8_cpu_model.argtypes = [floats, codes, codes, floats, floats, floats] + [
        ctypes.c_int
    ] * 6
    library.fp8_cpu_model.restype = ctypes.c_int
    library.fp8_plan_splits.argtypes = [ctypes.c_int] * 6
    library.fp8_plan_splits.restype = ctypes.c_int
    return library


def planned_splits(batch, q_heads, kv_heads, cache_len, head_dim, resident):
    """The editorial's split-KV plan by its rule: blocks of 4 query heads (8 for groups of more
    than 4) of one KV head, 16 warps of 16-token tiles (8 warps above head_dim 128), and as
    many splits of each group's tokens as fill one wave of `resident` blocks."""
    group = q_heads // kv_heads
    heads_per_block = 8 if group > 4 else 4
    blocks = batch * kv_heads * math.ceil(group / heads_per_block)
    step = 16 * (16 if head_dim <= 128 else 8)
    wanted = max(1, resident // blocks)
    tokens_per_split = max(step, math.ceil(math.ceil(cache_len / wanted) / step) * step)
    return math.ceil(cache_len / tokens_per_split)


# batch, q_heads, kv_heads, cache_len, head_dim, resident blocks (the GPU's room, which sets
# the splits), query std, k_scale; what each case reaches
MODEL_CASES = [
    (1, 4, 1, 1, 128, 1, 1.0, 0.01),  # one token: one warp with a tile, 15 without
    (1, 4, 1, 300, 128, 3, 1.0, 0.01),  # 2 splits, the second ending in a partial tile
    (2, 8, 2, 520, 128, 16, 1.0, 0.01),  # 3 splits of 2 steps each per group, 4 groups
    (1, 8, 1, 129, 128, 5, 1.0, 0.01),  # MQA, 8 heads: two n-tiles, 1 token past a step
    (1, 16, 1, 77, 64, 1, 1.0, 0.01),  # 16 heads of one KV head: two blocks of 8
    (1, 2, 2, 100, 128, 1, 1.0, 0.01),  # MHA: one head per block
    (1, 6, 2, 50, 40, 1, 1.0, 0.01),  # head_dim 40: 8-byte rows, a group of 3
    (1, 4, 1, 33, 136, 1, 1.0, 0.01),  # head_dim 136: 8-byte rows, the 8-warp kernel
    (1, 8, 1, 200, 256, 2, 1.0, 0.01),  # head_dim 256: two 128-column value chunks, 2 splits
    (1, 4, 1, 400, 128, 4, 30.0, 1.0),  # scores in the hundreds: the lazy rescale
    (1, 4, 1, 2400, 128, 12, 5.0, 1.0),  # 10 splits: the final merge's two steps of 8
    (1, 4, 1, 64, 128, 1, 1.0, 300.0),  # keys past float16's range once scaled
]


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: "x".join(map(str, c[:6])))
def test_cuda_editorial_kernel_on_the_cpu_model(cpu_model_library, case):
    batch, q_heads, kv_heads, cache_len, head_dim, resident, q_std, k_scale_max = case
    rng = np.random.default_rng(sum(case[:6]))
    codes = np.array(FINITE_CODES, dtype=np.uint8)
    Q = (rng.standard_normal((batch, q_heads, head_dim)) * q_std).astype(np.float32)
    K_fp8 = rng.choice(codes, (batch, kv_heads, cache_len, head_dim))
    V_fp8 = rng.choice(codes, (batch, kv_heads, cache_len, head_dim))
    k_scale = rng.uniform(k_scale_max / 10, k_scale_max, kv_heads).astype(np.float32)
    v_scale = rng.uniform(0.001, 0.01, kv_heads).astype(np.float32)
    out = np.full((batch, q_heads, head_dim), np.nan, dtype=np.float32)
    floats, bytes_ = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_uint8)
    splits = cpu_model_library.fp8_cpu_model(
        Q.ctypes.data_as(floats),
        K_fp8.ctypes.data_as(bytes_),
        V_fp8.ctypes.data_as(bytes_),
        k_scale.ctypes.data_as(floats),
        v_scale.ctypes.data_as(floats),
        out.ctypes.data_as(floats),
        *case[:6],
    )
    assert splits >= 1, "a merge counter was left nonzero"
    assert splits == planned_splits(*case[:6])
    expected = fp8_kv_attention_oracle(Q, K_fp8, V_fp8, k_scale, v_scale)
    assert np.isfinite(out).all()
    # exact products (float16 hi/lo operands): within a tenth of the judge's tolerance
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shape, resident, splits",
    [
        ((4, 32, 8, 32768, 128), 132, 4),  # the performance test: 32 blocks, 4 splits each
        ((1, 32, 8, 32768, 128), 132, 16),  # 8 blocks fill 128 of the 132 slots
        ((1, 64, 1, 1000, 256), 132, 8),  # 8 blocks of 8 heads: 8 splits of one 128-token step
        ((64, 64, 64, 1024, 128), 132, 1),  # more blocks than the GPU holds: no split
    ],
)
def test_the_plan_fills_one_wave_of_resident_blocks(cpu_model_library, shape, resident, splits):
    assert cpu_model_library.fp8_plan_splits(*shape, resident) == splits
    assert planned_splits(*shape, resident) == splits
