"""The PyTorch (and JAX) references against the float64 NumPy oracles in tests/oracles.py."""

import math

import numpy as np
import pytest
import torch
from core.challenge_base import (
    FullTensor,
    OutTensor,
    RandIntTensor,
    RandnTensor,
    RandTensor,
    materialize_test,
)
from oracles import decode_attention_oracle, int8_kv_attention_oracle

from judge.challenges import find_challenge, functional_test_names, load_challenge

INPUTS = {
    "95": (decode_attention_oracle, ["Q", "K", "V"]),
    "96": (int8_kv_attention_oracle, ["Q", "K_int8", "V_int8", "k_scale", "v_scale"]),
}


@pytest.fixture(params=list(INPUTS))
def challenge(request):
    """Challenges 95 and 96 in turn, on the CPU (later challenges have test files of their own)."""
    return load_challenge(find_challenge(request.param), "cpu")


def challenge_id(challenge) -> str:
    return "95" if "Decode" in challenge.name else "96"


def check_against_oracle(challenge, test):
    oracle, names = INPUTS[challenge_id(challenge)]
    test = dict(test, output=torch.full_like(test["output"], float("nan")))
    challenge.reference_impl(**test)
    expected = oracle(*[test[n].numpy() for n in names])
    got = test["output"].numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=challenge.atol, rtol=challenge.rtol)


def test_example_and_functional_tests_match_oracle(challenge):
    torch.manual_seed(1)
    tests = [challenge.generate_example_test()] + challenge.generate_functional_test()
    for test in tests:
        check_against_oracle(challenge, test)


def test_functional_tests_are_named_and_cover_edges(challenge):
    tests = challenge.generate_functional_test()
    names = functional_test_names(challenge, len(tests))
    assert 7 <= len(tests) <= 10
    assert len(set(names)) == len(names) and not names[0].startswith("functional_")
    lengths = {t.get("cache_len", t.get("seq_len")) for t in tests}
    assert {1, 2, 3} <= lengths


def test_large_score_case_overflows_a_naive_softmax(challenge):
    torch.manual_seed(2)
    names = functional_test_names(challenge, len(challenge.generate_functional_test()))
    test = challenge.generate_functional_test()[names.index("large_scores_need_max_subtraction")]
    q = test["Q"].reshape(-1, test["head_dim"])[0]
    keys = (
        test["K"][0, 0] if "K" in test else test["K_int8"][0].float() * test["k_scale"][0, :, None]
    )
    scores = (keys @ q / math.sqrt(test["head_dim"])).to(torch.float32)
    assert torch.isinf(torch.exp(scores)).any()
    check_against_oracle(challenge, test)


