# Paged KV-cache decode attention in Mojo: one thread per (sequence, query head, column).
#
# Thread d of the block for (query head h, sequence b) walks the sequence's seq_lens[b] tokens:
# token t is slot t % block_size of block block_table[b, t // block_size], so its row of KV head
# h // (num_q_heads / num_kv_heads) starts at ((block * block_size + slot) * num_kv_heads +
# kv_head) * head_dim. The thread recomputes the token's score q . k / sqrt(head_dim), keeps a
# running maximum m, running sum l and its own output element acc, and adds the value at
# column d weighted by exp(score - m). Only table entries below seq_len are followed. Every
# thread of a block computes the same scores: clear rather than fast.
from std.gpu.host import DeviceContext
from std.gpu import block_dim, block_idx, thread_idx
from std.memory import UnsafePointer
from std.math import ceildiv, exp, sqrt


def paged_attention_kernel(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K_cache: UnsafePointer[Float32, MutExternalOrigin],
    V_cache: UnsafePointer[Float32, MutExternalOrigin],
    block_table: UnsafePointer[Int32, MutExternalOrigin],
    seq_lens: UnsafePointer[Int32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    num_q_heads: Int32,
    num_kv_heads: Int32,
    head_dim: Int32,
    block_size: Int32,
    max_blocks_per_seq: Int32,
):
    var head = Int(block_idx.x)
    var batch = Int(block_idx.y)
    var d = Int(thread_idx.x)
    var dims = Int(head_dim)
    if d >= dims:
        return
    var kv_heads = Int(num_kv_heads)
    var kv_head = head // (Int(num_q_heads) // kv_heads)
    var page_size = Int(block_size)
    var tokens = Int(seq_lens[batch])
    var table_row = batch * Int(max_blocks_per_seq)
    var scale = Float32(1.0) / sqrt(Float32(dims))
    var q_row = (batch * Int(num_q_heads) + head) * dims
    var m = Float32(0.0)
    var l = Float32(0.0)
    var acc = Float32(0.0)
    for t in range(tokens):
        var block = Int(block_table[table_row + t // page_size])
        var row = ((block * page_size + t % page_size) * kv_heads + kv_head) * dims
        var dot = Float32(0.0)
        for i in range(dims):
            dot += Q[q_row + i] * K_cache[row + i]
        var s = dot * scale
        if t == 0:
            m = s  # the first score starts the running maximum
        var m_new = max(m, s)
        var rescale = exp(m - m_new)
        var p = exp(s - m_new)
        l = l * rescale + p
        acc = acc * rescale + p * V_cache[row + d]
        m = m_new
    output[q_row + d] = acc / l


# Q, K_cache, V_cache, block_table, seq_lens, output are device pointers
@export
def solve(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K_cache: UnsafePointer[Float32, MutExternalOrigin],
    V_cache: UnsafePointer[Float32, MutExternalOrigin],
    block_table: UnsafePointer[Int32, MutExternalOrigin],
    seq_lens: UnsafePointer[Int32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    batch_size: Int32,
    num_q_heads: Int32,
    num_kv_heads: Int32,
    head_dim: Int32,
    block_size: Int32,
    max_blocks_per_seq: Int32,
    num_blocks: Int32,
) raises:
    var ctx = DeviceContext()
    var kernel = ctx.compile_function[paged_attention_kernel, paged_attention_kernel]()
    ctx.enqueue_function(
        kernel,
        Q,
        K_cache,
        V_cache,
        block_table,
        seq_lens,
        output,
        num_q_heads,
        num_kv_heads,
        head_dim,
        block_size,
        max_blocks_per_seq,
        grid_dim=(Int(num_q_heads), Int(batch_size)),
        block_dim=Int(head_dim),
    )
    ctx.synchronize()
