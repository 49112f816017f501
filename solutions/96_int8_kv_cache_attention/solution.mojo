# INT8 KV-cache attention in Mojo: one thread per (head, output column), online softmax.
#
# Thread d of block h walks all tokens of head h: it recomputes each token's score (the dot
# product of q with the int8 key row, times the key's scale and 1/sqrt(head_dim)), keeps a
# running maximum m, running sum l and its own output element acc, and adds the token's
# value V_int8[h, t, d] * v_scale[h, t] weighted by exp(score - m). Every thread of a block
# computes the same scores: clear rather than fast.
from std.gpu.host import DeviceContext
from std.gpu import block_dim, block_idx, thread_idx
from std.memory import UnsafePointer
from std.math import ceildiv, exp, sqrt


def attention_kernel(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K_int8: UnsafePointer[Int8, MutExternalOrigin],
    V_int8: UnsafePointer[Int8, MutExternalOrigin],
    k_scale: UnsafePointer[Float32, MutExternalOrigin],
    v_scale: UnsafePointer[Float32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    seq_len: Int32,
    head_dim: Int32,
):
    var head = Int(block_idx.x)
    var d = Int(thread_idx.x)
    var dims = Int(head_dim)
    var tokens = Int(seq_len)
    if d >= dims:
        return
    var scale = Float32(1.0) / sqrt(Float32(dims))
    var q_row = head * dims
    var m = Float32(0.0)
    var l = Float32(0.0)
    var acc = Float32(0.0)
    for t in range(tokens):
        var row = (head * tokens + t) * dims
        var dot = Float32(0.0)
        for i in range(dims):
            dot += Q[q_row + i] * K_int8[row + i].cast[DType.float32]()
        var s = dot * k_scale[head * tokens + t] * scale
        if t == 0:
            m = s  # the first score starts the running maximum
        var m_new = max(m, s)
        var rescale = exp(m - m_new)
        var p = exp(s - m_new)
        l = l * rescale + p
        var v = V_int8[row + d].cast[DType.float32]() * v_scale[head * tokens + t]
        acc = acc * rescale + p * v
        m = m_new
    output[q_row + d] = acc / l


# Q, K_int8, V_int8, k_scale, v_scale, output are device pointers
@export
def solve(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K_int8: UnsafePointer[Int8, MutExternalOrigin],
    V_int8: UnsafePointer[Int8, MutExternalOrigin],
    k_scale: UnsafePointer[Float32, MutExternalOrigin],
    v_scale: UnsafePointer[Float32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    num_heads: Int32,
    seq_len: Int32,
    head_dim: Int32,
) raises:
    var ctx = DeviceContext()
    var kernel = ctx.compile_function[attention_kernel, attention_kernel]()
    ctx.enqueue_function(
        kernel,
        Q,
        K_int8,
        V_int8,
        k_scale,
        v_scale,
        output,
        seq_len,
        head_dim,
        grid_dim=Int(num_heads),
        block_dim=Int(head_dim),
    )
    ctx.synchronize()
