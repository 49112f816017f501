"""INT8 KV-cache attention in Triton: one program per head, online softmax, scales folded in.

The int8 tiles are widened to float32 in registers; each token's key scale multiplies its
score (one multiply per token instead of head_dim) and each token's value scale multiplies its
softmax weight before the weighted sum of V. Clear rather than fast: 32 heads give only 32
programs, far too few to fill a GPU; the editorial version splits the sequence (split-KV).
"""

import math

import torch
import triton
import triton.language as tl


@triton.jit
def int8_attention_kernel(
    Q,  # (H, D) float32
    K,  # (H, S, D) int8
    V,  # (H, S, D) int8
    KScale,  # (H, S) float32, one per cached key
    VScale,  # (H, S) float32, one per cached value
    Out,  # (H, D) float32
    seq_len,  # S
    head_dim,  # D
    scale,  # 1 / sqrt(head_dim)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim rounded up to a power of two
):
    head = tl.program_id(0)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < head_dim
    q = tl.load(Q + head * head_dim + dims, mask=dim_ok, other=0.0)
    kv_base = head.to(tl.int64) * seq_len * head_dim

    m = tl.full((), float("-inf"), tl.float32)
    row_sum = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for start in range(0, seq_len, BLOCK_N):
        tokens = start + tl.arange(0, BLOCK_N)
        tok_ok = tokens < seq_len
        offsets = kv_base + tokens[:, None] * head_dim + dims[None, :]
        tile_ok = tok_ok[:, None] & dim_ok[None, :]
        k = tl.load(K + offsets, mask=tile_ok, other=0).to(tl.float32)
        k_scale = tl.load(KScale + head * seq_len + tokens, mask=tok_ok, other=0.0)
        scores = tl.sum(k * q[None, :], axis=1) * (k_scale * scale)
        scores = tl.where(tok_ok, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        correction = tl.exp(m - m_new)
        p = tl.exp(scores - m_new)
        v_scale = tl.load(VScale + head * seq_len + tokens, mask=tok_ok, other=0.0)
        v = tl.load(V + offsets, mask=tile_ok, other=0).to(tl.float32)
        acc = acc * correction + tl.sum((p * v_scale)[:, None] * v, axis=0)
        row_sum = row_sum * correction + tl.sum(p, axis=0)
        m = m_new
    tl.store(Out + head * head_dim + dims, acc / row_sum, mask=dim_ok)


# Q, K_int8, V_int8, k_scale, v_scale, output are tensors on the GPU
def solve(
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
    int8_attention_kernel[(num_heads,)](
        Q,
        K_int8,
        V_int8,
        k_scale,
        v_scale,
        output,
        seq_len,
        head_dim,
        1.0 / math.sqrt(head_dim),
        BLOCK_N=64 if Q.is_cuda else 512,  # fewer, larger steps in the CPU interpreter
        BLOCK_D=triton.next_power_of_2(head_dim),
    )
