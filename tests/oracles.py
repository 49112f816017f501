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
