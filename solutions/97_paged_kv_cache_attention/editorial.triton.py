"""Paged KV-cache decode attention in Triton: split-KV balanced over the ragged work, in one kernel.

The floor. At the performance shape (32 sequences of 256 to 16,384 tokens, 131,072 in all;
8 KV heads, head_dim 128, fp32) the attended K and V rows are 131072 * 8 * 128 * 4 B * 2 =
1073.7 MB; Q, the output and the tables add 1.2 MB. Every attended byte must come from HBM
once: ~262 us at ~4.1 TB/s of streaming read (H200), ~350 us at ~3.0 TB/s (H100).

Balance. One program per (sequence, KV head) would leave the GPU waiting for the longest
sequence: 16,384 tokens against 4,096 on average, a quarter of the bandwidth. Instead the work
is a list of units, one per (sequence, KV head, block of the sequence), ordered by sequence,
then KV head, then block, and each of the `workers` programs (one full wave: the occupancy
API's programs per SM for the compiled kernel, times the SM count) takes the same number of
consecutive units. A program's range crosses whole or partial
(sequence, KV head) segments; it walks each with an online softmax and leaves one partial
result per segment it touched. Every program derives the whole schedule from seq_lens (at
most 64 numbers: a cumulative sum), so no host round trip and no second kernel is needed.

Merging. Program w's partial for segment s goes to slot w + s: along the unit list w and s
never both stay the same, so w + s never repeats, and the slots of one segment are consecutive.
A segment touched by one program is written to the output directly; otherwise each program
bumps the segment's atomic counter after storing its partial, and the last one merges the
slots: out = sum_i 2^(lse_i - L) O_i / sum_i 2^(lse_i - L), then resets the counter.

Inside a segment. A program serves all query heads of its KV head (up to BLOCK_G = 16; GQA
packing: each K/V tile is loaded once for the whole group) over BLOCK_N-token tiles. A tile
looks up each token's block in the block table (only for tokens below seq_len, so a -1 entry
is never followed) and gathers the K and V rows of its KV head: head_dim contiguous floats of
one block, which Triton loads 16 bytes at a time (cp.async into shared memory; 64-token tiles
for head_dim <= 128, 32-token tiles for wider heads).
Scores and the weighted sum of V are two matrix products on tensor cores in "tf32x3" (three
TF32 products, float32 accuracy); the softmax runs in base 2 with q pre-scaled by log2(e) /
sqrt(head_dim).
"""

import ctypes
import math

import torch
import triton
import triton.language as tl


