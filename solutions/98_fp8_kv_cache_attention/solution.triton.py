"""FP8 KV-cache attention in Triton: one program per (query head, batch), online softmax.

Each program streams its KV head's uint8 codes in BLOCK_N-token tiles and decodes them from
their bits (sign, 4-bit exponent with bias 7, 3-bit mantissa, subnormals at exponent 0) into
float32. The KV head's key scale is folded into the query once and its value scale multiplies
the finished output, so no cached element is rescaled. A running maximum m, a running sum
row_sum and an unnormalized output acc are rescaled by exp(m_old - m_new) whenever the maximum
grows. Clear rather than fast: the query heads of a GQA group each re-read their KV head and
the grid has only batch_size * num_q_heads programs; the editorial version adds split-KV, GQA
packing and the GPU's own E4M3 conversion.
"""

import math
import os

import torch
import triton
import triton.language as tl


@triton.jit
def e4m3_to_float(code):
    """E4M3 codes (uint8) -> float32: (-1)^s * (8 + m) * 2^e / 1024, or m / 512 when e = 0."""
    bits = code.to(tl.int32)
    exponent = (bits >> 3) & 0xF
    mantissa = (bits & 0x7).to(tl.float32)
    normal = (8.0 + mantissa) * (1 << exponent).to(tl.float32) * (1.0 / 1024.0)
    magnitude = tl.where(exponent == 0, mantissa * (1.0 / 512.0), normal)
    return tl.where((bits & 0x80) != 0, -magnitude, magnitude)


@triton.jit
def fp8_attention_kernel(
    Q,  # (B, Hq, D) float32
    K,  # (B, Hkv, S, D) uint8 E4M3 codes
    V,  # (B, Hkv, S, D) uint8 E4M3 codes
    KScale,  # (Hkv,) float32
    VScale,  # (Hkv,) float32
    Out,  # (B, Hq, D) float32
    num_q_heads,  # Hq
    num_kv_heads,  # Hkv
    cache_len,  # S
    head_dim,  # D
    scale,  # 1 / sqrt(head_dim)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim rounded up to a power of two
):
    head = tl.program_id(0)
    batch = tl.program_id(1)
    kv_head = head // (num_q_heads // num_kv_heads)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < head_dim

    q = tl.load(Q + (batch * num_q_heads + head) * head_dim + dims, mask=dim_ok, other=0.0)
    q = q * (tl.load(KScale + kv_head) * scale)  # the key scale, folded into the query
    kv_base = (batch * num_kv_heads + kv_head).to(tl.int64) * cache_len * head_dim

    m = tl.full((), float("-inf"), tl.float32)
    row_sum = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for start in range(0, cache_len, BLOCK_N):
        tokens = start + tl.arange(0, BLOCK_N)
        tok_ok = tokens < cache_len
        offsets = kv_base + tokens[:, None] * head_dim + dims[None, :]
        tile_ok = tok_ok[:, None] & dim_ok[None, :]
        k = e4m3_to_float(tl.load(K + offsets, mask=tile_ok, other=0))
        scores = tl.sum(k * q[None, :], axis=1)
        scores = tl.where(tok_ok, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        correction = tl.exp(m - m_new)
        p = tl.exp(scores - m_new)
        v = e4m3_to_float(tl.load(V + offsets, mask=tile_ok, other=0))
        acc = acc * correction + tl.sum(p[:, None] * v, axis=0)
        row_sum = row_sum * correction + tl.sum(p, axis=0)
        m = m_new
    out = acc * (tl.load(VScale + kv_head) / row_sum)  # the value scale, once per output
    tl.store(Out + (batch * num_q_heads + head) * head_dim + dims, out, mask=dim_ok)


# tokens per tile; Triton's CPU interpreter pays per operation, not per element: whole tiles
BLOCK_N = 1024 if os.environ.get("TRITON_INTERPRET") == "1" else 64


# Q, K_fp8, V_fp8, k_scale, v_scale, output are tensors on the GPU
def solve(
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
    fp8_attention_kernel[(num_q_heads, batch_size)](
        Q,
        K_fp8,
        V_fp8,
        k_scale,
        v_scale,
        output,
        num_q_heads,
        num_kv_heads,
        cache_len,
        head_dim,
        1.0 / math.sqrt(head_dim),
        BLOCK_N=BLOCK_N,
        BLOCK_D=triton.next_power_of_2(head_dim),
    )
