import ctypes
import math
from typing import Any, Dict, List

import torch
from core.challenge_base import ChallengeBase, OutTensor, RandIntTensor, RandnTensor, RandTensor

# name, num_heads, seq_len, head_dim, how the inputs are drawn
FUNCTIONAL_CASES = [
    ("seq_len_1", 1, 1, 8, "random"),
    ("seq_len_2", 2, 2, 16, "random"),
    ("seq_len_3", 4, 3, 8, "random"),
    ("zero_query_uniform_weights", 2, 64, 32, "zero_query"),
    ("all_negative_values", 3, 100, 24, "negative"),
    ("power_of_two_sizes", 16, 1024, 64, "random"),
    ("non_power_of_two_sizes", 12, 1000, 40, "random"),
    ("large_scores_need_max_subtraction", 8, 512, 128, "large_scores"),
    ("int8_extremes_64_heads_head_dim_256", 64, 300, 256, "extremes"),
    ("realistic_decode_step", 32, 4096, 128, "random"),
]


class Challenge(ChallengeBase):
    name = "INT8 KV-Cache Attention"
    atol = 1e-03
    rtol = 1e-03
    num_gpus = 1
    access_tier = "free"

    def reference_impl(
        self,
        Q: torch.Tensor,
        K_int8: torch.Tensor,
        V_int8: torch.Tensor,
        k_scale: torch.Tensor,
        v_scale: torch.Tensor,
        output: torch.Tensor,
        num_heads: int,
        seq_len: int,
        head_dim: int,
    ):
        assert Q.shape == (num_heads, head_dim)
        assert K_int8.shape == (num_heads, seq_len, head_dim)
        assert V_int8.shape == (num_heads, seq_len, head_dim)
        assert k_scale.shape == (num_heads, seq_len)
        assert v_scale.shape == (num_heads, seq_len)
        assert output.shape == (num_heads, head_dim)
        assert K_int8.dtype == V_int8.dtype == torch.int8
        assert Q.dtype == k_scale.dtype == v_scale.dtype == output.dtype == torch.float32

        # dequantize: one float32 scale per (head, token)
        K = K_int8.to(torch.float32) * k_scale.unsqueeze(-1)  # (H, S, D)
        V = V_int8.to(torch.float32) * v_scale.unsqueeze(-1)  # (H, S, D)

        scores = torch.matmul(K, Q.unsqueeze(-1)).squeeze(-1) / math.sqrt(head_dim)  # (H, S)
        weights = torch.softmax(scores, dim=-1)
        output.copy_(torch.matmul(weights.unsqueeze(1), V).squeeze(1))

    def reference_impl_jax(
        self, Q, K_int8, V_int8, k_scale, v_scale, num_heads: int, seq_len: int, head_dim: int
    ):
        import jax
        import jax.numpy as jnp

        K = K_int8.astype(jnp.float32) * k_scale[:, :, None]
        V = V_int8.astype(jnp.float32) * v_scale[:, :, None]
        scores = jnp.einsum("hsd,hd->hs", K, Q, precision="highest") / math.sqrt(head_dim)
        weights = jax.nn.softmax(scores, axis=-1)
        return jnp.einsum("hs,hsd->hd", weights, V, precision="highest")

    def get_solve_signature(self) -> Dict[str, tuple]:
        return {
            "Q": (ctypes.POINTER(ctypes.c_float), "in"),
            "K_int8": (ctypes.POINTER(ctypes.c_int8), "in"),
            "V_int8": (ctypes.POINTER(ctypes.c_int8), "in"),
            "k_scale": (ctypes.POINTER(ctypes.c_float), "in"),
            "v_scale": (ctypes.POINTER(ctypes.c_float), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "num_heads": (ctypes.c_int, "in"),
            "seq_len": (ctypes.c_int, "in"),
            "head_dim": (ctypes.c_int, "in"),
        }

    def _make_test_case(self, Q, K_int8, V_int8, k_scale, v_scale) -> Dict[str, Any]:
        num_heads, seq_len, head_dim = K_int8.shape
        return {
            "Q": Q,
            "K_int8": K_int8,
            "V_int8": V_int8,
            "k_scale": k_scale,
            "v_scale": v_scale,
            "output": torch.empty_like(Q),
            "num_heads": num_heads,
            "seq_len": seq_len,
            "head_dim": head_dim,
        }

    def _random_case(self, num_heads, seq_len, head_dim, kind) -> Dict[str, Any]:
        kv_shape = (num_heads, seq_len, head_dim)
        device = self.device

        def int8(low, high):
            return torch.randint(low, high, kv_shape, device=device, dtype=torch.int8)

        def scales(low, high):
            return torch.empty(num_heads, seq_len, device=device).uniform_(low, high)

        Q = torch.randn(num_heads, head_dim, device=device)
        K_int8, V_int8 = int8(-128, 128), int8(-128, 128)
        k_scale, v_scale = scales(0.005, 0.05), scales(0.005, 0.05)
        if kind == "zero_query":
            Q = torch.zeros(num_heads, head_dim, device=device)
        elif kind == "negative":
            Q, K_int8, V_int8 = -Q.abs() - 0.01, int8(-128, 0), int8(-128, 0)
        elif kind == "large_scores":
            # scores of a few hundred: exp() overflows float32 without max-subtraction
            Q, k_scale = Q * 20.0, scales(0.05, 0.1)
        elif kind == "extremes":
            extremes = torch.tensor([-128, 127], device=device, dtype=torch.int8)
            K_int8 = extremes[torch.randint(0, 2, kv_shape, device=device)]
            V_int8 = extremes[torch.randint(0, 2, kv_shape, device=device)]
        return self._make_test_case(Q, K_int8, V_int8, k_scale, v_scale)

    def generate_example_test(self) -> Dict[str, Any]:
        device = self.device
        Q = torch.tensor(
            [
                [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
                [0.0, 2.0, 0.0, 2.0, 0.0, 2.0, 0.0, 2.0],
            ],
            device=device,
        )
        K_int8 = torch.tensor(
            [
                [
                    [10, 0, 10, 0, 10, 0, 10, 0],
                    [0, 10, 0, 10, 0, 10, 0, 10],
                    [-10, 0, -10, 0, -10, 0, -10, 0],
                ],
                [
                    [5, 5, 5, 5, 5, 5, 5, 5],
                    [0, -20, 0, -20, 0, -20, 0, -20],
                    [127, 0, 0, 0, 0, 0, 0, -128],
                ],
            ],
            device=device,
            dtype=torch.int8,
        )
        V_int8 = torch.tensor(
            [
                [
                    [100, 0, 0, 0, 0, 0, 0, 0],
                    [0, 100, 0, 0, 0, 0, 0, 0],
                    [0, 0, 100, 0, 0, 0, 0, 0],
                ],
                [
                    [50, 50, 50, 50, 0, 0, 0, 0],
                    [0, 0, 0, 0, -50, -50, -50, -50],
                    [1, 2, 3, 4, 5, 6, 7, 8],
                ],
            ],
            device=device,
            dtype=torch.int8,
        )
        k_scale = torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.05, 0.01]], device=device)
        v_scale = torch.tensor([[0.01, 0.01, 0.01], [0.02, 0.02, 0.5]], device=device)
        return self._make_test_case(Q, K_int8, V_int8, k_scale, v_scale)

    def get_functional_test_names(self) -> List[str]:
        return [case[0] for case in FUNCTIONAL_CASES]

    def generate_functional_test(self) -> List[Dict[str, Any]]:
        return [self._random_case(*case[1:]) for case in FUNCTIONAL_CASES]

    def generate_performance_test(self) -> Dict[str, Any]:
        num_heads, seq_len, head_dim = 32, 8192, 128
        return {
            "Q": RandnTensor((num_heads, head_dim)),
            "K_int8": RandIntTensor((num_heads, seq_len, head_dim), -128, 128, "int8"),
            "V_int8": RandIntTensor((num_heads, seq_len, head_dim), -128, 128, "int8"),
            "k_scale": RandTensor((num_heads, seq_len), 0.005, 0.05),
            "v_scale": RandTensor((num_heads, seq_len), 0.005, 0.05),
            "output": OutTensor((num_heads, head_dim)),
            "num_heads": num_heads,
            "seq_len": seq_len,
            "head_dim": head_dim,
        }
