"""GPU timing that an expert would accept: CUDA events, L2 evicted by reading, SEM-based stopping.

One timed sample (``time_once``):

1. read a buffer twice the L2 size (``torch.sum``), which evicts the previous call's data
   without leaving dirty lines whose write-back would land inside the next timed window;
2. synchronize the device;
3. record a start event, make the call, record an end event;
4. poll the end event until the current stream has passed it, then synchronize the whole
   device: the host time between the two ("tail") is how long work on other streams outlived
   the timed window. The event time excludes host synchronization latency altogether.

``sample_until_stable`` repeats samples until the standard error of the mean is under 1% of
the mean (at least 10 samples) or a time budget ends. ``escaped_work`` compares the tail with
an empty call's, to flag work left running on another stream.
"""

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

MIN_RUNS = 10
MAX_RUNS = 1000
TARGET_RELATIVE_SEM = 0.01
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "decode-attention"


@dataclass
class Timing:
    """Statistics of one timed call over ``runs`` samples; times in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    runs: int
    tail_median_ms: float  # device busy after the end event (other streams), median
    samples_ms: List[float] = field(repr=False, default_factory=list)

    @classmethod
    def from_samples(cls, event_ms: List[float], tail_ms: List[float]) -> "Timing":
        return cls(
            median_ms=statistics.median(event_ms),
            mean_ms=statistics.fmean(event_ms),
            std_ms=statistics.stdev(event_ms) if len(event_ms) > 1 else 0.0,
            min_ms=min(event_ms),
            runs=len(event_ms),
            tail_median_ms=statistics.median(tail_ms),
            samples_ms=list(event_ms),
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("samples_ms")
        return out


class L2Flusher:
    """Evicts L2 by reading a buffer of twice its size (read-only: no dirty lines)."""

    def __init__(self, device: Optional[torch.device] = None):
        props = torch.cuda.get_device_properties(device)
        l2_bytes = getattr(props, "L2_cache_size", 0) or 64 * 2**20
        self.buffer = torch.ones(2 * l2_bytes // 4, dtype=torch.float32, device=device)

    def __call__(self):
        self.buffer.sum()


def time_once(call: Callable[[], None], flush: L2Flusher) -> Tuple[float, float]:
    """One sample of ``call``: (event time, tail time) in milliseconds.

    The tail is the host time from the end event's completion to the end of a device-wide
    synchronize: about the synchronize latency, unless the call left work on other streams.
    """
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    flush()
    torch.cuda.synchronize()
    start.record()
    call()
    end.record()
    while not end.query():
        pass
    end_seen = time.perf_counter()
    torch.cuda.synchronize()
    tail_ms = (time.perf_counter() - end_seen) * 1e3
    return start.elapsed_time(end), tail_ms


def keep_sampling(event_ms: List[float], started: float, budget_s: float) -> bool:
    """Whether to take another sample: fewer than 10, or SEM above 1% of the mean with time
    and run budget left."""
    n = len(event_ms)
    if n < MIN_RUNS:
        return True
    if n >= MAX_RUNS or time.perf_counter() - started > budget_s:
        return False
    mean = statistics.fmean(event_ms)
    sem = statistics.stdev(event_ms) / math.sqrt(n)
    return mean > 0 and sem / mean > TARGET_RELATIVE_SEM


def sample_until_stable(
    sample: Callable[[], Tuple[float, float]],
    prepare: Callable[[], None] = lambda: None,
    check: Callable[[], None] = lambda: None,
    budget_s: float = 10.0,
) -> Timing:
    """Take samples until ``keep_sampling`` says stop.

    Args:
        sample: one timed sample, returning (event ms, tail ms): ``time_once`` here, or the
            same function run in the judge's worker process.
        prepare: run before each sample, untimed (fresh inputs).
        check: run after each sample, untimed (output verification); may raise to abort.
        budget_s: wall-clock seconds after which sampling stops (at least 10 samples).
    """
    event_ms, tail_ms = [], []
    started = time.perf_counter()
    while keep_sampling(event_ms, started, budget_s):
        prepare()
        event, tail = sample()
        check()
        event_ms.append(event)
        tail_ms.append(tail)
    return Timing.from_samples(event_ms, tail_ms)


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
    return statistics.median(time_once(lambda: None, flush)[1] for _ in range(samples))


def escaped_work(timing: Timing, empty_tail_ms: float) -> Optional[str]:
    """A message when the call's GPU work outlasts its timed window (work left on another
    stream), else None.

    The events cover only the current stream; the tail covers the rest of the device. Its
    median beyond an empty call's may be at most max(50 us, 20% of the event time).
    """
    excess = timing.tail_median_ms - empty_tail_ms
    allowed = max(0.05, 0.2 * timing.median_ms)
    if excess > allowed:
        return (
            f"the device stayed busy {excess * 1e3:.0f} us after the timed window closed "
            f"(event median {timing.median_ms * 1e3:.1f} us): work left running on another "
            "stream escapes CUDA-event timing; launch it on the current stream"
        )
    return None


def _device_key() -> str:
    props = torch.cuda.get_device_properties(None)
    return f"{props.name}|{props.total_memory}|{torch.version.cuda}"


def streaming_read_gbps(refresh: bool = False, nbytes: int = 2 * 2**30) -> float:
    """The device's measured streaming-read bandwidth in GB/s (1e9 bytes/s).

    Measured once per device with ``torch.sum`` over ``nbytes`` of float32 (L2 evicted by
    reading before each sample, median of the samples) and cached in
    ``~/.cache/decode-attention/bandwidth.json``.
    """
    cache = CACHE_DIR / "bandwidth.json"
    key = _device_key()
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key in known and not refresh:
        return known[key]
    buffer = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda")
    timing = time_calls(lambda: buffer.sum(), budget_s=3.0)
    gbps = nbytes / (timing.median_ms * 1e-3) / 1e9
    known[key] = gbps
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, indent=2))
    return gbps


@dataclass
class Roofline:
    """Achieved bandwidth of a timed call against the device's streaming read."""

    bytes_moved: int
    achieved_gbps: float
    streaming_read_gbps: float
    percent_of_streaming_read: float
    suspicious: bool  # faster than the memory system can move the bytes

    @classmethod
    def of(cls, bytes_moved: int, median_ms: float, stream_gbps: float) -> "Roofline":
        achieved = bytes_moved / (median_ms * 1e-3) / 1e9 if median_ms > 0 else math.inf
        percent = 100.0 * achieved / stream_gbps
        # 15% above a measured streaming read is past what any kernel sustains from DRAM
        return cls(bytes_moved, achieved, stream_gbps, percent, percent > 115.0)
