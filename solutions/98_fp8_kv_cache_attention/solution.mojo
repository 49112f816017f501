# FP8 KV-cache attention in Mojo: one thread per (batch, query head, output column).
#
# Thread d of the block for (query head h, batch b) walks every cached token of KV head
# k = h // (num_q_heads // num_kv_heads). It decodes each uint8 E4M3 code from its bits (sign,
# 4-bit exponent with bias 7, 3-bit mantissa; exponent 0 is subnormal), recomputes the token's
# score q . K_e4m3 * k_scale[k] / sqrt(head_dim), keeps a running maximum m, running sum l and
# its own output element acc (an online softmax), and multiplies the finished element by
# v_scale[k] once. Every thread of a block decodes the same keys: clear rather than fast.
from std.gpu.host import DeviceContext
from std.gpu import block_dim, block_idx, thread_idx
from std.memory import UnsafePointer
from std.math import ceildiv, exp, sqrt


def e4m3_to_float(code: UInt8) -> Float32:
    # (-1)^s * (8 + m) * 2^e / 1024 for exponent e >= 1; (-1)^s * m / 512 for e = 0
    var bits = Int(code)
    var exponent = (bits >> 3) & 0xF
    var mantissa = Float32(bits & 0x7)
    var magnitude = mantissa / 512.0
    if exponent != 0:
        magnitude = (8.0 + mantissa) * Float32(1 << exponent) / 1024.0
    if bits >= 0x80:
        return -magnitude
    return magnitude


def attention_kernel(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K_fp8: UnsafePointer[UInt8, MutExternalOrigin],
    V_fp8: UnsafePointer[UInt8, MutExternalOrigin],
    k_scale: UnsafePointer[Float32, MutExternalOrigin],
    v_scale: UnsafePointer[Float32, MutExternalOrigin],
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
    var score_scale = k_scale[kv_head] / sqrt(Float32(dims))
    var q_row = (batch * Int(num_q_heads) + head) * dims
    var kv_base = (batch * Int(num_kv_heads) + kv_head) * tokens * dims
    var m = Float32(0.0)
    var l = Float32(0.0)
    var acc = Float32(0.0)
    for t in range(tokens):
        var row = kv_base + t * dims
        var dot = Float32(0.0)
        for i in range(dims):
            dot += Q[q_row + i] * e4m3_to_float(K_fp8[row + i])
        var s = dot * score_scale
        if t == 0:
            m = s  # the first score starts the running maximum
        var m_new = max(m, s)
        var rescale = exp(m - m_new)
        var p = exp(s - m_new)
        l = l * rescale + p
        acc = acc * rescale + p * e4m3_to_float(V_fp8[row + d])
        m = m_new
    output[q_row + d] = acc * v_scale[kv_head] / l


# Q, K_fp8, V_fp8, k_scale, v_scale, output are device pointers
@export
def solve(
    Q: UnsafePointer[Float32, MutExternalOrigin],
    K_fp8: UnsafePointer[UInt8, MutExternalOrigin],
    V_fp8: UnsafePointer[UInt8, MutExternalOrigin],
    k_scale: UnsafePointer[Float32, MutExternalOrigin],
    v_scale: UnsafePointer[Float32, MutExternalOrigin],
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
        K_fp8,
        V_fp8,
        k_scale,
        v_scale,
        output,
        num_q_heads,
        num_kv_heads,
        cache_len,
        head_dim,
        grid_dim=(Int(num_q_heads), Int(batch_size)),
        block_dim=Int(head_dim),
    )
    ctx.synchronize()
