"""MLA decode (weight-absorbed) in Triton: split-KV in one kernel, every tile shared by a block
of heads, both products on tensor cores in tf32x3.

The floors. At the performance shape (batch 16, 128 heads, 8,192 tokens, kv_lora_rank 512,
rope_dim 64) the cache is 16 * 8192 * (512 + 64) * 4 B = 302.0 MB, with the queries and the
output 310.9 MB: ~74 us at ~4.2 TB/s of streaming read (H200). The arithmetic is
2 * 16 * 128 * 8192 * (2 * 512 + 64) = 36.5 GFLOP: ~545 us on float32 CUDA cores (~67
TFLOP/s), ~74 us at the dense TF32 tensor-core peak (~495 TFLOP/s) but TF32 keeps 10 mantissa
bits, too few for atol = rtol = 1e-3 once scores reach the hundreds. tf32x3 splits each
operand x into hi = tf32(x) and lo = tf32(x - hi) and sums hi*hi + hi*lo + lo*hi: about
float32 accuracy for three TF32 products, ~165 TFLOP/s effective, so the binding floor for
this arithmetic is the FLOPs one: ~221 us.

Structure. A program serves BLOCK_H heads of one sequence over one chunk of its cache
(split-KV: batch * head blocks = 64 programs would leave half of 132 SMs idle). Per tile of
BLOCK_N tokens it loads the latent rows kv_c (BLOCK_N, kv_lora_rank) and rotary keys k_pe for
all BLOCK_H heads; the scores are the (BLOCK_H, BLOCK_N) products q_nope kv_c^T + q_pe k_pe^T,
and the same latent tile is the value: O += P kv_c. The online softmax works in base 2 (the
scores are scaled by softmax_scale * log2(e)). Each program writes its chunk's normalized
output and log-sum-exp; the last program of a (batch, head block) to finish (an atomic
counter) merges the chunks. One launch: with two, the host's launch latency between them would
idle the GPU.

Registers. The latent columns go in slices of BLOCK_C = 128, each with its own query tile and
accumulator (q0..q3, acc0..acc3): as one 512-column tile, the three split operands of each
product and the accumulator spill thousands of registers (ptxas for sm_90a). The second product
loads its slices again, from L1, instead of keeping the tile alive across the softmax.

BLOCK_H is 32, not 128: the output accumulator of 128 heads x 512 latent columns is 256 KB,
the whole register file of an SM. Four head blocks read each tile, from HBM once and from L2
four times; the CUDA editorial shares the tile's load among the four CTAs of a cluster.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def load_rows(
    Base,  # (rows, width) float32
    rows,  # (ROWS,) row indices
    row_ok,  # (ROWS,) which rows exist
    width,  # floats per row
    first,  # the first column of the chunk
    BLOCK: tl.constexpr,  # columns per chunk
):
    """Columns [first, first + BLOCK) of the given rows, zeros outside the tensor."""
    cols = first + tl.arange(0, BLOCK)
    mask = row_ok[:, None] & (cols < width)[None, :]
    return tl.load(Base + rows[:, None] * width + cols[None, :], mask=mask, other=0.0)


@triton.jit
def store_rows(
    Base,  # (rows, width) float32
    rows,  # (ROWS,) row indices
    row_ok,  # (ROWS,) which rows to write
    width,  # floats per row
    first,  # the first column of the chunk
    values,  # (ROWS, BLOCK) float32
    BLOCK: tl.constexpr,  # columns per chunk
):
    cols = first + tl.arange(0, BLOCK)
    mask = row_ok[:, None] & (cols < width)[None, :]
    tl.store(Base + rows[:, None] * width + cols[None, :], values, mask=mask)


@triton.jit
def mla_decode_kernel(
    QNope,  # (B, H, R) float32
    QPe,  # (B, H, P) float32
    KvC,  # (B, T, R) float32: latent rows, shared by all heads
    KPe,  # (B, T, P) float32: rotary keys, shared by all heads
    Out,  # (B, H, R) float32
    PartOut,  # (B * H, splits, R): each chunk's normalized output
    PartLse,  # (B * H, splits): each chunk's log2-sum-exp2
    Finished,  # (B * head blocks,) int32: programs done; the last one resets it to 0
    num_heads,  # H
    cache_len,  # T
    kv_lora_rank,  # R
    rope_dim,  # P
    tokens_per_split,  # tokens per chunk of the cache, a multiple of BLOCK_N
    splits,  # chunks per sequence
    scale_log2,  # softmax_scale * log2(e), applied to the scores
    BLOCK_H: tl.constexpr,  # heads per program
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_C: tl.constexpr,  # latent columns per slice: the tile is up to 4 slices
    SLICES: tl.constexpr,  # slices that cover kv_lora_rank (1 to 4)
    BLOCK_P: tl.constexpr,  # rope_dim rounded up to a power of two >= 16
    BLOCK_S: tl.constexpr,  # splits rounded up to a power of two
):
    split = tl.program_id(0)
    head_block = tl.program_id(1)
    batch = tl.program_id(2)
    heads = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
    head_ok = heads < num_heads
    q_rows = batch * num_heads + heads
    # the queries, one register tile per latent slice (q1..q3 only where the rank needs them)
    q_pe = load_rows(QPe, q_rows, head_ok, rope_dim, 0, BLOCK_P)
    q0 = load_rows(QNope, q_rows, head_ok, kv_lora_rank, 0, BLOCK_C)
    if SLICES > 1:
        q1 = load_rows(QNope, q_rows, head_ok, kv_lora_rank, BLOCK_C, BLOCK_C)
    if SLICES > 2:
        q2 = load_rows(QNope, q_rows, head_ok, kv_lora_rank, 2 * BLOCK_C, BLOCK_C)
    if SLICES > 3:
        q3 = load_rows(QNope, q_rows, head_ok, kv_lora_rank, 3 * BLOCK_C, BLOCK_C)
    start = split * tokens_per_split
    end = tl.minimum(cache_len, start + tokens_per_split)
    first_token = batch.to(tl.int64) * cache_len

    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_H,), tl.float32)
    acc0 = tl.zeros((BLOCK_H, BLOCK_C), tl.float32)
    acc1 = tl.zeros((BLOCK_H, BLOCK_C), tl.float32)
    acc2 = tl.zeros((BLOCK_H, BLOCK_C), tl.float32)
    acc3 = tl.zeros((BLOCK_H, BLOCK_C), tl.float32)
    for t in range(start, end, BLOCK_N):
        tokens = t + tl.arange(0, BLOCK_N)
        tok_ok = tokens < end
        rows = first_token + tokens
        # scores (BLOCK_H, BLOCK_N): the rotary part, then the latent slices
        rotary = load_rows(KPe, rows, tok_ok, rope_dim, 0, BLOCK_P)
        scores = tl.dot(q_pe, tl.trans(rotary), input_precision="tf32x3")
        latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, 0, BLOCK_C)
        scores = tl.dot(q0, tl.trans(latent), scores, input_precision="tf32x3")
        if SLICES > 1:
            latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, BLOCK_C, BLOCK_C)
            scores = tl.dot(q1, tl.trans(latent), scores, input_precision="tf32x3")
        if SLICES > 2:
            latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, 2 * BLOCK_C, BLOCK_C)
            scores = tl.dot(q2, tl.trans(latent), scores, input_precision="tf32x3")
        if SLICES > 3:
            latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, 3 * BLOCK_C, BLOCK_C)
            scores = tl.dot(q3, tl.trans(latent), scores, input_precision="tf32x3")
        scores = tl.where(tok_ok[None, :], scores * scale_log2, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        rescale = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new[:, None])
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        m = m_new
        # O += P kv_c, slice by slice: the slices are loaded again (from L1) rather than kept
        # alive across the softmax, which would spill the accumulators
        latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, 0, BLOCK_C)
        acc0 = tl.dot(p, latent, acc0 * rescale[:, None], input_precision="tf32x3")
        if SLICES > 1:
            latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, BLOCK_C, BLOCK_C)
            acc1 = tl.dot(p, latent, acc1 * rescale[:, None], input_precision="tf32x3")
        if SLICES > 2:
            latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, 2 * BLOCK_C, BLOCK_C)
            acc2 = tl.dot(p, latent, acc2 * rescale[:, None], input_precision="tf32x3")
        if SLICES > 3:
            latent = load_rows(KvC, rows, tok_ok, kv_lora_rank, 3 * BLOCK_C, BLOCK_C)
            acc3 = tl.dot(p, latent, acc3 * rescale[:, None], input_precision="tf32x3")

    # the whole cache: the answer; else this chunk's normalized output, merged below
    if splits == 1:
        Dest, dest_rows = Out, q_rows
    else:
        Dest, dest_rows = PartOut, q_rows * splits + split
    inv = 1.0 / row_sum[:, None]
    store_rows(Dest, dest_rows, head_ok, kv_lora_rank, 0, acc0 * inv, BLOCK_C)
    if SLICES > 1:
        store_rows(Dest, dest_rows, head_ok, kv_lora_rank, BLOCK_C, acc1 * inv, BLOCK_C)
    if SLICES > 2:
        store_rows(Dest, dest_rows, head_ok, kv_lora_rank, 2 * BLOCK_C, acc2 * inv, BLOCK_C)
    if SLICES > 3:
        store_rows(Dest, dest_rows, head_ok, kv_lora_rank, 3 * BLOCK_C, acc3 * inv, BLOCK_C)
    if splits > 1:
        tl.store(PartLse + dest_rows, m + tl.log2(row_sum), mask=head_ok)
        tl.debug_barrier()  # every thread's partial stores come before the release below
        counter = Finished + batch * tl.num_programs(1) + head_block
        done = tl.atomic_add(counter, 1, sem="acq_rel")
        if done == splits - 1:  # the last program of this (batch, head block) merges
            chunks = tl.arange(0, BLOCK_S)
            chunk_ok = chunks < splits
            last_head = tl.minimum(num_heads, (head_block + 1) * BLOCK_H)
            for h in range(head_block * BLOCK_H, last_head):
                row = batch * num_heads + h
                lse = tl.load(
                    PartLse + row * splits + chunks,
                    mask=chunk_ok,
                    other=float("-inf"),
                    cache_modifier=".cg",
                )
                weights = tl.exp2(lse - tl.max(lse, axis=0))
                for c in range(0, kv_lora_rank, BLOCK_C):
                    cols = c + tl.arange(0, BLOCK_C)
                    col_ok = cols < kv_lora_rank
                    offsets = (row * splits + chunks)[:, None] * kv_lora_rank + cols[None, :]
                    outs = tl.load(
                        PartOut + offsets,
                        mask=chunk_ok[:, None] & col_ok[None, :],
                        other=0.0,
                        cache_modifier=".cg",
                    )
                    merged = tl.sum(weights[:, None] * outs, axis=0) / tl.sum(weights, axis=0)
                    tl.store(Out + row * kv_lora_rank + cols, merged, mask=col_ok)
            tl.atomic_xchg(counter, 0)  # ready for the next call


PROGRAMS_PER_SM = 1  # one wave: a program's tiles and accumulator fill an SM
BLOCK_H = 32  # heads per program: 32 x 512 float32 accumulators are 64 KB of registers
BLOCK_N = 16  # tokens per tile: 16 x 576 float32 is 36 KB of shared memory per stage
BLOCK_C = 128  # latent columns per slice: four slices cover kv_lora_rank = 512
NUM_WARPS = 8
NUM_STAGES = 2
_counters = {}  # device -> int32 counters, zeroed once and reset by the kernel after each use


def split_count(groups: int, cache_len: int, device) -> int:
    """Chunks per (batch, head block) so that the grid fills PROGRAMS_PER_SM per SM once."""
    on_gpu = device.type == "cuda"
    sms = torch.cuda.get_device_properties(device).multi_processor_count if on_gpu else 4
    wanted = max(1, PROGRAMS_PER_SM * sms // groups)
    return max(1, min(wanted, triton.cdiv(cache_len, BLOCK_N)))


def counters(groups: int, device) -> torch.Tensor:
    have = _counters.get(device)
    if have is None or have.numel() < groups:
        have = _counters[device] = torch.zeros(max(groups, 1024), dtype=torch.int32, device=device)
    return have


# q_nope, q_pe, kv_c, k_pe, output are tensors on the GPU
def solve(
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
    device = q_nope.device
    head_blocks = triton.cdiv(num_heads, BLOCK_H)
    groups = batch_size * head_blocks
    splits = split_count(groups, cache_len, device)
    tokens_per_split = triton.cdiv(triton.cdiv(cache_len, splits), BLOCK_N) * BLOCK_N
    splits = triton.cdiv(cache_len, tokens_per_split)
    rows = batch_size * num_heads
    part_out = torch.empty(rows, splits, kv_lora_rank, device=device, dtype=torch.float32)
    part_lse = torch.empty(rows, splits, device=device, dtype=torch.float32)
    mla_decode_kernel[(splits, head_blocks, batch_size)](
        q_nope,
        q_pe,
        kv_c,
        k_pe,
        output,
        part_out,
        part_lse,
        counters(groups, device),
        num_heads,
        cache_len,
        kv_lora_rank,
        rope_dim,
        tokens_per_split,
        splits,
        softmax_scale * 1.4426950408889634,
        BLOCK_H=BLOCK_H,
        BLOCK_N=BLOCK_N,
        BLOCK_C=BLOCK_C,
        SLICES=triton.cdiv(kv_lora_rank, BLOCK_C),
        BLOCK_P=max(16, triton.next_power_of_2(rope_dim)),
        BLOCK_S=triton.next_power_of_2(splits),
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