@triton.jit
def paged_decode_kernel(
    Q,  # (B, Hq, D) float32
    K_cache,  # (num_blocks, block_size, Hkv, D) float32
    V_cache,  # (num_blocks, block_size, Hkv, D) float32
    BlockTable,  # (B, max_blocks_per_seq) int32
    SeqLens,  # (B,) int32
    Out,  # (B, Hq, D) float32
    PartOut,  # (workers + segments, BLOCK_G, D): one normalized partial output per slot
    PartLse,  # (workers + segments, BLOCK_G): its log2-sum-exp2
    Finished,  # (segments,) int32: programs done with a segment; the merger resets it to 0
    batch_size,  # B
    num_q_heads,  # Hq
    num_kv_heads,  # Hkv
    head_dim,  # D
    block_size,  # tokens per block
    max_blocks_per_seq,  # columns of the block table
    group,  # Hq / Hkv: query heads per KV head
    head_groups,  # programs' head tiles per KV head: ceil(group / BLOCK_G)
    scale_log2,  # log2(e) / sqrt(head_dim)
    BLOCK_B: tl.constexpr,  # batch_size rounded up to a power of two
    BLOCK_G: tl.constexpr,  # query heads per tile (16: the smallest tensor-core tile)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim padded to a power of two >= 16
    EVEN_D: tl.constexpr,  # head_dim == BLOCK_D: no column mask
):
    worker = tl.program_id(0)
    workers = tl.num_programs(0)

    # the schedule: units of (sequence, segment = KV head and head tile, block), in that order
    seqs = tl.arange(0, BLOCK_B)
    lens = tl.load(SeqLens + seqs, mask=seqs < batch_size, other=0)
    pages = (lens + block_size - 1) // block_size
    segments = num_kv_heads * head_groups  # per sequence
    units = pages * segments
    ends = tl.cumsum(units, axis=0)  # one past each sequence's last unit
    total = tl.sum(units, axis=0)
    per = (total + workers - 1) // workers  # units per program
    begin = worker * per
    end = tl.minimum(begin + per, total)

    # the first and last segment this program's range [begin, end) touches
    b_first = tl.sum((ends <= begin).to(tl.int32), axis=0)
    pages_first = tl.maximum(tl.sum(tl.where(seqs == b_first, pages, 0), axis=0), 1)
    start_first = tl.sum(tl.where(seqs == b_first, ends - units, 0), axis=0)
    s_first = b_first * segments + (begin - start_first) // pages_first
    b_last = tl.sum((ends <= end - 1).to(tl.int32), axis=0)
    pages_last = tl.maximum(tl.sum(tl.where(seqs == b_last, pages, 0), axis=0), 1)
    start_last = tl.sum(tl.where(seqs == b_last, ends - units, 0), axis=0)
    s_last = b_last * segments + (end - 1 - start_last) // pages_last
    s_last = tl.where(begin < end, s_last, s_first - 1)  # an idle program touches none

    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < head_dim
    for s in range(s_first, s_last + 1):
        b = s // segments
        kv_head = (s % segments) // head_groups
        first_head = (s % segments) % head_groups * BLOCK_G
        seq_len = tl.sum(tl.where(seqs == b, lens, 0), axis=0)
        seq_pages = tl.sum(tl.where(seqs == b, pages, 0), axis=0)
        seg_start = tl.sum(tl.where(seqs == b, ends - units, 0), axis=0)
        seg_start += (s % segments) * seq_pages
        t_begin = (tl.maximum(begin, seg_start) - seg_start) * block_size
        t_end = tl.minimum(
            (tl.minimum(end, seg_start + seq_pages) - seg_start) * block_size, seq_len
        )

        heads = first_head + tl.arange(0, BLOCK_G)
        head_ok = heads < group
        q_rows = b * num_q_heads + kv_head * group + heads
        q_ok = head_ok[:, None] & dim_ok[None, :]
        q = tl.load(Q + q_rows[:, None] * head_dim + dims[None, :], mask=q_ok, other=0.0)
        q = q * scale_log2

        m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
        row_sum = tl.zeros((BLOCK_G,), tl.float32)
        acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
        table = BlockTable + b * max_blocks_per_seq
        for t in range(t_begin, t_end, BLOCK_N):
            tokens = t + tl.arange(0, BLOCK_N)
            tok_ok = tokens < t_end
            blocks = tl.load(table + tokens // block_size, mask=tok_ok, other=0).to(tl.int64)
            rows = (blocks * block_size + tokens % block_size) * num_kv_heads + kv_head
            offsets = rows[:, None] * head_dim + dims[None, :]
            if EVEN_D:
                tile_ok = tok_ok[:, None]
            else:
                tile_ok = tok_ok[:, None] & dim_ok[None, :]
            k = tl.load(K_cache + offsets, mask=tile_ok, other=0.0)
            scores = tl.dot(q, tl.trans(k), input_precision="tf32x3")  # (BLOCK_G, BLOCK_N)
            scores = tl.where(tok_ok[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            rescale = tl.exp2(m - m_new)
            p = tl.exp2(scores - m_new[:, None])
            v = tl.load(V_cache + offsets, mask=tile_ok, other=0.0)
            acc = acc * rescale[:, None] + tl.dot(p, v, input_precision="tf32x3")
            row_sum = row_sum * rescale + tl.sum(p, axis=1)
            m = m_new

        # the programs that touch this segment: the first and last whose range meets it
        first_worker = seg_start // per
        last_worker = (seg_start + seq_pages - 1) // per
        if first_worker == last_worker:  # this program saw the whole segment
            out_at = Out + q_rows[:, None] * head_dim + dims[None, :]
            tl.store(out_at, acc / row_sum[:, None], mask=q_ok)
        else:
            slot = worker + s
            part_rows = slot * BLOCK_G + tl.arange(0, BLOCK_G)
            part_at = PartOut + part_rows[:, None] * head_dim + dims[None, :]
            tl.store(part_at, acc / row_sum[:, None], mask=q_ok)
            tl.store(PartLse + part_rows, m + tl.log2(row_sum), mask=head_ok)
            tl.debug_barrier()  # every thread's partial stores come before the release below
            done = tl.atomic_add(Finished + s, 1, sem="acq_rel")
            if done == last_worker - first_worker:  # the last one in merges the slots
                first_slot = first_worker + s
                slots = last_worker - first_worker + 1
                lse_max = tl.full((BLOCK_G,), float("-inf"), tl.float32)
                for i in range(slots):
                    rows_i = (first_slot + i) * BLOCK_G + tl.arange(0, BLOCK_G)
                    lse = tl.load(PartLse + rows_i, mask=head_ok, other=0.0, cache_modifier=".cg")
                    lse_max = tl.maximum(lse_max, lse)
                weight_sum = tl.zeros((BLOCK_G,), tl.float32)
                merged = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
                for i in range(slots):
                    rows_i = (first_slot + i) * BLOCK_G + tl.arange(0, BLOCK_G)
                    lse = tl.load(PartLse + rows_i, mask=head_ok, other=0.0, cache_modifier=".cg")
                    weight = tl.exp2(lse - lse_max)
                    part = tl.load(
                        PartOut + rows_i[:, None] * head_dim + dims[None, :],
                        mask=q_ok,
                        other=0.0,
                        cache_modifier=".cg",
                    )
                    merged += weight[:, None] * part
                    weight_sum += weight
                out_at = Out + q_rows[:, None] * head_dim + dims[None, :]
                tl.store(out_at, merged / weight_sum[:, None], mask=q_ok)
                tl.atomic_xchg(Finished + s, 0)  # ready for the next call


BLOCK_G = 16  # query heads per tile; groups of more heads take several segments per KV head
NUM_WARPS = 4
CPU_PROGRAMS = 6  # the interpreter's grid: a few programs, so that segments are split and merged
_counters = {}  # device -> int32 counters, zeroed once and reset by the kernel after each use
_resident = {}  # compiled kernel -> programs resident on the whole GPU at once
_libcuda = None


def block_n(block_d: int) -> int:
    """Tokens per tile: 64 for head_dim <= 128, 32 for the 256-column tiles. On an H200, 64
    tokens and 4 stages against 32 and 5 took the performance test from 56.1% to 57.4% of the
    read floor (scripts/benchmark.py's timing)."""
    return 64 if block_d <= 128 else 32


def num_stages(block_d: int) -> int:
    """Software-pipeline depth. The tile loop's loads are indirect (block table, then K and V),
    which costs the pipeliner stages: 4 for the 64-token tiles of head_dim <= 128; the
    256-column tiles get 3."""
    return 4 if block_d <= 128 else 3


def resident_programs(compiled, device) -> int:
    """Programs of ``compiled`` the whole GPU runs at once: the CUDA occupancy API for its
    registers and shared memory, times the SM count. One full wave is the grid: every program
    has the same amount of work, so a partial second wave would double the time of the
    programs in it. Where the driver cannot be asked, one program per SM (always one wave)."""
    global _libcuda
    if compiled not in _resident:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        per_sm = ctypes.c_int(0)
        try:
            compiled._init_handles()  # loads the binary: the handle the occupancy API needs
            _libcuda = _libcuda or ctypes.CDLL("libcuda.so.1")
            status = _libcuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                ctypes.byref(per_sm),
                ctypes.c_void_p(compiled.function),
                ctypes.c_int(compiled.metadata.num_warps * 32),
                ctypes.c_size_t(compiled.metadata.shared),
            )
        except (AttributeError, OSError):  # another Triton or driver layout
            status = -1
        _resident[compiled] = sms * (per_sm.value if status == 0 and per_sm.value > 0 else 1)
    return _resident[compiled]


def counters(segments: int, device) -> torch.Tensor:
    have = _counters.get(device)
    if have is None or have.numel() < segments:
        have = torch.zeros(max(segments, 4096), dtype=torch.int32, device=device)
        _counters[device] = have
    return have


# Q, K_cache, V_cache, block_table, seq_lens, output are tensors on the GPU
def solve(
    Q: torch.Tensor,
    K_cache: torch.Tensor,
    V_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    output: torch.Tensor,
    batch_size: int,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    max_blocks_per_seq: int,
    num_blocks: int,
):
    group = num_q_heads // num_kv_heads
    head_groups = triton.cdiv(group, BLOCK_G)
    block_d = max(16, triton.next_power_of_2(head_dim))
    segments = batch_size * num_kv_heads * head_groups
    finished = counters(segments, Q.device)
    sizes = (batch_size, num_q_heads, num_kv_heads, head_dim, block_size, max_blocks_per_seq)
    scalars = (*sizes, group, head_groups, 1.4426950408889634 / math.sqrt(head_dim))
    meta = dict(
        BLOCK_B=max(16, triton.next_power_of_2(batch_size)),
        BLOCK_G=BLOCK_G,
        BLOCK_N=block_n(block_d),
        BLOCK_D=block_d,
        EVEN_D=block_d == head_dim,
        num_warps=NUM_WARPS,
        num_stages=num_stages(block_d),
    )
    inputs = (Q, K_cache, V_cache, block_table, seq_lens, output)
    if Q.device.type == "cuda":  # compile (no launch) to learn the occupancy, then size the grid
        probe = torch.empty(1, device=Q.device, dtype=torch.float32)
        compiled = paged_decode_kernel.warmup(
            *inputs, probe, probe, finished, *scalars, grid=(1,), **meta
        )
        workers = resident_programs(compiled, Q.device)
    else:
        workers = CPU_PROGRAMS
    slots = workers + segments  # w + s < workers + segments for every (worker w, segment s)
    part_out = torch.empty(slots, BLOCK_G, head_dim, device=Q.device, dtype=torch.float32)
    part_lse = torch.empty(slots, BLOCK_G, device=Q.device, dtype=torch.float32)
    paged_decode_kernel[(workers,)](*inputs, part_out, part_lse, finished, *scalars, **meta)
