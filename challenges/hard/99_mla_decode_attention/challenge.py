import ctypes
import math
from typing import Any, Dict, List

import torch
from core.challenge_base import ChallengeBase, OutTensor, RandnTensor

# name, batch_size, num_heads, cache_len, kv_lora_rank, rope_dim, softmax_scale, input kind
FUNCTIONAL_CASES = [
    ("cache_len_1_one_head", 1, 1, 1, 16, 8, 0.25, "randn"),
    ("cache_len_2", 2, 4, 2, 32, 8, 1.0 / math.sqrt(40), "randn"),
    ("cache_len_3_smallest_rank", 3, 16, 3, 16, 16, 0.5, "randn"),
    ("batch_64_short_caches", 64, 2, 5, 16, 8, 0.3, "randn"),
    ("one_head_long_cache", 2, 1, 2500, 64, 32, 0.125, "randn"),
    ("zero_query_uniform_weights", 2, 8, 300, 256, 64, 1.0 / math.sqrt(320), "zero_query"),
    ("non_power_of_two_sizes", 3, 20, 777, 144, 24, 0.09, "randn"),
    ("large_scores_need_max_subtraction", 1, 16, 512, 128, 32, 1.0 / math.sqrt(160), "large"),
    ("large_softmax_scale", 2, 32, 600, 96, 40, 2.0, "randn"),
    ("deepseek_128_heads_rank_512", 1, 128, 1024, 512, 64, 1.0 / math.sqrt(192), "randn"),
]


