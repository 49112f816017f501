"""FP8 KV-cache attention in Triton: split-KV (flash-decoding) in one kernel, one-warp programs,
GQA packing on tensor cores (mma.sync) with exact float16 operands.

The floor: K_fp8 and V_fp8 are 2 * 4 * 8 * 32768 * 128 B = 268.4 MB at the performance shape,
~60 us at ~4.4 TB/s of streaming read (H200).

Why tensor cores. With G = 4 query heads per KV head every byte of cache feeds 4 multiply-adds
plus its conversion: on CUDA cores that would take most of an SM's issue slots at this
bandwidth (see editorial.cu's napkin math). Every E4M3 value is exact in float16, so the uint8
tiles are bitcast to tl.float8e4nv and converted to float16 (one cvt per two codes on sm_89+).
The queries and the softmax weights are not exact in float16: each is split into hi = f16(x)
and lo = f16(x - hi) (22 significant bits, float32-like). The products put the cache tile on
the MMA's 16 rows and the packed queries (weights) on its 8 columns, the 4 heads' hi halves and
then their lo halves: scores^T = K qp^T (BLOCK_N x 8) and out^T = V^T pp^T (head_dim x 8), which
is exactly mma.sync m16n8k16 with no padding at G = 4 (groups of more than 4 heads take 8 per
program and 16 columns); hi and lo columns are added once per score, the accumulator's halves
once at the end. The KV head's k_scale and log2(e)/sqrt(d) are folded into the queries, whose
rows are then scaled to a largest |element| of 2^15 (inside float16's range, the lo halves clear
of its subnormals) and the scores scaled back; v_scale multiplies each output element once.

Online softmax in base 2 with lazy rescaling: a head's running maximum moves (and its
accumulator is rescaled) only in tiles where it rises by more than TAU = 8, so the weights
2^(s - m + P_SHIFT) stay at most 2^15; row sums are kept per (token, head) and reduced once.

One warp per program. A program serves the heads of one KV head over one chunk of the cache in
32-token tiles, kept in flight by a 3-stage cp.async ring (tl.range num_stages, 16-byte copies);
one-warp programs need no cross-warp barrier in the loop, and 8 of them per SM (the occupancy
API sizes the grid to one wave) keep ~128 KB per SM in flight. Each program writes a normalized
partial output with its log-sum-exp; the last program of a group to finish (an atomic counter)
merges the chunks, MERGE_S at a time. One launch: with two, the host's launch latency between
them would idle the GPU for longer than the kernel runs.

Measured on an H200 (performance test, scripts/tune.py, % of the same-run streaming read of the
same bytes): this kernel 68.7%; the previous design (4-warp programs, wgmma with 16 padded head
columns, hi and lo as separate dots, 64-token tiles) 53.5%; one-warp 16-token tiles 58-60%;
2-warp 32-token tiles 62.0%. The CUDA editorial reaches 87%: Triton reloads the loop-invariant
query operand from shared memory and reorders V's transposed fragments every tile.
"""

import ctypes
import math
import os

import torch
import triton
import triton.language as tl

Q_MAX = 32768.0  # queries scaled to a largest |element| of 2^15 (float16 hi/lo stay normal)
TAU = 8.0  # lazy rescale threshold (log2 units)
P_SHIFT = 7.0  # weights 2^(s - m + P_SHIFT) <= 2^(TAU + P_SHIFT) = 2^15 < 65504
M_INIT = -1e30  # finite start of the running max (no inf - inf)


@triton.jit
def e4m3_to_f16(codes, HW_FP8: tl.constexpr):
    """uint8 E4M3 codes -> exact float16 values."""
    if HW_FP8:
        return codes.to(tl.float8e4nv, bitcast=True).to(tl.float16)
    bits = codes.to(tl.int16)
    f16_bits = ((bits & 0x80) << 8) | ((bits & 0x7F) << 7)
    return f16_bits.to(tl.float16, bitcast=True) * 256.0


@triton.jit
def split_f16(x):
    """float32 x -> (hi, lo) float16 with hi + lo = x to ~22 significant bits."""
    hi = x.to(tl.float16)
    return hi, (x - hi.to(tl.float32)).to(tl.float16)


@triton.jit
def pack2_cols(hi, lo):
    """(X, G) hi and lo -> (X, 2G): hi in columns [0, G), lo in columns [G, 2G)."""
    X: tl.constexpr = hi.shape[0]
    G: tl.constexpr = hi.shape[1]
    return tl.reshape(tl.permute(tl.join(hi, lo), (0, 2, 1)), (X, 2 * G))


