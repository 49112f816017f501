from std.gpu.host import DeviceContext
from std.gpu import block_dim, block_idx, thread_idx
from std.memory import UnsafePointer
from std.math import ceildiv


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
    pass
