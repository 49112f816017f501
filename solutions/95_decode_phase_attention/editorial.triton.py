"""Decode-phase attention in Triton: split-KV (flash-decoding) in one kernel, with GQA packing.

The floor: K and V are 536.9 MB at the performance shape (batch 4, 8 KV heads, 16,384
tokens, head_dim 128, fp32), ~130 us at ~4.1 TB/s of streaming read (H200).

A program serves up to 16 query heads of one KV head (GQA packing: each K/V tile is loaded
once for them all) over one chunk of the cache (split-KV: batch * kv_heads = 32 programs
would leave most SMs idle, so the grid is (splits, batch * kv_heads), about four programs per
SM). The group's queries form a (BLOCK_G, BLOCK_D) tile, so scores and the weighted sum of V
are two matrix products per K/V tile, run on tensor cores in "tf32x3" precision (three TF32
products, float32 accuracy). The online softmax works in base 2 (q pre-scaled by
log2(e)/sqrt(d)); each program writes normalized partial outputs with their log-sum-exp, and
the last program of a group to finish (an atomic counter) merges the chunks. One launch: with
two, the host's launch latency between them would idle the GPU.
"""

import math

import torch
import triton
import triton.language as tl


@triton.jit
def decode_kernel(
    Q,  # (B, Hq, D) float32
    K,  # (B, Hkv, S, D) float32
    V,  # (B, Hkv, S, D) float32
    Out,  # (B, Hq, D) float32
    PartOut,  # (B * Hq, splits, D): each chunk's normalized output
    PartLse,  # (B * Hq, splits): each chunk's log2-sum-exp2
    Finished,  # (B * Hkv * head groups,) int32: programs done; the last one resets it to 0
    num_q_heads,  # Hq
    num_kv_heads,  # Hkv
    cache_len,  # S
    head_dim,  # D
    group,  # Hq / Hkv: query heads per KV head
    tokens_per_split,  # tokens per chunk, a multiple of BLOCK_N
    splits,  # chunks per (batch, KV head)
    scale_log2,  # log2(e) / sqrt(head_dim)
    BLOCK_G: tl.constexpr,  # query heads per program (16: the smallest tensor-core tile)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim padded to a power of two >= 16
    BLOCK_S: tl.constexpr,  # splits rounded up to a power of two
):
    split = tl.program_id(0)
    pair = tl.program_id(1)  # batch * num_kv_heads + kv_head
    first = tl.program_id(2) * BLOCK_G  # the first query head of the group this program serves
    batch = pair // num_kv_heads
    kv_head = pair % num_kv_heads
    heads = first + tl.arange(0, BLOCK_G)
    dims = tl.arange(0, BLOCK_D)
    head_ok = heads < group
    dim_ok = dims < head_dim
    q_rows = batch * num_q_heads + kv_head * group + heads
    q_tile_ok = head_ok[:, None] & dim_ok[None, :]
    q = tl.load(Q + q_rows[:, None] * head_dim + dims[None, :], mask=q_tile_ok, other=0.0)
    q = q * scale_log2
    start = split * tokens_per_split
    end = tl.minimum(cache_len, start + tokens_per_split)
    kv_rows = pair.to(tl.int64) * cache_len

    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    for t in range(start, end, BLOCK_N):
        tokens = t + tl.arange(0, BLOCK_N)
        tok_ok = tokens < end
        offsets = (kv_rows + tokens)[:, None] * head_dim + dims[None, :]
        tile_ok = tok_ok[:, None] & dim_ok[None, :]
        k = tl.load(K + offsets, mask=tile_ok, other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision="tf32x3")  # (BLOCK_G, BLOCK_N)
        scores = tl.where(tok_ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        rescale = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new[:, None])
        v = tl.load(V + offsets, mask=tile_ok, other=0.0)
        acc = acc * rescale[:, None] + tl.dot(p, v, input_precision="tf32x3")
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        m = m_new
    if splits == 1:  # the whole cache: this is the answer
        tl.store(
            Out + q_rows[:, None] * head_dim + dims[None, :], acc / row_sum[:, None], mask=q_tile_ok
        )
    else:
        parts = q_rows * splits + split
        tl.store(
            PartOut + parts[:, None] * head_dim + dims[None, :],
            acc / row_sum[:, None],
            mask=q_tile_ok,
        )
        tl.store(PartLse + parts, m + tl.log2(row_sum), mask=head_ok)
        tl.debug_barrier()  # every thread's partial stores come before the release below
        counter = Finished + pair * tl.num_programs(2) + tl.program_id(2)
        done = tl.atomic_add(counter, 1, sem="acq_rel")
        if done == splits - 1:  # the last program of this group merges its chunks
            chunks = tl.arange(0, BLOCK_S)
            chunk_ok = chunks < splits
            tile_ok = chunk_ok[:, None] & dim_ok[None, :]
            for h in range(first, tl.minimum(group, first + BLOCK_G)):
                row = batch * num_q_heads + kv_head * group + h
                lse = tl.load(
                    PartLse + row * splits + chunks,
                    mask=chunk_ok,
                    other=float("-inf"),
                    cache_modifier=".cg",
                )
                weights = tl.exp2(lse - tl.max(lse, axis=0))
                offsets = (row * splits + chunks)[:, None] * head_dim + dims[None, :]
                outs = tl.load(PartOut + offsets, mask=tile_ok, other=0.0, cache_modifier=".cg")
                merged = tl.sum(weights[:, None] * outs, axis=0) / tl.sum(weights, axis=0)
                tl.store(Out + row * head_dim + dims, merged, mask=dim_ok)
            tl.atomic_xchg(counter, 0)  # ready for the next call


