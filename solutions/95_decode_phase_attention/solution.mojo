# Decode-phase attention in Mojo: one thread per (batch, query head, output column).
#
# Thread d of the block for (query head h, batch b) walks every cached token of KV head
# h // (num_q_heads / num_kv_heads): it recomputes the token's score q . k / sqrt(head_dim),
# keeps a running maximum m, running sum l and its own output element acc, and adds
# V[b, kv, t, d] weighted by exp(score - m). Every thread of a block computes the same scores:
# clear rather than fast.
from std.gpu.host import DeviceContext
from std.gpu import block_dim, block_idx, thread_idx
from std.memory import UnsafePointer
from std.math import ceildiv, exp, sqrt


def attention_kernel(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K: UnsafePointer[Float32, MutExternalOrigin],
    V: UnsafePointer[Float32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    num_q_heads: Int32,
    num_kv_heads: Int32,
    cache_len: Int32,
    head_dim: Int32,
):
    var head = Int(block_idx.x)
    var batch = Int(block_idx.y)
    var d = Int(thread_idx.x)
    var dims = Int(head_dim)
    var tokens = Int(cache_len)
    if d >= dims:
        return
    var kv_head = head // (Int(num_q_heads) // Int(num_kv_heads))
    var scale = Float32(1.0) / sqrt(Float32(dims))
    var q_row = (batch * Int(num_q_heads) + head) * dims
    var kv_base = (batch * Int(num_kv_heads) + kv_head) * tokens * dims
    var m = Float32(0.0)
    var l = Float32(0.0)
    var acc = Float32(0.0)
    for t in range(tokens):
        var row = kv_base + t * dims
        var dot = Float32(0.0)
        for i in range(dims):
            dot += Q[q_row + i] * K[row + i]
        var s = dot * scale
        if t == 0:
            m = s  # the first score starts the running maximum
        var m_new = max(m, s)
        var rescale = exp(m - m_new)
        var p = exp(s - m_new)
        l = l * rescale + p
        acc = acc * rescale + p * V[row + d]
        m = m_new
    output[q_row + d] = acc / l


# Q, K, V, output are device pointers
@export
def solve(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K: UnsafePointer[Float32, MutExternalOrigin],
    V: UnsafePointer[Float32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    batch_size: Int32,
    num_q_heads: Int32,
    num_kv_heads: Int32,
    cache_len: Int32,
    head_dim: Int32,
) raises:
    var ctx = DeviceContext()
    var kernel = ctx.compile_function[attention_kernel, attention_kernel]()
    ctx.enqueue_function(
        kernel,
        Q,
        K,
        V,
        output,
        num_q_heads,
        num_kv_heads,
        cache_len,
        head_dim,
        grid_dim=(Int(num_q_heads), Int(batch_size)),
        block_dim=Int(head_dim),
    )
    ctx.synchronize()
