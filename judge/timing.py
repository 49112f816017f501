"""GPU timing that an expert would accept: kernel spans from CUPTI, L2 evicted by reading,
SEM-based stopping, with CUDA events alongside.

One timed sample (``time_once``):

1. read a buffer twice the L2 size (``torch.sum``), which evicts the previous call's data
   without leaving dirty lines whose write-back would land inside the next timed call;
2. synchronize the device;
3. with CUPTI activity tracing on (PyTorch's Kineto profiler), record a start event, make the
   call, record an end event;
4. poll the end event until the current stream has passed it, then synchronize the whole
   device: the host time between the two ("tail") is how long work on other streams outlived
   the event window.

The sample's time is the call's GPU span: from the start of the first kernel, copy or memset
the call put on the device, on any stream, to the end of the last one: the activity records
Nsight Systems shows, and what FlashInfer's benchmarks time with CUPTI. It leaves out the
host's latency before the first kernel (45-85 us measured on H100 and H200 virtual machines,
more than a whole 20-70 us decode kernel), and keeps every gap between the call's kernels.
Where CUPTI records nothing (no Kineto, or another profiler holds CUPTI), the sample falls back
to the event window, which includes that launch latency and sees only the current stream; then
``escaped_work`` compares the tail with an empty call's to flag work left on another stream.

``sample_until_stable`` repeats samples until the standard error of the mean is under 1% of
the mean (at least 10 samples) or a time budget ends.
"""

import json
import math
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

MIN_RUNS = 10
MAX_RUNS = 1000
TARGET_RELATIVE_SEM = 0.01
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "decode-attention"
GPU_SPANS = "GPU span (CUPTI)"
EVENT_WINDOW = "CUDA events"


@dataclass(frozen=True)
class Sample:
    """One timed call, in milliseconds."""

    gpu_ms: Optional[float]  # first device activity's start to the last one's end; None: none seen
    event_ms: float  # CUDA events around the call on the current stream, launch latency included
    tail_ms: float  # device busy after the end event (other streams), as the host saw it

    @property
    def time_ms(self) -> float:
        """The GPU span where CUPTI saw the work, else the event window."""
        return self.event_ms if self.gpu_ms is None else self.gpu_ms


@dataclass
class Timing:
    """Statistics of one timed call over ``runs`` samples; times in milliseconds.

    ``method`` says what the statistics are of: GPU_SPANS when CUPTI saw the device work of
    every sample, else EVENT_WINDOW (the event windows, launch latency included).
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    runs: int
    method: str
    event_median_ms: float  # the event windows' median: launch latency (and tracing) included
    tail_median_ms: float  # device busy after the end event (other streams), median
    samples_ms: List[float] = field(repr=False, default_factory=list)

    @classmethod
    def from_samples(cls, samples: List[Sample]) -> "Timing":
        spans = [s.gpu_ms for s in samples]
        method = GPU_SPANS if all(ms is not None for ms in spans) else EVENT_WINDOW
        times = spans if method == GPU_SPANS else [s.event_ms for s in samples]
        return cls(
            median_ms=statistics.median(times),
            mean_ms=statistics.fmean(times),
            std_ms=statistics.stdev(times) if len(times) > 1 else 0.0,
            min_ms=min(times),
            runs=len(times),
            method=method,
            event_median_ms=statistics.median(s.event_ms for s in samples),
            tail_median_ms=statistics.median(s.tail_ms for s in samples),
            samples_ms=list(times),
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("samples_ms")
        return out


def l2_cache_bytes(device: Optional[torch.device] = None) -> int:
    """The GPU's L2 cache size in bytes (64 MiB where the driver does not say)."""
    props = torch.cuda.get_device_properties(device)
    return getattr(props, "L2_cache_size", 0) or 64 * 2**20


class L2Flusher:
    """Evicts L2 by reading a buffer of twice its size (read-only: no dirty lines)."""

    def __init__(self, device: Optional[torch.device] = None):
        self.buffer = torch.ones(
            2 * l2_cache_bytes(device) // 4, dtype=torch.float32, device=device
        )

    def __call__(self):
        self.buffer.sum()


