"""INT8 KV-cache attention in Triton: split-KV (flash-decoding) in one kernel, scales folded in.

The floor: K_int8 and V_int8 are 2 * 32 * 8192 * 128 B = 67.1 MB at the performance shape
(plus 2.1 MB of scales), ~17 us at ~4.1 TB/s of streaming read (H200), ~23 us at ~3.0 TB/s
(H100).

32 heads make only 32 programs, so every head's tokens are cut into `splits` chunks and the
grid is (splits, heads), about PROGRAMS_PER_SM programs per SM. Each program streams its chunk
four BLOCK_N-token tiles at a time (all four tiles' loads in flight before any math) with an
online softmax in base 2 (q is pre-scaled by log2(e)/sqrt(d)), one state per token slot of a
tile so that no reduction crosses warps inside the loop and one rescale per four tiles,
applies each token's key scale to its score and its value scale to its weight (never to
head_dim elements), and writes a normalized partial output with its log-sum-exp. The last
program of a head to finish (an atomic counter) merges the chunks:
out = sum_s 2^(lse_s - L) O_s / sum_s 2^(lse_s - L). One launch: with two, the host's launch
latency between them would idle the GPU for longer than the whole kernel runs.

int8 -> float32 without I2F conversions (a low-throughput instruction class on the GPU, next
to the FMAs this kernel also needs): flip the sign bits of four packed values at once
(x ^ 0x80 = x + 128 as an unsigned byte), place each byte in the mantissa of 2^23 with a byte
permute, and subtract 2^23 + 128; exact for all 256 values. It is inline PTX, which Triton's
CPU interpreter cannot run, so there the kernel converts with a plain cast.
"""

import math
import os

import torch
import triton
import triton.language as tl


@triton.jit
def int8_to_float(x):
    """Exact int8 -> float32 through the mantissa of 2^23 (four values per 32-bit register)."""
    biased = tl.inline_asm_elementwise(
        asm="""{
        .reg .b32 t;
        xor.b32 t, $4, 0x80808080;
        prmt.b32 $0, t, 0x4B000000, 0x7440;
        prmt.b32 $1, t, 0x4B000000, 0x7441;
        prmt.b32 $2, t, 0x4B000000, 0x7442;
        prmt.b32 $3, t, 0x4B000000, 0x7443;
        }""",
        constraints="=r,=r,=r,=r,r",
        args=[x],
        dtype=tl.int32,
        is_pure=True,
        pack=4,
    )
    return biased.to(tl.float32, bitcast=True) - 8388736.0  # 2^23 + 128


@triton.jit
def to_float(x, PTX_INT8: tl.constexpr):
    if PTX_INT8:
        return int8_to_float(x)
    return x.to(tl.float32)


@triton.jit
def load_tile(
    K, V, KScale, VScale, rows, t, end, head_dim, dims, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr
):
    """Tokens [t, t + BLOCK_N) of one head: int8 K and V rows and their scales (zeros at and
    past ``end``). EVEN_D: head_dim is the tile's width, so no column needs a mask."""
    tokens = t + tl.arange(0, BLOCK_N)
    tok_ok = tokens < end
    offsets = (rows + tokens)[:, None] * head_dim + dims[None, :]
    if EVEN_D:
        tile_ok = tok_ok[:, None]
    else:
        tile_ok = tok_ok[:, None] & (dims < head_dim)[None, :]
    k = tl.load(K + offsets, mask=tile_ok, other=0, eviction_policy="evict_first")
    v = tl.load(V + offsets, mask=tile_ok, other=0, eviction_policy="evict_first")
    k_scale = tl.load(KScale + rows + tokens, mask=tok_ok, other=0.0)
    v_scale = tl.load(VScale + rows + tokens, mask=tok_ok, other=0.0)
    return k, v, k_scale, v_scale


@triton.jit
def tile_scores(k, q, k_scale, t, end, BLOCK_N: tl.constexpr, PTX_INT8: tl.constexpr):
    """Base-2 scores of one tile's rows (q is pre-scaled); -inf at and past ``end``."""
    dots = tl.sum(to_float(k, PTX_INT8) * q[None, :], axis=1)
    return tl.where(t + tl.arange(0, BLOCK_N) < end, dots * k_scale, float("-inf"))


