"""FP8 KV-cache attention in Triton: split-KV (flash-decoding) in one kernel, GQA packing on
tensor cores with exact float16 operands.

The floor: K_fp8 and V_fp8 are 2 * 4 * 8 * 32768 * 128 B = 268.4 MB at the performance shape,
~64 us at ~4.2 TB/s of streaming read (H200), ~90 us at ~3.0 TB/s (H100).

A program serves up to BLOCK_G = 16 query heads of one KV head (GQA packing: each tile of
codes is loaded and converted once for all of them) over one chunk of the cache (split-KV:
batch * kv_heads = 32 programs would leave most SMs idle, so the grid is (splits,
batch * kv_heads, head groups), one wave of programs from the compiled kernel's occupancy).

With G = 4 query heads per KV head every byte of cache feeds 4 multiply-adds: on CUDA cores
that and its conversion would take most of an SM's issue slots at this bandwidth (see
editorial.cu's napkin math), on tensor cores a small fraction. Every E4M3 value is exact in
float16, so the uint8 tiles are bitcast to tl.float8e4nv and
converted to float16 (one cvt per two codes on sm_89+), and both products run on tensor cores
with float32 accumulation, the cache on the MMA's M side: scores^T = K q^T (64 tokens by 16
heads) and out^T = V^T p^T (head_dim by 16), warpgroup MMAs (wgmma) on Hopper. What is not
exact in float16 is split in two: the queries and the softmax weights become hi = f16(x) and
lo = f16(x - hi) (22 significant bits, float32-like), and each product is two dots, hi and
lo, into the same accumulator. The KV head's k_scale and log2(e)/sqrt(d) are folded into the
queries, whose rows are then scaled to a largest |element| of 2^15 (inside float16's range for
any input, and its lo halves clear of float16's subnormals) and the scores scaled back (one
multiply per score); v_scale multiplies each output element once. The online softmax works in
base 2, with weights 2^(s - m + 15) <= 2^15 for the same reason.

Each program writes normalized partial outputs with their log-sum-exp, and the last program
of a group to finish (an atomic counter) merges the chunks. One launch: with two, the host's
launch latency between them would idle the GPU for longer than the kernel runs.
"""

import math
import os

import torch
import triton
import triton.language as tl

# float16 holds up to 65504 and is normal from 2^-14 on: queries are scaled to a largest
# |element| of 2^15, weights to at most 2^15, so that the lo halves of the splits of all but
# the smallest elements stay normal (full precision)
Q_MAX = 32768.0
P_SHIFT = 15.0  # weights are 2^(s - m + P_SHIFT), at most 2^15


@triton.jit
def e4m3_to_f16(codes, HW_FP8: tl.constexpr):
    """uint8 E4M3 codes -> exact float16 values."""
    if HW_FP8:
        return codes.to(tl.float8e4nv, bitcast=True).to(tl.float16)
    # float16 bits S.EEEE.MMM0000000 (the E4M3 fields shifted into place) read as
    # e4m3 * 2^-8 for every code, subnormals included: float16's exponent bias is 15, not 7
    bits = codes.to(tl.int16)
    f16_bits = ((bits & 0x80) << 8) | ((bits & 0x7F) << 7)
    return f16_bits.to(tl.float16, bitcast=True) * 256.0


@triton.jit
def split_f16(x):
    """float32 x -> (hi, lo) float16 with hi + lo = x to ~22 significant bits."""
    hi = x.to(tl.float16)
    return hi, (x - hi.to(tl.float32)).to(tl.float16)


