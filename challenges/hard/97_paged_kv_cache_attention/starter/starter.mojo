from std.gpu.host import DeviceContext
from std.gpu import block_dim, block_idx, thread_idx
from std.memory import UnsafePointer
from std.math import ceildiv


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
    pass