@triton.jit
def decode_kernel(
    Q,  # (H, D) float32
    K,  # (H, S, D) int8
    V,  # (H, S, D) int8
    KScale,  # (H, S) float32, one per cached key
    VScale,  # (H, S) float32, one per cached value
    Out,  # (H, D) float32
    PartOut,  # (H, splits, D): each chunk's normalized output
    PartLse,  # (H, splits): each chunk's log2-sum-exp2
    Finished,  # (H,) int32: programs of the head done so far; the last one resets it to 0
    seq_len,  # S
    head_dim,  # D
    tokens_per_split,  # tokens per chunk, a multiple of 4 * BLOCK_N
    splits,  # chunks per head
    scale_log2,  # log2(e) / sqrt(head_dim)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim rounded up to a power of two
    BLOCK_S: tl.constexpr,  # splits rounded up to a power of two
    PTX_INT8: tl.constexpr,  # convert int8 with inline PTX (False in the interpreter)
    EVEN_D: tl.constexpr,  # head_dim == BLOCK_D: no column masks
):
    split = tl.program_id(0)
    head = tl.program_id(1)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < head_dim
    q = tl.load(Q + head * head_dim + dims, mask=dim_ok, other=0.0) * scale_log2
    start = split * tokens_per_split
    end = tl.minimum(seq_len, start + tokens_per_split)
    rows = head.to(tl.int64) * seq_len

    # One online-softmax state per token slot of a tile (running max, sum, output row), so the
    # loop has no reduction across warps; the slots are combined once, after the loop. Each
    # step takes four tiles: their loads are all in flight before any math (Triton does not
    # pipeline these loads itself), and the running state is rescaled once per four tiles.
    # The running max starts finite so that a slot's first rescale is exp2(-huge) = 0, not NaN.
    m = tl.full((BLOCK_N,), -1.0e30, tl.float32)
    row_sum = tl.zeros((BLOCK_N,), tl.float32)
    acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for t in range(start, end, 4 * BLOCK_N):
        t1, t2, t3 = t + BLOCK_N, t + 2 * BLOCK_N, t + 3 * BLOCK_N
        k0, v0, ks0, vs0 = load_tile(
            K, V, KScale, VScale, rows, t, end, head_dim, dims, BLOCK_N, EVEN_D
        )
        k1, v1, ks1, vs1 = load_tile(
            K, V, KScale, VScale, rows, t1, end, head_dim, dims, BLOCK_N, EVEN_D
        )
        k2, v2, ks2, vs2 = load_tile(
            K, V, KScale, VScale, rows, t2, end, head_dim, dims, BLOCK_N, EVEN_D
        )
        k3, v3, ks3, vs3 = load_tile(
            K, V, KScale, VScale, rows, t3, end, head_dim, dims, BLOCK_N, EVEN_D
        )
        s0 = tile_scores(k0, q, ks0, t, end, BLOCK_N, PTX_INT8)
        s1 = tile_scores(k1, q, ks1, t1, end, BLOCK_N, PTX_INT8)
        s2 = tile_scores(k2, q, ks2, t2, end, BLOCK_N, PTX_INT8)
        s3 = tile_scores(k3, q, ks3, t3, end, BLOCK_N, PTX_INT8)
        m_new = tl.maximum(tl.maximum(m, tl.maximum(s0, s1)), tl.maximum(s2, s3))
        rescale = tl.exp2(m - m_new)
        p0, p1 = tl.exp2(s0 - m_new), tl.exp2(s1 - m_new)
        p2, p3 = tl.exp2(s2 - m_new), tl.exp2(s3 - m_new)
        acc = acc * rescale[:, None] + (p0 * vs0)[:, None] * to_float(v0, PTX_INT8)
        acc += (p1 * vs1)[:, None] * to_float(v1, PTX_INT8)
        acc += (p2 * vs2)[:, None] * to_float(v2, PTX_INT8)
        acc += (p3 * vs3)[:, None] * to_float(v3, PTX_INT8)
        row_sum = row_sum * rescale + (p0 + p1) + (p2 + p3)
        m = m_new
    slot_weights = tl.exp2(m - tl.max(m, axis=0))  # the slots' states, rescaled to one maximum
    m = tl.max(m, axis=0)
    row_sum = tl.sum(row_sum * slot_weights, axis=0)
    acc = tl.sum(acc * slot_weights[:, None], axis=0)

    if splits == 1:  # the whole sequence: this is the answer
        tl.store(Out + head * head_dim + dims, acc / row_sum, mask=dim_ok)
    else:
        part = head * splits + split
        tl.store(PartOut + part * head_dim + dims, acc / row_sum, mask=dim_ok)
        tl.store(PartLse + part, m + tl.log2(row_sum))
        tl.debug_barrier()  # every thread's partial stores come before the release below
        done = tl.atomic_add(Finished + head, 1, sem="acq_rel")
        if done == splits - 1:  # the last program of this head merges its chunks
            parts = tl.arange(0, BLOCK_S)
            part_ok = parts < splits
            first = head * splits
            lse = tl.load(
                PartLse + first + parts, mask=part_ok, other=float("-inf"), cache_modifier=".cg"
            )
            weights = tl.exp2(lse - tl.max(lse, axis=0))
            offsets = (first + parts)[:, None] * head_dim + dims[None, :]
            outs = tl.load(
                PartOut + offsets,
                mask=part_ok[:, None] & dim_ok[None, :],
                other=0.0,
                cache_modifier=".cg",
            )
            merged = tl.sum(weights[:, None] * outs, axis=0) / tl.sum(weights, axis=0)
            tl.store(Out + head * head_dim + dims, merged, mask=dim_ok)
            tl.atomic_xchg(Finished + head, 0)  # ready for the next call


