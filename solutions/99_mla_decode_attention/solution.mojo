# MLA decode (weight-absorbed) in Mojo: one warp per (batch, head), online softmax.
#
# The warp for (head h, batch b) walks every cached token t of sequence b. Its 32 lanes split
# the latent row kv_c[b, t] (lane l holds columns l, l + 32, ..., at most 16) and the rotary key
# k_pe[b, t] (at most 2 columns each): each lane adds its share of the score
# (q_nope[b, h] . kv_c[b, t] + q_pe[b, h] . k_pe[b, t]) * scale, a butterfly of shuffles sums the
# shares on every lane, and each lane keeps a running maximum m, running sum l and its own
# output columns acc, adding its columns of the same latent row weighted by exp(score - m): the
# latent row is both the key and the value. Clear rather than fast: every head re-reads the
# cache its sequence's heads share, on CUDA cores.
from std.gpu.host import DeviceContext
from std.gpu import block_idx, thread_idx
from std.gpu.primitives.warp import shuffle_xor
from std.memory import UnsafePointer
from std.math import exp

comptime RANK_PER_LANE = 16  # kv_lora_rank <= 512 = 32 lanes * 16
comptime ROPE_PER_LANE = 2  # rope_dim <= 64 = 32 lanes * 2


def mla_decode_kernel(
    q_nope: UnsafePointer[Float32, MutExternalOrigin],
    q_pe: UnsafePointer[Float32, MutExternalOrigin],
    kv_c: UnsafePointer[Float32, MutExternalOrigin],
    k_pe: UnsafePointer[Float32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    num_heads: Int32,
    cache_len: Int32,
    kv_lora_rank: Int32,
    rope_dim: Int32,
    softmax_scale: Float32,
):
    var head = Int(block_idx.x)
    var batch = Int(block_idx.y)
    var lane = Int(thread_idx.x)
    var rank = Int(kv_lora_rank)
    var rope = Int(rope_dim)
    var tokens = Int(cache_len)
    var q_row = batch * Int(num_heads) + head
    var q = InlineArray[Float32, RANK_PER_LANE](fill=0.0)
    var q_rot = InlineArray[Float32, ROPE_PER_LANE](fill=0.0)
    var acc = InlineArray[Float32, RANK_PER_LANE](fill=0.0)
    comptime for i in range(RANK_PER_LANE):
        if lane + 32 * i < rank:
            q[i] = q_nope[q_row * rank + lane + 32 * i] * softmax_scale
    comptime for i in range(ROPE_PER_LANE):
        if lane + 32 * i < rope:
            q_rot[i] = q_pe[q_row * rope + lane + 32 * i] * softmax_scale
    var m = Float32(0.0)
    var l = Float32(0.0)
    for t in range(tokens):
        var row = batch * tokens + t
        var share = Float32(0.0)
        comptime for i in range(RANK_PER_LANE):
            if lane + 32 * i < rank:
                share += q[i] * kv_c[row * rank + lane + 32 * i]
        comptime for i in range(ROPE_PER_LANE):
            if lane + 32 * i < rope:
                share += q_rot[i] * k_pe[row * rope + lane + 32 * i]
        comptime for k in range(5):  # offsets 16, 8, 4, 2, 1: the sum on every lane
            share += shuffle_xor(share, UInt32(16 >> k))
        if t == 0:
            m = share  # the first score starts the running maximum
        var m_new = max(m, share)
        var rescale = exp(m - m_new)
        var p = exp(share - m_new)
        l = l * rescale + p
        comptime for i in range(RANK_PER_LANE):
            if lane + 32 * i < rank:
                acc[i] = acc[i] * rescale + p * kv_c[row * rank + lane + 32 * i]
        m = m_new
    comptime for i in range(RANK_PER_LANE):
        if lane + 32 * i < rank:
            output[q_row * rank + lane + 32 * i] = acc[i] / l


# q_nope, q_pe, kv_c, k_pe, output are device pointers
@export
def solve(
    q_nope: UnsafePointer[Float32, MutExternalOrigin],
    q_pe: UnsafePointer[Float32, MutExternalOrigin],
    kv_c: UnsafePointer[Float32, MutExternalOrigin],
    k_pe: UnsafePointer[Float32, MutExternalOrigin],
    output: UnsafePointer[Float32, MutExternalOrigin],
    batch_size: Int32,
    num_heads: Int32,
    cache_len: Int32,
    kv_lora_rank: Int32,
    rope_dim: Int32,
    softmax_scale: Float32,
) raises:
    var ctx = DeviceContext()
    var kernel = ctx.compile_function[mla_decode_kernel, mla_decode_kernel]()
    ctx.enqueue_function(
        kernel,
        q_nope,
        q_pe,
        kv_c,
        k_pe,
        output,
        num_heads,
        cache_len,
        kv_lora_rank,
        rope_dim,
        softmax_scale,
        grid_dim=(Int(num_heads), Int(batch_size)),
        block_dim=32,
    )
    ctx.synchronize()
