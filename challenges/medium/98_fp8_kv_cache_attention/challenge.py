import ctypes
import math
from typing import Any, Dict, List

import torch
from core.challenge_base import ChallengeBase, OutTensor, RandIntTensor, RandnTensor, RandTensor

# E4M3 (torch.float8_e4m3fn) has no infinities and two NaN codes, S.1111.111: 0x7F and 0xFF.
# No test contains them; the other 254 byte values are finite.
NAN_CODES = (0x7F, 0xFF)

# name, batch_size, num_q_heads, num_kv_heads, cache_len, head_dim, how the inputs are drawn
FUNCTIONAL_CASES = [
    ("cache_len_1_mqa", 1, 4, 1, 1, 8, "random"),
    ("cache_len_2_mha", 2, 2, 2, 2, 16, "random"),
    ("cache_len_3_gqa", 1, 8, 2, 3, 8, "random"),
    ("every_e4m3_code_subnormals_and_zeros", 1, 2, 1, 127, 16, "every_code"),
    ("extreme_scales_tiny_and_large", 1, 4, 2, 200, 32, "extreme_scales"),
    ("large_scores_need_max_subtraction", 1, 8, 2, 512, 128, "large_scores"),
    ("mqa_64_heads_head_dim_256", 1, 64, 1, 300, 256, "random"),
    ("mha_non_power_of_two_sizes", 3, 6, 6, 1000, 40, "random"),
    ("gqa_group_3_odd_sizes", 2, 15, 5, 777, 24, "random"),
    ("realistic_decode_step", 1, 32, 8, 4096, 128, "random"),
]