@triton.jit
def pack2_vec(x):
    """(G,) -> (2G,): x twice."""
    G: tl.constexpr = x.shape[0]
    return tl.reshape(tl.permute(tl.join(x, x), (1, 0)), (2 * G,))


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
    num_q_heads,
    num_kv_heads,
    cache_len,
    head_dim,
    group,  # Hq / Hkv
    tokens_per_split,  # a multiple of BLOCK_N
    splits,
    score_scale,  # log2(e) / sqrt(head_dim)
    one,  # 1.0 (see the value tile)
    Q_MAX: tl.constexpr,
    P_SHIFT: tl.constexpr,
    TAU: tl.constexpr,
    M_INIT: tl.constexpr,
    BLOCK_G: tl.constexpr,  # query heads per program (4: hi and lo fill the 8 MMA columns)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_D: tl.constexpr,  # head_dim padded to a power of two >= 16
    MERGE_S: tl.constexpr,  # chunks merged at a time
    STAGES: tl.constexpr,  # cp.async ring depth of the tile loop
    HW_FP8: tl.constexpr,
    EVEN: tl.constexpr,  # cache_len % BLOCK_N == 0 and head_dim == BLOCK_D
):
    split = tl.program_id(0)
    pair = tl.program_id(1)  # batch * num_kv_heads + kv_head
    first = tl.program_id(2) * BLOCK_G
    batch = pair // num_kv_heads
    kv_head = pair % num_kv_heads
    heads = first + tl.arange(0, BLOCK_G)
    dims = tl.arange(0, BLOCK_D)
    head_ok = heads < group
    dim_ok = dims < head_dim
    q_rows = batch * num_q_heads + kv_head * group + heads
    q_tile_ok = head_ok[:, None] & dim_ok[None, :]
    q = tl.load(Q + q_rows[:, None] * head_dim + dims[None, :], mask=q_tile_ok, other=0.0)
    q = q * (tl.load(KScale + kv_head) * score_scale)
    head_scale = tl.max(tl.abs(q), axis=1) * (1.0 / Q_MAX)
    head_scale = tl.where(head_scale > 0.0, head_scale, 1.0)
    q_hi, q_lo = split_f16(q / head_scale[:, None])  # (BLOCK_G, BLOCK_D)
    qpT = tl.trans(pack2_cols(tl.trans(q_hi), tl.trans(q_lo)))  # (2 BLOCK_G, BLOCK_D)
    qpT = tl.trans(qpT)  # (BLOCK_D, 2 BLOCK_G): the B operand of scores^T = K qp^T
    start = split * tokens_per_split
    end = tl.minimum(cache_len, start + tokens_per_split)
    # 64-bit base of this (batch, KV head) once; 32-bit offsets inside it (cache_len * head_dim
    # < 2^31), so that each 16-byte copy's address is one 64-bit add
    K_pair = K + pair.to(tl.int64) * cache_len * head_dim
    V_pair = V + pair.to(tl.int64) * cache_len * head_dim
    one_h = (tl.zeros((), tl.float32) + one).to(tl.float16)  # a runtime 1.0

    m = tl.full((BLOCK_G,), M_INIT, tl.float32)  # lazy running max per head
    sums = tl.zeros((BLOCK_N, BLOCK_G), tl.float32)  # weight sums per (token slot, head)
    accT = tl.zeros((BLOCK_D, 2 * BLOCK_G), tl.float32)  # out^T, hi and lo columns
    tok = tl.arange(0, BLOCK_N)
    offs = tok[:, None] * head_dim + dims[None, :]  # (BLOCK_N, BLOCK_D), loop-invariant
    for t in tl.range(start, end, BLOCK_N, num_stages=STAGES):
        tokens = t + tok
        tok_ok = tokens < end
        at = t * head_dim
        if EVEN:  # whole tiles and rows (the host checks): no masks
            k = tl.load(K_pair + at + offs)
        else:
            tile_ok = tok_ok[:, None] & dim_ok[None, :]
            k = tl.load(K_pair + at + offs, mask=tile_ok, other=0)
        k = e4m3_to_f16(k, HW_FP8)  # (BLOCK_N, BLOCK_D)
        s2 = tl.dot(k, qpT)  # (BLOCK_N, 2 BLOCK_G) float32
        scores = tl.sum(tl.reshape(s2, (BLOCK_N, 2, BLOCK_G)), axis=1) * head_scale[None, :]
        if not EVEN:
            scores = tl.where(tok_ok[:, None], scores, float("-inf"))
        if tl.max(tl.max(scores - m[None, :], axis=1), axis=0) > TAU:  # rare
            m_new = tl.maximum(m, tl.max(scores, axis=0))
            rescale = tl.exp2(m - m_new)
            accT = accT * pack2_vec(rescale)[None, :]
            sums = sums * rescale[None, :]
            m = m_new
        p = tl.exp2(scores - (m - P_SHIFT)[None, :])  # <= 2^(TAU + P_SHIFT)
        sums += p
        p_hi, p_lo = split_f16(p)
        pp = pack2_cols(p_hi, p_lo)  # (BLOCK_N, 2 BLOCK_G)
        if EVEN:
            v = tl.load(V_pair + at + offs)
        else:
            v = tl.load(V_pair + at + offs, mask=tile_ok, other=0)
        # times a runtime 1.0: the tile is converted to float16 before its layout conversion
        # (ldmatrix.trans instead of byte-wise shared-memory loads)
        v = e4m3_to_f16(v, HW_FP8) * one_h  # (BLOCK_N, BLOCK_D)
        accT = tl.dot(tl.trans(v), pp, accT)  # (BLOCK_D, 2 BLOCK_G)
    acc = tl.trans(tl.sum(tl.reshape(accT, (BLOCK_D, 2, BLOCK_G)), axis=1))  # (BLOCK_G, BLOCK_D)
    row_sum = tl.sum(sums, axis=0)  # (BLOCK_G,)
    m_off = m - P_SHIFT

    out_scale = tl.load(VScale + kv_head)
    if splits == 1:
        out = acc * (out_scale / row_sum)[:, None]
        tl.store(Out + q_rows[:, None] * head_dim + dims[None, :], out, mask=q_tile_ok)
    else:
        parts = q_rows * splits + split
        tl.store(
            PartOut + parts[:, None] * head_dim + dims[None, :],
            acc / row_sum[:, None],
            mask=q_tile_ok,
        )
        tl.store(PartLse + parts, m_off + tl.log2(row_sum), mask=head_ok)
        tl.debug_barrier()  # every thread's partial stores come before the release below
        counter = Finished + pair * tl.num_programs(2) + tl.program_id(2)
        done = tl.atomic_add(counter, 1, sem="acq_rel")
        if done == splits - 1:  # the last program of this group merges its chunks
            # in slices of MERGE_S chunks (few registers for one warp, any number of chunks):
            # the largest lse first, then the weighted sum
            chunks = tl.arange(0, MERGE_S)
            for h in range(first, tl.minimum(group, first + BLOCK_G)):
                row = batch * num_q_heads + kv_head * group + h
                top = tl.full((MERGE_S,), float("-inf"), tl.float32)
                for c in range(0, splits, MERGE_S):
                    lse = tl.load(
                        PartLse + row * splits + c + chunks,
                        mask=c + chunks < splits,
                        other=float("-inf"),
                        cache_modifier=".cg",
                    )
                    top = tl.maximum(top, lse)
                top_all = tl.max(top, axis=0)
                total = tl.zeros((MERGE_S,), tl.float32)
                merged = tl.zeros((MERGE_S, BLOCK_D), tl.float32)
                for c in range(0, splits, MERGE_S):
                    chunk_ok = c + chunks < splits
                    lse = tl.load(
                        PartLse + row * splits + c + chunks,
                        mask=chunk_ok,
                        other=float("-inf"),
                        cache_modifier=".cg",
                    )
                    weights = tl.exp2(lse - top_all)
                    offsets = (row * splits + c + chunks)[:, None] * head_dim + dims[None, :]
                    outs = tl.load(
                        PartOut + offsets,
                        mask=chunk_ok[:, None] & dim_ok[None, :],
                        other=0.0,
                        cache_modifier=".cg",
                    )
                    merged += weights[:, None] * outs
                    total += weights
                out = tl.sum(merged, axis=0) * (out_scale / tl.sum(total, axis=0))
                tl.store(Out + row * head_dim + dims, out, mask=dim_ok)
            tl.atomic_xchg(counter, 0)  # ready for the next call


