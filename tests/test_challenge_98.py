"""Challenge 98 (FP8 KV-cache attention): the E4M3 decoding, the reference and the JAX reference
against the float64 oracle, the named tests' coverage, the performance test's sizes, and the
CUDA solutions through nvcc.

The Python-language solutions run on the CPU, the CuTe DSL and Mojo ones are compiled, and
every solution runs on a GPU, in the tests that cover every folder of solutions/
(tests/test_judge.py, tests/test_gpu.py).
"""

import math
import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import requires_nvcc
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