class Challenge(ChallengeBase):
    name = "FP8 KV-Cache Attention"
    atol = 1e-04
    rtol = 1e-04
    num_gpus = 1
    access_tier = "free"

    def reference_impl(
        self,
        Q: torch.Tensor,
        K_fp8: torch.Tensor,
        V_fp8: torch.Tensor,
        k_scale: torch.Tensor,
        v_scale: torch.Tensor,
        output: torch.Tensor,
        batch_size: int,
        num_q_heads: int,
        num_kv_heads: int,
        cache_len: int,
        head_dim: int,
    ):
        assert num_q_heads % num_kv_heads == 0
        kv_shape = (batch_size, num_kv_heads, cache_len, head_dim)
        assert Q.shape == (batch_size, num_q_heads, head_dim)
        assert K_fp8.shape == kv_shape and V_fp8.shape == kv_shape
        assert k_scale.shape == (num_kv_heads,) and v_scale.shape == (num_kv_heads,)
        assert output.shape == (batch_size, num_q_heads, head_dim)
        assert K_fp8.dtype == V_fp8.dtype == torch.uint8
        assert Q.dtype == k_scale.dtype == v_scale.dtype == output.dtype == torch.float32

        # dequantize: each byte is an E4M3 value, times its KV head's scale
        K = K_fp8.view(torch.float8_e4m3fn).to(torch.float32) * k_scale.view(1, -1, 1, 1)
        V = V_fp8.view(torch.float8_e4m3fn).to(torch.float32) * v_scale.view(1, -1, 1, 1)

        # query head h reads KV head h // group: view the queries as (B, Hkv, group, D)
        group = num_q_heads // num_kv_heads
        queries = Q.view(batch_size, num_kv_heads, group, head_dim)
        scores = torch.matmul(queries, K.transpose(-1, -2)) / math.sqrt(head_dim)  # (B, Hkv, G, S)
        weights = torch.softmax(scores, dim=-1)
        output.copy_(torch.matmul(weights, V).view(batch_size, num_q_heads, head_dim))

    def reference_impl_jax(
        self,
        Q,
        K_fp8,
        V_fp8,
        k_scale,
        v_scale,
        batch_size: int,
        num_q_heads: int,
        num_kv_heads: int,
        cache_len: int,
        head_dim: int,
    ):
        import jax
        import jax.numpy as jnp

        def dequantize(codes, scale):
            values = jax.lax.bitcast_convert_type(codes, jnp.float8_e4m3fn).astype(jnp.float32)
            return values * scale[None, :, None, None]

        K, V = dequantize(K_fp8, k_scale), dequantize(V_fp8, v_scale)
        group = num_q_heads // num_kv_heads
        q = Q.reshape(batch_size, num_kv_heads, group, head_dim)
        scores = jnp.einsum("bhgd,bhsd->bhgs", q, K, precision="highest") / math.sqrt(head_dim)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhgs,bhsd->bhgd", weights, V, precision="highest")
        return out.reshape(batch_size, num_q_heads, head_dim)

    def get_solve_signature(self) -> Dict[str, tuple]:
        return {
            "Q": (ctypes.POINTER(ctypes.c_float), "in"),
            "K_fp8": (ctypes.POINTER(ctypes.c_uint8), "in"),
            "V_fp8": (ctypes.POINTER(ctypes.c_uint8), "in"),
            "k_scale": (ctypes.POINTER(ctypes.c_float), "in"),
            "v_scale": (ctypes.POINTER(ctypes.c_float), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "batch_size": (ctypes.c_int, "in"),
            "num_q_heads": (ctypes.c_int, "in"),
            "num_kv_heads": (ctypes.c_int, "in"),
            "cache_len": (ctypes.c_int, "in"),
            "head_dim": (ctypes.c_int, "in"),
        }

    def _make_test_case(self, Q, K_fp8, V_fp8, k_scale, v_scale) -> Dict[str, Any]:
        batch_size, num_q_heads, head_dim = Q.shape
        _, num_kv_heads, cache_len, _ = K_fp8.shape
        return {
            "Q": Q,
            "K_fp8": K_fp8,
            "V_fp8": V_fp8,
            "k_scale": k_scale,
            "v_scale": v_scale,
            "output": torch.empty_like(Q),
            "batch_size": batch_size,
            "num_q_heads": num_q_heads,
            "num_kv_heads": num_kv_heads,
            "cache_len": cache_len,
            "head_dim": head_dim,
        }

    def _codes(self, shape, positive_only: bool = False) -> torch.Tensor:
        """Uniformly random E4M3 codes of ``shape`` as uint8, never a NaN code: every finite
        value (both zeros and the subnormals included), or only the non-negative ones."""
        high = 127 if positive_only else 254
        drawn = torch.randint(0, high, shape, device=self.device, dtype=torch.int32)
        return (drawn + (drawn >= 0x7F).to(torch.int32)).to(torch.uint8)  # skip 0x7F (and 0xFF)

    def _every_code(self, shape) -> torch.Tensor:
        """Each of the 254 finite E4M3 codes equally often, shuffled; numel divisible by 254."""
        finite = torch.tensor(
            [c for c in range(256) if c not in NAN_CODES], device=self.device, dtype=torch.uint8
        )
        count = math.prod(shape)
        tiled = finite.repeat(count // len(finite))
        return tiled[torch.randperm(count, device=self.device)].view(shape)

    def _random_case(self, batch, q_heads, kv_heads, cache_len, head_dim, kind) -> Dict[str, Any]:
        device = self.device
        kv_shape = (batch, kv_heads, cache_len, head_dim)

        def scales(low, high):
            return torch.empty(kv_heads, device=device).uniform_(low, high)

        # random codes decode to an RMS of about 100 (their maximum is 448): scales near 0.01
        # give dequantized keys and values of RMS about 1
        Q = torch.randn(batch, q_heads, head_dim, device=device)
        K_fp8, V_fp8 = self._codes(kv_shape), self._codes(kv_shape)
        k_scale, v_scale = scales(0.005, 0.02), scales(0.005, 0.02)
        if kind == "every_code":
            K_fp8, V_fp8 = self._every_code(kv_shape), self._every_code(kv_shape)
        elif kind == "extreme_scales":
            # KV head 0: a key scale of 3e-7 (its subnormal codes dequantize to ~6e-10) and a
            # value scale of 600 (values up to 2.7e5, past float16's 65504), positive values so
            # that the outputs are large, not cancelled; KV head 1: a key scale of 400 (keys up
            # to 1.8e5) with queries of ~4e-5. The queries are sized so the scores stay O(1).
            assert kv_heads == 2
            group = q_heads // kv_heads
            k_scale = torch.tensor([3e-7, 400.0], device=device)
            v_scale = torch.tensor([600.0, 2e-3], device=device)
            Q[:, :group] *= 5e4
            Q[:, group:] *= 4e-5
            V_fp8[:, 0] = self._codes(V_fp8[:, 0].shape, positive_only=True)
        elif kind == "large_scores":
            # scores of a hundred and more: exp() overflows float32 without max-subtraction.
            # Small values keep float32's rounding of such scores well inside the tolerance.
            Q, k_scale, v_scale = Q * 6.0, scales(0.05, 0.1), scales(0.002, 0.005)
        return self._make_test_case(Q, K_fp8, V_fp8, k_scale, v_scale)

    def generate_example_test(self) -> Dict[str, Any]:
        device = self.device
        Q = torch.tensor(
            [
                [
                    [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
                    [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
                    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                    [0.5, -0.5, 0.5, -0.5, 0.5, -0.5, 0.5, -0.5],
                ]
            ],
            device=device,
        )
        # 0x38 = 56 is 1.0, 0x40 = 64 is 2.0, 0x30 = 48 is 0.5, 0xB8 = 184 is -1.0,
        # 0xB0 = 176 is -0.5, 0x80 = 128 is -0.0, 0x7E = 126 is 448, 0x01 is 2^-9
        K_fp8 = torch.tensor(
            [
                [
                    [
                        [56, 0, 56, 0, 56, 0, 56, 0],
                        [0, 64, 0, 64, 0, 64, 0, 64],
                        [184, 128, 184, 128, 184, 128, 184, 128],
                    ],
                    [
                        [64, 64, 64, 64, 0, 0, 0, 0],
                        [126, 0, 0, 0, 0, 0, 0, 1],
                        [48, 176, 48, 176, 48, 176, 48, 176],
                    ],
                ]
            ],
            device=device,
            dtype=torch.uint8,
        )
        # 0x48 = 72 is 4.0, 0xC0 = 192 is -2.0, 0x08 = 8 is 2^-6 (the smallest normal)
        V_fp8 = torch.tensor(
            [
                [
                    [
                        [56, 0, 0, 0, 0, 0, 0, 0],
                        [0, 56, 0, 0, 0, 0, 0, 0],
                        [0, 0, 56, 0, 0, 0, 0, 184],
                    ],
                    [
                        [72, 72, 72, 72, 0, 0, 0, 0],
                        [0, 0, 0, 0, 192, 192, 192, 192],
                        [8, 8, 8, 8, 8, 8, 8, 8],
                    ],
                ]
            ],
            device=device,
            dtype=torch.uint8,
        )
        k_scale = torch.tensor([0.5, 0.01], device=device)
        v_scale = torch.tensor([2.0, 0.25], device=device)
        return self._make_test_case(Q, K_fp8, V_fp8, k_scale, v_scale)

    def get_functional_test_names(self) -> List[str]:
        return [case[0] for case in FUNCTIONAL_CASES]

    def generate_functional_test(self) -> List[Dict[str, Any]]:
        return [self._random_case(*case[1:]) for case in FUNCTIONAL_CASES]

    def generate_performance_test(self) -> Dict[str, Any]:
        batch_size, num_q_heads, num_kv_heads, cache_len, head_dim = 4, 32, 8, 32768, 128
        kv_shape = (batch_size, num_kv_heads, cache_len, head_dim)
        # A declarative spec draws one range of bytes, and the NaN codes 0x7F and 0xFF split
        # the bytes into two finite ranges: keys take the positive codes 0x00-0x7E, values the
        # negative codes 0x80-0xFE (the functional tests mix both signs in both).
        return {
            "Q": RandnTensor((batch_size, num_q_heads, head_dim)),
            "K_fp8": RandIntTensor(kv_shape, 0x00, 0x7F, "uint8"),
            "V_fp8": RandIntTensor(kv_shape, 0x80, 0xFF, "uint8"),
            "k_scale": RandTensor((num_kv_heads,), 0.005, 0.02),
            "v_scale": RandTensor((num_kv_heads,), 0.005, 0.02),
            "output": OutTensor((batch_size, num_q_heads, head_dim)),
            "batch_size": batch_size,
            "num_q_heads": num_q_heads,
            "num_kv_heads": num_kv_heads,
            "cache_len": cache_len,
            "head_dim": head_dim,
        }