class Challenge(ChallengeBase):
    name = "Multi-head Latent Attention Decode"
    atol = 1e-03
    rtol = 1e-03
    num_gpus = 1
    access_tier = "free"

    def reference_impl(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        kv_c: torch.Tensor,
        k_pe: torch.Tensor,
        output: torch.Tensor,
        batch_size: int,
        num_heads: int,
        cache_len: int,
        kv_lora_rank: int,
        rope_dim: int,
        softmax_scale: float,
    ):
        assert q_nope.shape == (batch_size, num_heads, kv_lora_rank)
        assert q_pe.shape == (batch_size, num_heads, rope_dim)
        assert kv_c.shape == (batch_size, cache_len, kv_lora_rank)
        assert k_pe.shape == (batch_size, cache_len, rope_dim)
        assert output.shape == (batch_size, num_heads, kv_lora_rank)
        assert q_nope.dtype == q_pe.dtype == kv_c.dtype == k_pe.dtype == torch.float32
        assert output.dtype == torch.float32

        # every head reads the same latent row kv_c[b, t] and rotary key k_pe[b, t]
        scores = torch.matmul(q_nope, kv_c.transpose(1, 2))  # (B, H, T)
        scores = scores + torch.matmul(q_pe, k_pe.transpose(1, 2))
        weights = torch.softmax(scores * softmax_scale, dim=-1)
        output.copy_(torch.matmul(weights, kv_c))  # (B, H, R): the latent row is also the value

    def reference_impl_jax(
        self,
        q_nope,
        q_pe,
        kv_c,
        k_pe,
        batch_size: int,
        num_heads: int,
        cache_len: int,
        kv_lora_rank: int,
        rope_dim: int,
        softmax_scale: float,
    ):
        import jax
        import jax.numpy as jnp

        scores = jnp.einsum("bhr,btr->bht", q_nope, kv_c, precision="highest")
        scores = scores + jnp.einsum("bhp,btp->bht", q_pe, k_pe, precision="highest")
        weights = jax.nn.softmax(scores * softmax_scale, axis=-1)
        return jnp.einsum("bht,btr->bhr", weights, kv_c, precision="highest")

    def get_solve_signature(self) -> Dict[str, tuple]:
        return {
            "q_nope": (ctypes.POINTER(ctypes.c_float), "in"),
            "q_pe": (ctypes.POINTER(ctypes.c_float), "in"),
            "kv_c": (ctypes.POINTER(ctypes.c_float), "in"),
            "k_pe": (ctypes.POINTER(ctypes.c_float), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "batch_size": (ctypes.c_int, "in"),
            "num_heads": (ctypes.c_int, "in"),
            "cache_len": (ctypes.c_int, "in"),
            "kv_lora_rank": (ctypes.c_int, "in"),
            "rope_dim": (ctypes.c_int, "in"),
            "softmax_scale": (ctypes.c_float, "in"),
        }

    def get_bytes_moved(self, **kwargs) -> int:
        """Bytes one call must move at least: every input read once (the latent cache
        ``kv_c`` and rotary keys ``k_pe`` dominate: all heads share them) and the output
        written once. Keyword arguments are ``solve``'s; returns a byte count."""
        names = ("q_nope", "q_pe", "kv_c", "k_pe", "output")
        return sum(kwargs[n].numel() * kwargs[n].element_size() for n in names)

    def get_flops(self, **kwargs) -> int:
        """Floating-point operations of one call, counted as multiply-adds x 2: per (batch,
        head, cached token) the score takes 2 * (kv_lora_rank + rope_dim) and the weighted
        sum of the latent row 2 * kv_lora_rank; the softmax's exponentials and sums are not
        counted. Keyword arguments are ``solve``'s; returns an operation count."""
        rows = kwargs["batch_size"] * kwargs["num_heads"] * kwargs["cache_len"]
        return 2 * rows * (2 * kwargs["kv_lora_rank"] + kwargs["rope_dim"])

    def _make_test_case(self, q_nope, q_pe, kv_c, k_pe, softmax_scale) -> Dict[str, Any]:
        batch_size, num_heads, kv_lora_rank = q_nope.shape
        _, cache_len, rope_dim = k_pe.shape
        return {
            "q_nope": q_nope,
            "q_pe": q_pe,
            "kv_c": kv_c,
            "k_pe": k_pe,
            "output": torch.empty_like(q_nope),
            "batch_size": batch_size,
            "num_heads": num_heads,
            "cache_len": cache_len,
            "kv_lora_rank": kv_lora_rank,
            "rope_dim": rope_dim,
            "softmax_scale": float(softmax_scale),
        }

    def _random_case(self, batch, heads, cache_len, rank, rope, scale, kind) -> Dict[str, Any]:
        def randn(*shape, std=1.0):
            return torch.randn(shape, device=self.device, dtype=torch.float32) * std

        q_nope, q_pe = randn(batch, heads, rank), randn(batch, heads, rope)
        kv_c, k_pe = randn(batch, cache_len, rank), randn(batch, cache_len, rope)
        if kind == "zero_query":
            q_nope, q_pe = torch.zeros_like(q_nope), torch.zeros_like(q_pe)
        elif kind == "large":
            # scores with a spread of ~50: exp() overflows float32 without max-subtraction
            q_nope, q_pe = q_nope * 50.0, q_pe * 50.0
        return self._make_test_case(q_nope, q_pe, kv_c, k_pe, scale)

    def generate_example_test(self) -> Dict[str, Any]:
        def rows(*values):
            return torch.tensor(values, device=self.device, dtype=torch.float32)

        ones4, zeros4 = [1.0] * 4, [0.0] * 4
        q_nope = rows(ones4 + zeros4 * 3, zeros4 + ones4 + zeros4 * 2)[None]
        q_pe = rows([0.0] * 8, [1.0] + [0.0] * 7)[None]
        kv_c = rows(ones4 + zeros4 * 3, zeros4 + ones4 + zeros4 * 2, [0.5] * 16)[None]
        k_pe = rows([0.0] * 8, [2.0] + [0.0] * 7, [0.0] * 8)[None]
        return self._make_test_case(q_nope, q_pe, kv_c, k_pe, 0.5)

    def get_functional_test_names(self) -> List[str]:
        return [case[0] for case in FUNCTIONAL_CASES]

    def generate_functional_test(self) -> List[Dict[str, Any]]:
        return [self._random_case(*case[1:]) for case in FUNCTIONAL_CASES]

    def generate_performance_test(self) -> Dict[str, Any]:
        batch_size, num_heads, cache_len, kv_lora_rank, rope_dim = 16, 128, 8192, 512, 64
        return {
            "q_nope": RandnTensor((batch_size, num_heads, kv_lora_rank)),
            "q_pe": RandnTensor((batch_size, num_heads, rope_dim)),
            "kv_c": RandnTensor((batch_size, cache_len, kv_lora_rank)),
            "k_pe": RandnTensor((batch_size, cache_len, rope_dim)),
            "output": OutTensor((batch_size, num_heads, kv_lora_rank)),
            "batch_size": batch_size,
            "num_heads": num_heads,
            "cache_len": cache_len,
            "kv_lora_rank": kv_lora_rank,
            "rope_dim": rope_dim,
            "softmax_scale": 1.0 / math.sqrt(128 + 64),
        }
