"""The bandwidth floor: the fastest of several kernels that only read the same bytes, and the
HBM peak from the memory's clock and bus width.

A decode-attention kernel reads each byte of its KV cache once, so no correct one can beat a
kernel that does nothing but read as many bytes. One read kernel is not such a floor: on an
H200 (scripts/benchmark.py) the 96 CUDA editorial beat torch's row sum of the same bytes by
1.6%, and by 4% at 4K tokens. So the floor is the best of:

- "torch row sum": ``buffer.sum(dim=1)`` over rows of 64 KiB, one kernel (a sum to one
  scalar adds a memset and a second launch, whose host latency would land inside its span);
- "CUDA float4 one-wave read": ``floor_read.cu``, one wave of resident blocks, 16-byte
  streaming loads (``__ldcs``), four in flight per thread (built with nvcc, like a CUDA
  submission);
- "Triton one-wave read": a grid of a few programs per SM, each reading its slice in 16 KiB
  tiles, loads marked evict-first (where Triton is installed).

Each kernel writes a sum of what it read, checked once against the buffer's known sum, so a
kernel that skipped bytes is dropped rather than trusted. A kernel that does not build or
fails its check is left out, with the reason in ``skipped``; the torch row sum always runs.
"""

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch

ROW_FLOATS = 16384  # 64 KiB rows
READ_SOURCE = Path(__file__).with_name("floor_read.cu")
CUDA_MAX_BLOCKS = 65536  # floor_read.cu's MAX_BLOCKS
TRITON_PROGRAMS_PER_SM = 4
TRITON_TILE = 4096  # floats per program step (16 KiB)


@dataclass(frozen=True)
class ReadKernel:
    """One way to read a buffer once; ``call()`` launches it on the current stream."""

    name: str
    call: Callable[[], None]


def read_buffer(nbytes: int) -> torch.Tensor:
    """A (rows, 16384) float32 buffer of ones on the GPU, ``nbytes`` rounded up to 64 KiB."""
    rows = max(1, -(-nbytes // (ROW_FLOATS * 4)))
    return torch.ones(rows, ROW_FLOATS, dtype=torch.float32, device="cuda")


def read_kernels(nbytes: int, skipped: Optional[List[str]] = None) -> List[ReadKernel]:
    """Every available read kernel over one fresh buffer of ``nbytes`` (rounded up to 64 KiB).

    Args:
        nbytes: bytes each call reads.
        skipped: where given, gets one "name: reason" line per kernel left out.

    Returns:
        "torch row sum" first, then the CUDA and Triton read kernels that built and read
        every element.
    """
    buffer = read_buffer(nbytes)
    kernels = [ReadKernel("torch row sum", lambda: buffer.sum(dim=1))]
    for name, make in (
        ("CUDA float4 one-wave read", _cuda_read),
        ("Triton one-wave read", _triton_read),
    ):
        try:
            call, total = make(buffer)
            call()
            torch.cuda.synchronize()
            got = float(total())
        except Exception as error:  # noqa: BLE001 - any failure only leaves this kernel out
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            if skipped is not None:
                skipped.append(f"{name}: {reason}")
            continue
        if got != buffer.numel():
            if skipped is not None:
                skipped.append(f"{name}: read a sum of {got:.0f}, not {buffer.numel()}")
            continue
        kernels.append(ReadKernel(name, call))
    return kernels


_cuda_library = {}  # architecture -> loaded call


def _cuda_read(buffer: torch.Tensor):
    """floor_read.cu over ``buffer``: (call, total of what the last call read)."""
    from judge.languages import LANGUAGES
    from judge.languages.cuda import gpu_arch
    from judge.signature import parse_signature
    from judge.timing import CACHE_DIR

    params = parse_signature(
        {
            "input": (ctypes.POINTER(ctypes.c_float), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "n": (ctypes.c_int, "in"),
        }
    )
    if buffer.numel() >= 2**31:
        raise ValueError("floor_read.cu takes an int count: at most 2^31 - 1 floats")
    cuda = LANGUAGES["cuda"]
    missing = cuda.missing_toolchain()
    if missing:
        raise RuntimeError(missing)
    arch = gpu_arch()
    if arch not in _cuda_library:
        artifact = cuda.build(READ_SOURCE, params, CACHE_DIR / "builds")
        _cuda_library[arch] = cuda.load(artifact, params, "cuda")
    solve = _cuda_library[arch]
    sums = torch.zeros(CUDA_MAX_BLOCKS, dtype=torch.float32, device=buffer.device)
    kwargs = {"input": buffer, "output": sums, "n": buffer.numel()}
    return (lambda: solve(kwargs)), (lambda: sums.double().sum().item())


try:  # Triton is an optional extra
    import triton
    import triton.language as tl
except ImportError:
    triton = None
else:

    @triton.jit
    def _read_slice(X, Sums, count, per_program, TILE: tl.constexpr):
        """Program p reads X[p * per_program : (p + 1) * per_program] in TILE-float steps
        and stores the sum of what it read in Sums[p]."""
        program = tl.program_id(0)
        start = program.to(tl.int64) * per_program
        acc = tl.zeros((TILE,), tl.float32)
        for offset in range(0, per_program, TILE):
            index = start + offset + tl.arange(0, TILE)
            acc += tl.load(X + index, mask=index < count, other=0.0, eviction_policy="evict_first")
        tl.store(Sums + program, tl.sum(acc, axis=0))


def _triton_read(buffer: torch.Tensor):
    """A Triton read kernel over ``buffer``: (call, total of what the last call read)."""
    if triton is None:
        raise RuntimeError("Triton is not installed")
    kernel = _read_slice
    on_gpu = buffer.is_cuda  # on the CPU: Triton's interpreter, as the tests run it
    sms = torch.cuda.get_device_properties(buffer.device).multi_processor_count if on_gpu else 4
    programs = sms * TRITON_PROGRAMS_PER_SM
    count = buffer.numel()
    per_program = triton.cdiv(triton.cdiv(count, programs), TRITON_TILE) * TRITON_TILE
    programs = triton.cdiv(count, per_program)
    sums = torch.zeros(programs, dtype=torch.float32, device=buffer.device)

    def call():
        kernel[(programs,)](buffer, sums, count, per_program, TILE=TRITON_TILE, num_warps=8)

    return call, (lambda: sums.double().sum().item())


def hbm_peak_gbps(device: Optional[int] = None) -> Optional[float]:
    """The memory's theoretical peak in GB/s (1e9 B/s): 2 (double data rate) x the maximum
    memory clock x the bus width in bytes, the formula of NVIDIA's "How to Query Device
    Properties" (CUDA C++ blog), with both read through NVML (nvidia-ml-py) for the GPU of
    torch's device ``device`` (the current one by default), found by its PCI address so that
    CUDA_VISIBLE_DEVICES does not mismatch them. None where NVML or the values are missing.

    An H200 (data sheet: 4.8 TB/s) reports a 3201 MHz maximum memory clock (nvidia-smi);
    its six HBM3e stacks have 1024 bits each, so 2 x 3201 MHz x 768 B = 4917 GB/s.
    """
    try:
        import pynvml
    except ImportError:
        return None
    try:
        props = torch.cuda.get_device_properties(device)
        address = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(address)
            clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
            bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing or not answering: no peak
        return None
    if not clock_mhz or not bus_bits:
        return None
    return 2 * clock_mhz * 1e6 * bus_bits / 8 / 1e9
