from std.gpu.host import DeviceContext
from std.gpu import block_dim, block_idx, thread_idx
from std.memory import UnsafePointer
from std.math import ceildiv


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
    pass