PROGRAMS_PER_SM = 2  # one wave: shared memory holds two programs per SM
BLOCK_G = 16  # query heads per program; groups of more heads take several programs
BLOCK_N = 32  # tokens per tile
# Triton's CPU interpreter runs each tile operation as one NumPy call, so there bigger tiles
# mean fewer interpreted steps; the kernel is the same
INTERPRETER_BLOCK_N = 256
NUM_WARPS = 4
NUM_STAGES = 3  # 2 when head_dim > 128: K and V tiles of 256 columns fill shared memory
_counters = {}  # device -> int32 counters, zeroed once and reset by the kernel after each use


def split_count(pairs: int, cache_len: int, block_n: int, device) -> int:
    """Chunks per (batch, KV head) so that the grid has about PROGRAMS_PER_SM per SM."""
    on_gpu = device.type == "cuda"
    sms = torch.cuda.get_device_properties(device).multi_processor_count if on_gpu else 4
    wanted = max(1, PROGRAMS_PER_SM * sms // pairs)
    return max(1, min(wanted, triton.cdiv(cache_len, block_n)))


def counters(groups: int, device) -> torch.Tensor:
    have = _counters.get(device)
    if have is None or have.numel() < groups:
        have = _counters[device] = torch.zeros(max(groups, 1024), dtype=torch.int32, device=device)
    return have


# Q, K, V, output are tensors on the GPU
def solve(
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
    group = num_q_heads // num_kv_heads
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_n = BLOCK_N if Q.is_cuda else INTERPRETER_BLOCK_N
    pairs = batch_size * num_kv_heads
    head_groups = triton.cdiv(group, BLOCK_G)
    splits = split_count(pairs, cache_len, block_n, Q.device)
    tokens_per_split = triton.cdiv(triton.cdiv(cache_len, splits), block_n) * block_n
    splits = triton.cdiv(cache_len, tokens_per_split)
    rows = batch_size * num_q_heads
    part_out = torch.empty(rows, splits, head_dim, device=Q.device, dtype=torch.float32)
    part_lse = torch.empty(rows, splits, device=Q.device, dtype=torch.float32)
    decode_kernel[(splits, pairs, head_groups)](
        Q,
        K,
        V,
        output,
        part_out,
        part_lse,
        counters(pairs * head_groups, Q.device),
        num_q_heads,
        num_kv_heads,
        cache_len,
        head_dim,
        group,
        tokens_per_split,
        splits,
        1.4426950408889634 / math.sqrt(head_dim),
        BLOCK_G=BLOCK_G,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        BLOCK_S=triton.next_power_of_2(splits),
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES if block_d <= 128 else 2,
    )