def _edge_and_random_shapes_95(count: int):
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
    rng = np.random.default_rng(95)
    shapes = list(edges)
    while len(shapes) < count:
        kv = int(rng.choice([1, 2, 4, 8, 3, 5]))
        group = int(rng.choice([1, 2, 3, 4, 8]))
        batch = int(rng.integers(1, 17))
        head_dim = 8 * int(rng.integers(1, 33))
        cache_len = int(np.exp(rng.uniform(0, math.log(65536))))
        cache_len = max(1, min(cache_len, (1 << 21) // (batch * kv * head_dim)))
        shapes.append((batch, kv * group, kv, cache_len, head_dim))
    return shapes


def _edge_and_random_shapes_96(count: int):
    edges = [(64, 5, 8), (1, 32768, 8), (1, 1, 256), (64, 1, 8), (3, 2, 256), (1, 3, 8)]
    rng = np.random.default_rng(96)
    shapes = list(edges)
    while len(shapes) < count:
        heads = int(rng.integers(1, 65))
        head_dim = 8 * int(rng.integers(1, 33))
        seq_len = int(np.exp(rng.uniform(0, math.log(32768))))
        shapes.append((heads, max(1, min(seq_len, (1 << 21) // (heads * head_dim))), head_dim))
    return shapes


@pytest.mark.parametrize("shape", _edge_and_random_shapes_95(56))
def test_decode_attention_reference_on_random_shapes(shape):
    challenge = load_challenge(find_challenge("95"), "cpu")
    batch, q_heads, kv_heads, cache_len, head_dim = shape
    test = materialize_test(
        {
            "Q": RandnTensor((batch, q_heads, head_dim)),
            "K": RandnTensor((batch, kv_heads, cache_len, head_dim), std=2.0),
            "V": RandTensor((batch, kv_heads, cache_len, head_dim), -3.0, 3.0),
            "output": OutTensor((batch, q_heads, head_dim)),
            "batch_size": batch,
            "num_q_heads": q_heads,
            "num_kv_heads": kv_heads,
            "cache_len": cache_len,
            "head_dim": head_dim,
        },
        "cpu",
        seed=hash(shape) % 10_000,
    )
    check_against_oracle(challenge, test)


@pytest.mark.parametrize("shape", _edge_and_random_shapes_96(56))
def test_int8_attention_reference_on_random_shapes(shape):
    challenge = load_challenge(find_challenge("96"), "cpu")
    heads, seq_len, head_dim = shape
    kv = (heads, seq_len, head_dim)
    test = materialize_test(
        {
            "Q": RandnTensor((heads, head_dim), std=3.0),
            "K_int8": RandIntTensor(kv, -128, 128, "int8"),
            "V_int8": RandIntTensor(kv, -128, 128, "int8"),
            "k_scale": RandTensor((heads, seq_len), 1e-3, 0.1),
            "v_scale": RandTensor((heads, seq_len), 1e-3, 0.1),
            "output": OutTensor((heads, head_dim)),
            "num_heads": heads,
            "seq_len": seq_len,
            "head_dim": head_dim,
        },
        "cpu",
        seed=hash(shape) % 10_000,
    )
    check_against_oracle(challenge, test)


def test_jax_reference_matches_oracle(challenge):
    jax = pytest.importorskip("jax", reason="the jax extra is not installed")
    jax.config.update("jax_enable_x64", False)
    torch.manual_seed(3)
    oracle, names = INPUTS[challenge_id(challenge)]
    signature = challenge.get_solve_signature()
    for test in [challenge.generate_example_test()] + challenge.generate_functional_test():
        args = [
            jax.numpy.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v
            for k, v in test.items()
            if signature[k][1] == "in"
        ]
        got = np.asarray(challenge.reference_impl_jax(*args))
        expected = oracle(*[test[n].numpy() for n in names])
        np.testing.assert_allclose(got, expected, atol=challenge.atol, rtol=challenge.rtol)


def test_performance_test_is_declarative_with_issue_sizes(challenge):
    perf = challenge.generate_performance_test()
    specs = [v for v in perf.values() if not isinstance(v, (int, float))]
    assert specs and all(type(v).__name__.endswith("Tensor") for v in specs)
    sizes = {k: v for k, v in perf.items() if isinstance(v, int)}
    if challenge_id(challenge) == "95":
        assert sizes == dict(
            batch_size=4, num_q_heads=32, num_kv_heads=8, cache_len=16384, head_dim=128
        )
    else:
        assert sizes == dict(num_heads=32, seq_len=8192, head_dim=128)


class TestMaterialize:
    SPEC = {
        "a": RandTensor((3, 4), -2.0, -1.0),
        "b": RandnTensor((1000,), mean=5.0, std=0.1),
        "c": RandIntTensor((2000,), -128, 128, "int8"),
        "d": FullTensor((2, 2), 7.0),
        "out": OutTensor((5,), "float32"),
        "n": 3,
    }

    def test_same_seed_same_values_other_seed_other_values(self):
        one, two = materialize_test(self.SPEC, "cpu", 7), materialize_test(self.SPEC, "cpu", 7)
        other = materialize_test(self.SPEC, "cpu", 8)
        assert all(torch.equal(one[k], two[k]) for k in "abcd")
        assert not torch.equal(one["a"], other["a"]) and not torch.equal(one["c"], other["c"])

    def test_values_follow_the_spec(self):
        t = materialize_test(self.SPEC, "cpu", 1)
        assert t["a"].shape == (3, 4) and t["a"].min() >= -2.0 and t["a"].max() < -1.0
        assert abs(t["b"].mean().item() - 5.0) < 0.05 and abs(t["b"].std().item() - 0.1) < 0.02
        assert t["c"].dtype == torch.int8 and t["c"].min() == -128 and t["c"].max() == 127
        assert torch.equal(t["d"], torch.full((2, 2), 7.0))
        assert t["out"].shape == (5,) and t["n"] == 3 and list(t) == list(self.SPEC)

    def test_meta_device_allocates_nothing_and_tensors_pass_through(self):
        big = {"x": RandnTensor((1 << 20, 1 << 20)), "y": torch.ones(2)}
        t = materialize_test(big, "meta", 0)
        assert t["x"].is_meta and t["x"].shape == (1 << 20, 1 << 20)
        assert materialize_test({"y": big["y"]}, "cpu", 0)["y"] is big["y"]

    def test_unknown_dtype_is_a_clear_error(self):
        with pytest.raises(ValueError, match="unknown dtype 'float33'"):
            materialize_test({"x": RandnTensor((2,), dtype="float33")}, "cpu", 0)