NUM_WARPS = 1
STAGES = 3  # cp.async ring: STAGES - 1 K and V tiles in flight per program
# ptxas register cap: at this shape ptxas's choice swings by ~20% in the tile loop's instruction
# count (addresses re-derived from the thread id inside the loop); with this cap the loop is the
# shorter one (sm_90a SASS of the 16-token variant: 78 against 96 instructions per KB)
MAXNREG = 255
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# The CPU interpreter pays per operation, not per element, so it takes whole chunks at once.
BLOCK_N = 512 if INTERPRETED else 32
MERGE_S = 8  # chunks merged at a time (32 registers of partial outputs for one warp)
CPU_PROGRAMS_PER_SM = 2  # the interpreter's stand-in occupancy (4 "SMs")
_counters = {}  # device -> int32 counters, zeroed once and reset by the kernel after each use
_per_sm = {}  # compiled kernel -> resident programs per SM
_slots = {}  # compile-time configuration -> programs resident on the whole GPU
_libcuda = None


def programs_per_sm(compiled) -> int:
    """Programs of ``compiled`` one SM holds at once (the CUDA occupancy API, from its
    registers and shared memory); 1 where the driver cannot be asked."""
    global _libcuda
    if compiled not in _per_sm:
        per_sm = ctypes.c_int(0)
        try:
            compiled._init_handles()
            _libcuda = _libcuda or ctypes.CDLL("libcuda.so.1")
            status = _libcuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                ctypes.byref(per_sm),
                ctypes.c_void_p(compiled.function),
                ctypes.c_int(compiled.metadata.num_warps * 32),
                ctypes.c_size_t(compiled.metadata.shared),
            )
        except (AttributeError, OSError):
            status = -1
        _per_sm[compiled] = per_sm.value if status == 0 and per_sm.value > 0 else 1
    return _per_sm[compiled]


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
    on_gpu = device.type == "cuda"
    group = num_q_heads // num_kv_heads
    block_g = 4 if group <= 4 else 8
    block_d = max(16, triton.next_power_of_2(head_dim))
    stages = STAGES if block_d <= 128 else max(2, STAGES // 2)
    hw_fp8 = on_gpu and torch.cuda.get_device_capability(device) >= (8, 9)
    pairs = batch_size * num_kv_heads
    head_groups = triton.cdiv(group, block_g)
    programs = pairs * head_groups
    rows = batch_size * num_q_heads
    finished = counters(programs, device)
    scalars = (num_q_heads, num_kv_heads, cache_len, head_dim, group)
    meta = dict(
        Q_MAX=Q_MAX,
        P_SHIFT=P_SHIFT,
        TAU=TAU,
        M_INIT=M_INIT,
        BLOCK_G=block_g,
        BLOCK_N=BLOCK_N,
        BLOCK_D=block_d,
        MERGE_S=MERGE_S,
        STAGES=stages,
        HW_FP8=hw_fp8,
        EVEN=cache_len % BLOCK_N == 0 and head_dim == block_d,
        num_warps=NUM_WARPS,
        num_stages=stages,
        maxnreg=MAXNREG,
    )
    score_scale = 1.4426950408889634 / math.sqrt(head_dim)
    inputs = (Q, K_fp8, V_fp8, k_scale, v_scale, output)
    if on_gpu:  # compile (no launch) to learn the occupancy, then size the grid to one wave
        key = (device, block_g, block_d, stages, hw_fp8, meta["EVEN"])
        if key not in _slots:
            probe = torch.empty(1, device=device, dtype=torch.float32)
            compiled = fp8_decode_kernel.warmup(
                *inputs,
                probe,
                probe,
                finished,
                *scalars,
                BLOCK_N,
                2,
                score_scale,
                1.0,
                grid=(1,),
                **meta,
            )
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            _slots[key] = programs_per_sm(compiled) * sms
        slots = _slots[key]
    else:
        slots = CPU_PROGRAMS_PER_SM * 4
    splits = max(1, min(slots // programs, triton.cdiv(cache_len, BLOCK_N)))
    tokens_per_split = triton.cdiv(triton.cdiv(cache_len, splits), BLOCK_N) * BLOCK_N
    splits = triton.cdiv(cache_len, tokens_per_split)
    part_out = torch.empty(rows, splits, head_dim, device=device, dtype=torch.float32)
    part_lse = torch.empty(rows, splits, device=device, dtype=torch.float32)
    fp8_decode_kernel[(splits, pairs, head_groups)](
        *inputs,
        part_out,
        part_lse,
        finished,
        *scalars,
        tokens_per_split,
        splits,
        score_scale,
        1.0,
        **meta,
    )
