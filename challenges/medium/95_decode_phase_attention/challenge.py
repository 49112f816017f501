import ctypes
import math
from typing import Any, Dict, List

import torch
from core.challenge_base import ChallengeBase, OutTensor, RandnTensor

# name, batch_size, num_q_heads, num_kv_heads, cache_len, head_dim, how the inputs are drawn
FUNCTIONAL_CASES = [
    ("cache_len_1_mqa", 1, 4, 1, 1, 8, "randn"),
    ("cache_len_2_mha", 2, 2, 2, 2, 16, "randn"),
    ("cache_len_3_gqa", 1, 8, 2, 3, 8, "randn"),
    ("zero_query_uniform_weights", 1, 4, 2, 64, 32, "zero_query"),
    ("all_negative_values", 2, 4, 4, 100, 24, "negative"),
    ("power_of_two_sizes", 2, 16, 4, 1024, 64, "randn"),
    ("non_power_of_two_sizes", 3, 12, 3, 1000, 40, "randn"),
    ("large_scores_need_max_subtraction", 1, 8, 2, 512, 128, "large_scores"),
    ("mqa_64_heads_head_dim_256", 1, 64, 1, 300, 256, "randn"),
    ("realistic_llama_gqa", 2, 32, 8, 4096, 128, "randn"),
]


class Challenge(ChallengeBase):
    name = "Decode-Phase Attention"
    atol = 1e-04
    rtol = 1e-04
    num_gpus = 1
    access_tier = "free"

    def reference_impl(
        self,
        Q: torch.Tensor,
        K: torch.Tensor,
        V: torch.Tensor,
        output: torch.Tensor,
        batch_size: int,
        num_q_heads: int,
        num_kv_heads: int,
        cache_len: int,
        head_dim: int,
    ):
        assert num_q_heads % num_kv_heads == 0
        assert Q.shape == (batch_size, num_q_heads, head_dim)
        assert K.shape == (batch_size, num_kv_heads, cache_len, head_dim)
        assert V.shape == (batch_size, num_kv_heads, cache_len, head_dim)
        assert output.shape == (batch_size, num_q_heads, head_dim)
        assert Q.dtype == K.dtype == V.dtype == output.dtype == torch.float32

        # query head h reads KV head h // group: repeat each KV head for its group
        group = num_q_heads // num_kv_heads
        K_heads = K.repeat_interleave(group, dim=1)  # (B, Hq, S, D)
        V_heads = V.repeat_interleave(group, dim=1)  # (B, Hq, S, D)

        scores = torch.matmul(Q.unsqueeze(2), K_heads.transpose(2, 3)).squeeze(2)  # (B, Hq, S)
        weights = torch.softmax(scores / math.sqrt(head_dim), dim=-1)
        output.copy_(torch.matmul(weights.unsqueeze(2), V_heads).squeeze(2))

    def reference_impl_jax(
        self,
        Q,
        K,
        V,
        batch_size: int,
        num_q_heads: int,
        num_kv_heads: int,
        cache_len: int,
        head_dim: int,
    ):
        import jax
        import jax.numpy as jnp

        group = num_q_heads // num_kv_heads
        q = Q.reshape(batch_size, num_kv_heads, group, head_dim)
        scores = jnp.einsum("bhgd,bhsd->bhgs", q, K, precision="highest") / math.sqrt(head_dim)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhgs,bhsd->bhgd", weights, V, precision="highest")
        return out.reshape(batch_size, num_q_heads, head_dim)

    def get_solve_signature(self) -> Dict[str, tuple]:
        return {
            "Q": (ctypes.POINTER(ctypes.c_float), "in"),
            "K": (ctypes.POINTER(ctypes.c_float), "in"),
            "V": (ctypes.POINTER(ctypes.c_float), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "batch_size": (ctypes.c_int, "in"),
            "num_q_heads": (ctypes.c_int, "in"),
            "num_kv_heads": (ctypes.c_int, "in"),
            "cache_len": (ctypes.c_int, "in"),
            "head_dim": (ctypes.c_int, "in"),
        }

    def _make_test_case(self, Q, K, V) -> Dict[str, Any]:
        batch_size, num_q_heads, head_dim = Q.shape
        _, num_kv_heads, cache_len, _ = K.shape
        return {
            "Q": Q,
            "K": K,
            "V": V,
            "output": torch.empty_like(Q),
            "batch_size": batch_size,
            "num_q_heads": num_q_heads,
            "num_kv_heads": num_kv_heads,
            "cache_len": cache_len,
            "head_dim": head_dim,
        }

    def _random_case(self, batch, q_heads, kv_heads, cache_len, head_dim, kind) -> Dict[str, Any]:
        q_shape = (batch, q_heads, head_dim)
        kv_shape = (batch, kv_heads, cache_len, head_dim)

        def randn(shape, std=1.0):
            return torch.randn(shape, device=self.device, dtype=torch.float32) * std

        Q, K, V = randn(q_shape), randn(kv_shape), randn(kv_shape)
        if kind == "zero_query":
            Q = torch.zeros(q_shape, device=self.device, dtype=torch.float32)
        elif kind == "negative":
            Q, K, V = -Q.abs() - 0.01, -K.abs() - 0.01, -V.abs() - 0.01
        elif kind == "large_scores":
            # scores of a few hundred: exp() overflows float32 without max-subtraction
            Q, K = randn(q_shape, 8.0), randn(kv_shape, 8.0)
        return self._make_test_case(Q, K, V)

    def generate_example_test(self) -> Dict[str, Any]:
        Q = torch.tensor(
            [
                [
                    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0],
                ]
            ],
            device=self.device,
            dtype=torch.float32,
        )
        K = torch.tensor(
            [
                [
                    [
                        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
                        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                    ]
                ]
            ],
            device=self.device,
            dtype=torch.float32,
        )
        V = torch.tensor(
            [
                [
                    [
                        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                    ]
                ]
            ],
            device=self.device,
            dtype=torch.float32,
        )
        return self._make_test_case(Q, K, V)

    def get_functional_test_names(self) -> List[str]:
        return [case[0] for case in FUNCTIONAL_CASES]

    def generate_functional_test(self) -> List[Dict[str, Any]]:
        return [self._random_case(*case[1:]) for case in FUNCTIONAL_CASES]

    def generate_performance_test(self) -> Dict[str, Any]:
        batch_size, num_q_heads, num_kv_heads, cache_len, head_dim = 4, 32, 8, 16384, 128
        return {
            "Q": RandnTensor((batch_size, num_q_heads, head_dim)),
            "K": RandnTensor((batch_size, num_kv_heads, cache_len, head_dim)),
            "V": RandnTensor((batch_size, num_kv_heads, cache_len, head_dim)),
            "output": OutTensor((batch_size, num_q_heads, head_dim)),
            "batch_size": batch_size,
            "num_q_heads": num_q_heads,
            "num_kv_heads": num_kv_heads,
            "cache_len": cache_len,
            "head_dim": head_dim,
        }