@triton.jit
def fp8_decode_kernel(
    Q,  # (B, Hq, D) float32
    K,  # (B, Hkv, S, D) uint8 E4M3 codes
    V,  # (B, Hkv, S, D) uint8 E4M3 codes
    KScale,  # (Hkv,) float32
    VScale,  # (Hkv,) float32
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
    score_scale,  # log2(e) / sqrt(head_dim)
    Q_MAX: tl.constexpr,  # the largest |query element| after scaling
    P_SHIFT: tl.constexpr,  # weights 2^(s - m + P_SHIFT)
    BLOCK_G: tl.constexpr,  # query heads per program (16: the smallest tensor-core tile)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim padded to a power of two >= 16
    BLOCK_S: tl.constexpr,  # splits rounded up to a power of two
    HW_FP8: tl.constexpr,  # convert with the GPU's E4M3 instructions (sm_89+)
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
    q = q * (tl.load(KScale + kv_head) * score_scale)  # the key scale, folded in once
    row_scale = tl.max(tl.abs(q), axis=1) * (1.0 / Q_MAX)
    row_scale = tl.where(row_scale > 0.0, row_scale, 1.0)
    q_hi, q_lo = split_f16(tl.trans(q / row_scale[:, None]))  # (BLOCK_D, BLOCK_G)
    start = split * tokens_per_split
    end = tl.minimum(cache_len, start + tokens_per_split)
    kv_rows = pair.to(tl.int64) * cache_len

    # Both products put the cache on the MMA's M side (64 tokens, or head_dim columns), which
    # on Hopper makes them warpgroup MMAs with the 16-column query and weight operands in
    # shared memory: scores^T = K q^T and out^T = V^T p^T. The value tile is loaded as V^T
    # (pointers running along head_dim), so nothing is transposed in registers.
    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_G,), tl.float32)
    acc_t = tl.zeros((BLOCK_D, BLOCK_G), tl.float32)
    for t in range(start, end, BLOCK_N):
        tokens = t + tl.arange(0, BLOCK_N)
        tok_ok = tokens < end
        rows = kv_rows + tokens
        k_tile_ok = tok_ok[:, None] & dim_ok[None, :]
        k = tl.load(K + rows[:, None] * head_dim + dims[None, :], mask=k_tile_ok, other=0)
        k = e4m3_to_f16(k, HW_FP8)  # (BLOCK_N, BLOCK_D)
        scores = tl.dot(k, q_lo, tl.dot(k, q_hi))  # (BLOCK_N, BLOCK_G), float32
        scores = tl.where(tok_ok[:, None], scores * row_scale[None, :], float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        rescale = tl.exp2(m - m_new)
        p = tl.exp2(scores - (m_new - P_SHIFT)[None, :])
        p_hi, p_lo = split_f16(p)
        v_tile_ok = dim_ok[:, None] & tok_ok[None, :]
        v_t = tl.load(V + rows[None, :] * head_dim + dims[:, None], mask=v_tile_ok, other=0)
        v_t = e4m3_to_f16(v_t, HW_FP8)  # (BLOCK_D, BLOCK_N)
        acc_t = tl.dot(v_t, p_lo, tl.dot(v_t, p_hi, acc_t * rescale[None, :]))
        row_sum = row_sum * rescale + tl.sum(p, axis=0)
        m = m_new
    acc = tl.trans(acc_t)  # (BLOCK_G, BLOCK_D)

    out_scale = tl.load(VScale + kv_head)
    if splits == 1:  # the whole cache: this is the answer
        out = acc * (out_scale / row_sum)[:, None]
        tl.store(Out + q_rows[:, None] * head_dim + dims[None, :], out, mask=q_tile_ok)
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
                tl.store(Out + row * head_dim + dims, merged * out_scale, mask=dim_ok)
            tl.atomic_xchg(counter, 0)  # ready for the next call


BLOCK_G = 16  # query heads per program; groups of more heads take several programs
NUM_WARPS = 4
NUM_STAGES = 3  # K and V tiles in flight per program (2 when head_dim > 128)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# tokens per tile: 64 rows of up to 128 one-byte columns, 8 KB of K and of V per stage. The CPU
# interpreter pays per operation, not per element, so it takes whole chunks at once.
BLOCK_N = 512 if INTERPRETED else 64
DEFAULT_PROGRAMS_PER_SM = 2  # before the compiled kernel reports its own occupancy
_programs_per_sm = {}  # (device, compile-time configuration) -> resident programs per SM
_counters = {}  # device -> int32 counters, zeroed once and reset by the kernel after each use


def resident_programs(compiled, device) -> int:
    """Programs of a compiled kernel one SM holds at once, from its registers and shared
    memory and the device's limits; DEFAULT_PROGRAMS_PER_SM where Triton does not say."""
    try:
        props = triton.runtime.driver.active.utils.get_device_properties(device.index)
        warps = compiled.metadata.num_warps
        regs_per_warp = -(-compiled.n_regs * 32 // 256) * 256  # allocated 256 at a time
        by_regs = props["max_num_regs"] // (regs_per_warp * warps)
        shared = compiled.metadata.shared
        by_smem = props["max_shared_mem"] // shared if shared else by_regs
        return max(1, min(by_regs, by_smem, 64 // warps))
    except (AttributeError, KeyError, TypeError, RuntimeError):
        return DEFAULT_PROGRAMS_PER_SM


def split_count(programs: int, cache_len: int, block_n: int, per_sm: int, device) -> int:
    """Chunks per (batch, KV head) so that the grid is one wave of per_sm programs per SM."""
    on_gpu = device.type == "cuda"
    sms = torch.cuda.get_device_properties(device).multi_processor_count if on_gpu else 4
    wanted = max(1, per_sm * sms // programs)
    return max(1, min(wanted, triton.cdiv(cache_len, block_n)))


def counters(groups: int, device) -> torch.Tensor:
    have = _counters.get(device)
    if have is None or have.numel() < groups:
        have = _counters[device] = torch.zeros(max(groups, 1024), dtype=torch.int32, device=device)
    return have


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
    device = Q.device
    group = num_q_heads // num_kv_heads
    block_d = max(16, triton.next_power_of_2(head_dim))
    stages = NUM_STAGES if block_d <= 128 else 2
    hw_fp8 = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    config = (device, block_d, stages, hw_fp8)
    pairs = batch_size * num_kv_heads
    head_groups = triton.cdiv(group, BLOCK_G)
    per_sm = _programs_per_sm.get(config, DEFAULT_PROGRAMS_PER_SM)
    splits = split_count(pairs * head_groups, cache_len, BLOCK_N, per_sm, device)
    tokens_per_split = triton.cdiv(triton.cdiv(cache_len, splits), BLOCK_N) * BLOCK_N
    splits = triton.cdiv(cache_len, tokens_per_split)
    rows = batch_size * num_q_heads
    part_out = torch.empty(rows, splits, head_dim, device=device, dtype=torch.float32)
    part_lse = torch.empty(rows, splits, device=device, dtype=torch.float32)
    compiled = fp8_decode_kernel[(splits, pairs, head_groups)](
        Q,
        K_fp8,
        V_fp8,
        k_scale,
        v_scale,
        output,
        part_out,
        part_lse,
        counters(pairs * head_groups, device),
        num_q_heads,
        num_kv_heads,
        cache_len,
        head_dim,
        group,
        tokens_per_split,
        splits,
        1.4426950408889634 / math.sqrt(head_dim),
        Q_MAX=Q_MAX,
        P_SHIFT=P_SHIFT,
        BLOCK_G=BLOCK_G,
        BLOCK_N=BLOCK_N,
        BLOCK_D=block_d,
        BLOCK_S=triton.next_power_of_2(splits),
        HW_FP8=hw_fp8,
        num_warps=NUM_WARPS,
        num_stages=stages,
    )
    if config not in _programs_per_sm and device.type == "cuda":
        _programs_per_sm[config] = resident_programs(compiled, device)