class DeviceActivity:
    """Context manager that records, through CUPTI, the device activities (kernels, copies,
    memsets, on every stream and from every library in this process) that start inside it;
    ``span_ms`` is then the first one's start to the last one's end, or None when none was
    recorded. Leave the block only after synchronizing the device."""

    def __init__(self):
        self.span_ms: Optional[float] = None

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        self.profiler = profile(activities=[ProfilerActivity.CUDA])
        with warnings.catch_warnings():  # a note that each profile keeps only its own events
            warnings.filterwarnings("ignore", message=".*Profiler clears events")
            self.profiler.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        from torch.autograd import DeviceType

        if exc_type is not None:  # the call failed: its error, not the profiler's, is reported
            try:
                self.profiler.__exit__(exc_type, exc, tb)
            except Exception:
                pass
            return False
        self.profiler.__exit__(None, None, None)
        results = getattr(self.profiler.profiler, "kineto_results", None)
        events = (
            [e for e in results.events() if e.device_type() == DeviceType.CUDA] if results else []
        )
        if events:
            first = min(e.start_ns() for e in events)
            self.span_ms = (max(e.end_ns() for e in events) - first) / 1e6
        return False


def time_once(call: Callable[[], None], flush: L2Flusher) -> Sample:
    """One sample of ``call``, L2 evicted and the device idle before it."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    flush()
    torch.cuda.synchronize()
    with DeviceActivity() as activity:
        start.record()
        call()
        end.record()
        while not end.query():
            pass
        end_seen = time.perf_counter()
        torch.cuda.synchronize()
        tail_ms = (time.perf_counter() - end_seen) * 1e3
    return Sample(activity.span_ms, start.elapsed_time(end), tail_ms)


def keep_sampling(times_ms: List[float], started: float, budget_s: float) -> bool:
    """Whether to take another sample: fewer than 10, or SEM above 1% of the mean with time
    and run budget left."""
    n = len(times_ms)
    if n < MIN_RUNS:
        return True
    if n >= MAX_RUNS or time.perf_counter() - started > budget_s:
        return False
    mean = statistics.fmean(times_ms)
    sem = statistics.stdev(times_ms) / math.sqrt(n)
    return mean > 0 and sem / mean > TARGET_RELATIVE_SEM


def sample_until_stable(
    sample: Callable[[], Sample],
    prepare: Callable[[], None] = lambda: None,
    check: Callable[[], None] = lambda: None,
    budget_s: float = 10.0,
) -> Timing:
    """Take samples until ``keep_sampling`` says stop.

    Args:
        sample: one timed sample: ``time_once`` here, or the same function run in the judge's
            worker process.
        prepare: run before each sample, untimed (fresh inputs).
        check: run after each sample, untimed (output verification); may raise to abort.
        budget_s: wall-clock seconds after which sampling stops (at least 10 samples).
    """
    samples: List[Sample] = []
    started = time.perf_counter()
    while keep_sampling([s.time_ms for s in samples], started, budget_s):
        prepare()
        samples.append(sample())
        check()
    return Timing.from_samples(samples)


def time_calls(
    call: Callable[[], None],
    prepare: Callable[[], None] = lambda: None,
    check: Callable[[], None] = lambda: None,
    warmup: int = 3,
    budget_s: float = 10.0,
) -> Timing:
    """Time ``call`` in this process, ``warmup`` untimed calls first (JIT, autotuning), then
    samples as ``sample_until_stable`` takes them."""
    flush = L2Flusher()
    for _ in range(warmup):
        prepare()
        call()
        torch.cuda.synchronize()
    return sample_until_stable(lambda: time_once(call, flush), prepare, check, budget_s)


def sync_tail_ms(samples: int = 20) -> float:
    """Median tail of an empty call in ms: the synchronize latency that ``escaped_work``
    subtracts."""
    flush = L2Flusher()
    return statistics.median(time_once(lambda: None, flush).tail_ms for _ in range(samples))


def escaped_work(timing: Timing, empty_tail_ms: float) -> Optional[str]:
    """A message when event-window timing missed the call's GPU work on another stream, else
    None. GPU spans see every stream, so only EVENT_WINDOW timings can miss it.

    The events cover only the current stream; the tail covers the rest of the device. Its
    median beyond an empty call's may be at most max(50 us, 20% of the event time).
    """
    if timing.method != EVENT_WINDOW:
        return None
    excess = timing.tail_median_ms - empty_tail_ms
    allowed = max(0.05, 0.2 * timing.median_ms)
    if excess > allowed:
        return (
            f"the device stayed busy {excess * 1e3:.0f} us after the timed window closed "
            f"(event median {timing.median_ms * 1e3:.1f} us): work left running on another "
            "stream escapes CUDA-event timing; launch it on the current stream"
        )
    return None


@dataclass(frozen=True)
class ReadFloor:
    """The device's streaming-read floor: the fastest of judge.floor's read kernels.

    Attributes:
        gbps: the fastest kernel's bandwidth in GB/s (1e9 bytes/s).
        kernel: its name.
        per_kernel_gbps: every kernel's bandwidth in GB/s, by name.
        skipped: "name: reason" for each read kernel left out (did not build or misread).
        hbm_peak_gbps: the memory's theoretical peak (judge.floor.hbm_peak_gbps), if known.
    """

    gbps: float
    kernel: str
    per_kernel_gbps: Dict[str, float]
    skipped: List[str]
    hbm_peak_gbps: Optional[float]


def _device_key() -> str:
    props = torch.cuda.get_device_properties(None)
    return f"{props.name}|{props.total_memory}|{torch.version.cuda}|best-of-read-kernels"


def read_floor(refresh: bool = False, nbytes: int = 2 * 2**30) -> ReadFloor:
    """The device's measured streaming-read floor (``ReadFloor``).

    Measured once per device: every read kernel of ``judge.floor.read_kernels`` over the same
    ``nbytes`` (L2 evicted by reading before each sample, median of the GPU spans); the
    fastest one is the floor. Cached in ``~/.cache/decode-attention/bandwidth.json``.
    """
    from judge.floor import hbm_peak_gbps, read_kernels

    cache = CACHE_DIR / "bandwidth.json"
    key = _device_key()
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if isinstance(known.get(key), dict) and not refresh:
        return ReadFloor(**known[key])
    skipped: List[str] = []
    per_kernel = {}
    kernels = read_kernels(nbytes, skipped)
    for kernel in kernels:
        timing = time_calls(kernel.call, budget_s=3.0)
        per_kernel[kernel.name] = nbytes / (timing.median_ms * 1e-3) / 1e9
    del kernels, kernel  # the buffer, before its memory goes back to the driver
    torch.cuda.empty_cache()
    best = max(per_kernel, key=per_kernel.get)
    floor = ReadFloor(per_kernel[best], best, per_kernel, skipped, hbm_peak_gbps())
    known[key] = asdict(floor)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, indent=2))
    return floor


def streaming_read_gbps(refresh: bool = False, nbytes: int = 2 * 2**30) -> float:
    """The device's streaming-read floor in GB/s: ``read_floor(...).gbps``."""
    return read_floor(refresh, nbytes).gbps


