"""Float64 NumPy oracles for the challenges, written from the problem statements.

They share no code with the PyTorch references: explicit loops over batches, KV heads and
the query heads of each GQA group, and per-token dequantization for INT8.
"""

import numpy as np


def _softmax_attention(q, keys, values):
    """q (D,), keys and values (S, D), all float64 -> (D,). Scale 1/sqrt(D)."""
    scores = keys @ q / np.sqrt(q.shape[0])
    weights = np.exp(scores - scores.max())
    return (weights / weights.sum()) @ values


def decode_attention_oracle(Q, K, V):
    """Challenge 95. Q (B, Hq, D); K, V (B, Hkv, S, D) -> output (B, Hq, D), float64."""
    Q, K, V = (np.asarray(x, dtype=np.float64) for x in (Q, K, V))
    batch, q_heads, _ = Q.shape
    kv_heads = K.shape[1]
    group = q_heads // kv_heads
    out = np.empty(Q.shape, dtype=np.float64)
    for b in range(batch):
        for kv in range(kv_heads):
            for g in range(group):
                h = kv * group + g
                out[b, h] = _softmax_attention(Q[b, h], K[b, kv], V[b, kv])
    return out


def int8_kv_attention_oracle(Q, K_int8, V_int8, k_scale, v_scale):
    """Challenge 96. Q (H, D) float; K_int8, V_int8 (H, S, D) int8; scales (H, S) float
    -> output (H, D), float64."""
    Q = np.asarray(Q, dtype=np.float64)
    out = np.empty(Q.shape, dtype=np.float64)
    for h in range(Q.shape[0]):
        keys = np.asarray(K_int8[h], dtype=np.float64)
        values = np.asarray(V_int8[h], dtype=np.float64)
        for s in range(keys.shape[0]):
            keys[s] *= np.float64(k_scale[h][s])
            values[s] *= np.float64(v_scale[h][s])
        out[h] = _softmax_attention(Q[h], keys, values)
    return out


def paged_kv_attention_oracle(Q, K_cache, V_cache, block_table, seq_lens):
    """Challenge 97. Q (B, Hq, D); K_cache, V_cache (num_blocks, block_size, Hkv, D); block_table
    (B, max_blocks_per_seq) int; seq_lens (B,) int -> output (B, Hq, D), float64.

    Sequence b's keys are read page by page: page p is block block_table[b, p], whose slots hold
    tokens p * block_size ... p * block_size + block_size - 1; only the first seq_lens[b] count.
    """
    Q = np.asarray(Q, dtype=np.float64)
    batch, q_heads, head_dim = Q.shape
    block_size, kv_heads = K_cache.shape[1], K_cache.shape[2]
    group = q_heads // kv_heads
    out = np.empty(Q.shape, dtype=np.float64)
    for b in range(batch):
        length = int(seq_lens[b])
        pages = (length + block_size - 1) // block_size
        for kv in range(kv_heads):
            keys = np.empty((pages * block_size, head_dim), dtype=np.float64)
            values = np.empty((pages * block_size, head_dim), dtype=np.float64)
            for p in range(pages):
                block = int(block_table[b][p])
                assert 0 <= block < K_cache.shape[0], "a page of the sequence is not in the pool"
                rows = slice(p * block_size, (p + 1) * block_size)
                keys[rows] = K_cache[block, :, kv, :]
                values[rows] = V_cache[block, :, kv, :]
            for g in range(group):
                h = kv * group + g
                out[b, h] = _softmax_attention(Q[b, h], keys[:length], values[:length])
    return out


def e4m3_value(code: int) -> float:
    """One OCP FP8 E4M3 byte (torch.float8_e4m3fn) -> its value, decoded from the bits as the
    OCP FP8 specification defines them: bit 7 the sign, bits 6-3 the exponent (bias 7), bits
    2-0 the mantissa; exponent 0 is subnormal (and +-0). S.1111.111 (0x7F, 0xFF) is NaN; the
    format has no infinities."""
    sign = -1.0 if code & 0x80 else 1.0
    exponent = (code >> 3) & 0xF
    mantissa = code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * 2.0**-6 * (mantissa / 8.0)
    return sign * 2.0 ** (exponent - 7) * (1.0 + mantissa / 8.0)


E4M3_VALUES = np.array([e4m3_value(code) for code in range(256)], dtype=np.float64)


def fp8_kv_attention_oracle(Q, K_fp8, V_fp8, k_scale, v_scale):
    """Challenge 98. Q (B, Hq, D) float; K_fp8, V_fp8 (B, Hkv, S, D) uint8 E4M3 codes; k_scale,
    v_scale (Hkv,) float -> output (B, Hq, D), float64.

    Every byte is decoded from its bits (E4M3_VALUES) and multiplied by its KV head's scale;
    query head h reads KV head h // (Hq / Hkv).
    """
    Q = np.asarray(Q, dtype=np.float64)
    K_fp8, V_fp8 = np.asarray(K_fp8, dtype=np.uint8), np.asarray(V_fp8, dtype=np.uint8)
    assert not np.isnan(E4M3_VALUES[K_fp8]).any() and not np.isnan(E4M3_VALUES[V_fp8]).any()
    batch, q_heads, _ = Q.shape
    kv_heads = K_fp8.shape[1]
    group = q_heads // kv_heads
    out = np.empty(Q.shape, dtype=np.float64)
    for b in range(batch):
        for kv in range(kv_heads):
            keys = E4M3_VALUES[K_fp8[b, kv]] * np.float64(k_scale[kv])
            values = E4M3_VALUES[V_fp8[b, kv]] * np.float64(v_scale[kv])
            for g in range(group):
                h = kv * group + g
                out[b, h] = _softmax_attention(Q[b, h], keys, values)
    return out


def mla_decode_oracle(q_nope, q_pe, kv_c, k_pe, softmax_scale):
    """Challenge 99, weight-absorbed MLA decode. q_nope (B, H, R), q_pe (B, H, P) float;
    kv_c (B, T, R), k_pe (B, T, P) float -> output (B, H, R), float64.

    For each batch and head: one score per cached token from the latent row and the rotary
    key, a max-subtracted softmax, and the weighted sum of the latent rows."""
    q_nope, q_pe, kv_c, k_pe = (np.asarray(x, dtype=np.float64) for x in (q_nope, q_pe, kv_c, k_pe))
    batch, heads, rank = q_nope.shape
    out = np.empty((batch, heads, rank), dtype=np.float64)
    for b in range(batch):
        for h in range(heads):
            scores = (kv_c[b] @ q_nope[b, h] + k_pe[b] @ q_pe[b, h]) * np.float64(softmax_scale)
            weights = np.exp(scores - scores.max())
            out[b, h] = (weights / weights.sum()) @ kv_c[b]
    return out