BLOCK_N = 8  # tokens per tile; a loop step takes four tiles
# Triton's CPU interpreter runs each tile operation as one NumPy call, so there bigger tiles
# mean fewer interpreted steps; the kernel is the same
INTERPRETER_BLOCK_N = 128
NUM_WARPS = 4
PROGRAMS_PER_SM = 6
_counters = {}  # device -> int32 counters, zeroed once and reset by the kernel after each use


def split_count(num_heads: int, seq_len: int, block_n: int, device) -> int:
    """Chunks per head so that the grid has about PROGRAMS_PER_SM programs per SM."""
    on_gpu = device.type == "cuda"
    sms = torch.cuda.get_device_properties(device).multi_processor_count if on_gpu else 4
    wanted = max(1, PROGRAMS_PER_SM * sms // num_heads)
    return max(1, min(wanted, triton.cdiv(seq_len, block_n)))


def counters(num_heads: int, device) -> torch.Tensor:
    have = _counters.get(device)
    if have is None or have.numel() < num_heads:
        have = _counters[device] = torch.zeros(max(num_heads, 64), dtype=torch.int32, device=device)
    return have


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
    block_n = BLOCK_N if Q.is_cuda else INTERPRETER_BLOCK_N
    splits = split_count(num_heads, seq_len, block_n, Q.device)
    step = 4 * block_n
    tokens_per_split = triton.cdiv(triton.cdiv(seq_len, splits), step) * step
    splits = triton.cdiv(seq_len, tokens_per_split)
    part_out = torch.empty(num_heads, splits, head_dim, device=Q.device, dtype=torch.float32)
    part_lse = torch.empty(num_heads, splits, device=Q.device, dtype=torch.float32)
    decode_kernel[(splits, num_heads)](
        Q,
        K_int8,
        V_int8,
        k_scale,
        v_scale,
        output,
        part_out,
        part_lse,
        counters(num_heads, Q.device),
        seq_len,
        head_dim,
        tokens_per_split,
        splits,
        1.4426950408889634 / math.sqrt(head_dim),
        BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_S=triton.next_power_of_2(splits),
        PTX_INT8=os.environ.get("TRITON_INTERPRET") != "1",
        EVEN_D=triton.next_power_of_2(head_dim) == head_dim,
        num_warps=NUM_WARPS,
    )