@dataclass
class Roofline:
    """Achieved bandwidth of a timed call against the device's streaming-read floor and, where
    known, the memory's theoretical peak (GB/s are 1e9 bytes/s)."""

    bytes_moved: int
    achieved_gbps: float
    streaming_read_gbps: float
    percent_of_streaming_read: float
    suspicious: bool  # faster than the memory system can move the bytes
    floor_kernel: str = ""  # the read kernel that set the floor
    hbm_peak_gbps: Optional[float] = None
    percent_of_hbm_peak: Optional[float] = None

    @classmethod
    def of(
        cls,
        bytes_moved: int,
        median_ms: float,
        stream_gbps: float,
        floor_kernel: str = "",
        hbm_peak_gbps: Optional[float] = None,
    ) -> "Roofline":
        achieved = bytes_moved / (median_ms * 1e-3) / 1e9 if median_ms > 0 else math.inf
        percent = 100.0 * achieved / stream_gbps
        of_peak = 100.0 * achieved / hbm_peak_gbps if hbm_peak_gbps else None
        # 15% above a measured streaming read is past what any kernel sustains from DRAM
        return cls(
            bytes_moved,
            achieved,
            stream_gbps,
            percent,
            percent > 115.0,
            floor_kernel,
            hbm_peak_gbps,
            of_peak,
        )
