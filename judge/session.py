"""One submission judged against one challenge: inputs, the worker call, checks and timing.

For every test the judge keeps private inputs, hands the worker separate shared copies, and
after the call: snapshots the outputs into its own memory, checks the guard bytes after each
output buffer, checks that "in" tensors are bit-identical, and only then runs the reference on
its private inputs (float32, TF32 off) and compares.
"""

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from core.challenge_base import materialize_test

from judge.compare import Comparison, compare_output, same_bits
from judge.diagnose import diagnose_error, diagnose_outputs
from judge.signature import parse_signature
from judge.supervisor import Worker
from judge.timing import (
    Roofline,
    Timing,
    escaped_work,
    l2_cache_bytes,
    sample_until_stable,
    time_calls,
)
from judge.verdicts import SubmissionFailure, Verdict

GUARD_BYTES = 16 * 1024  # checked after every output buffer for out-of-bounds writes
WORKER_FATAL = {
    Verdict.CUDA_ERROR,
    Verdict.EXIT,
    Verdict.CRASH,
    Verdict.TIMEOUT,
    Verdict.OUT_OF_MEMORY,
    Verdict.TIMING_TAMPERED,
}
# a span this much longer than the round trip the judge saw cannot be the call's own
ROUND_TRIP_SLACK_MS = 0.5


class ChallengeError(RuntimeError):
    """The challenge itself is inconsistent (e.g. a tensor's dtype disagrees with the
    signature): a bug for its author, reported without a traceback."""


@dataclass
class TestResult:
    """One named test's verdict, with per-output comparisons and the input sizes."""

    name: str
    kind: str  # "example", "functional" or "performance"
    verdict: Verdict
    detail: str = ""
    comparisons: List[Comparison] = field(default_factory=list)
    sizes: Dict[str, object] = field(default_factory=dict)
    expected: Optional[Dict[str, list]] = None  # the "run" action shows small outputs
    actual: Optional[Dict[str, list]] = None
    diagnosis: Optional[str] = None  # likely cause and fix, where a pattern fits (judge.diagnose)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        return out


@dataclass
class PerformanceResult:
    """The performance test: correctness of every timed call, timing and roofline."""

    verdict: Verdict
    detail: str = ""
    timing: Optional[Timing] = None
    roofline: Optional[Roofline] = None
    reference_timing: Optional[Timing] = None
    speedup_over_reference: Optional[float] = None
    sizes: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "detail": self.detail,
            "timing": self.timing.to_dict() if self.timing else None,
            "roofline": asdict(self.roofline) if self.roofline else None,
            "reference_timing": self.reference_timing.to_dict() if self.reference_timing else None,
            "speedup_over_reference": self.speedup_over_reference,
            "sizes": self.sizes,
        }


def _poison(tensor: torch.Tensor):
    if tensor.dtype.is_floating_point:
        tensor.fill_(float("nan"))
    else:
        tensor.fill_(torch.iinfo(tensor.dtype).min)


def _shared_pool(device: str):
    """Allocations for the worker come from their own pool, so no segment the worker can map
    through CUDA IPC also holds the judge's private tensors."""
    if device == "cpu" or not hasattr(torch.cuda, "MemPool"):
        return None
    return torch.cuda.MemPool()


def bytes_moved(challenge, kwargs: Dict[str, object], params) -> int:
    """Bytes one call of ``solve`` must move: the challenge's ``get_bytes_moved(**kwargs)``
    when it has one, else every tensor argument of ``params`` read or written once."""
    custom = getattr(challenge, "get_bytes_moved", None)
    if callable(custom):
        return int(custom(**kwargs))
    return sum(kwargs[p.name].nbytes for p in params if p.is_pointer)


def describe_sizes(kwargs: Dict[str, object]) -> Dict[str, object]:
    """Scalars as they are, tensors as 'shape dtype' strings."""
    return {
        k: (
            f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
            if isinstance(v, torch.Tensor)
            else v
        )
        for k, v in kwargs.items()
    }


class Session:
    """Judges one built submission against one challenge.

    Args:
        challenge: the loaded ``Challenge`` (on ``device``).
        folder: its folder (the worker loads the signature from it).
        language: the adapter name.
        artifact: the built artifact (``Language.build``'s result).
        device: "cuda" or "cpu".
        workdir: where the worker's log and its scratch folder go.
        timeout_s: seconds allowed for one call before the worker is killed.
        sandbox_mode: "auto", "require" or "off" (``judge.sandbox.confine``).

    Raises:
        judge.supervisor.SandboxRefused: from the first test, when ``sandbox_mode`` is
            "require" and the machine cannot confine the worker.
    """

    def __init__(
        self,
        challenge,
        folder: Path,
        language: str,
        artifact: Path,
        device: str,
        workdir: Path,
        timeout_s: float = 60.0,
        sandbox_mode: str = "auto",
    ):
        self.challenge = challenge
        self.sandbox_mode = sandbox_mode
        self.sandbox: Optional[str] = None  # what the first worker applied
        self.folder = folder
        self.language = language
        self.artifact = artifact
        self.device = device
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.params = parse_signature(challenge.get_solve_signature())
        self.pool = _shared_pool(device)
        self.worker: Optional[Worker] = None
        self.load_failure: Optional[SubmissionFailure] = None

    # -- the worker ---------------------------------------------------------------------------

    def _live_worker(self) -> Worker:
        if self.load_failure is not None and self.load_failure.verdict is Verdict.BUILD_ERROR:
            raise self.load_failure  # loading fails the same way every time
        if self.worker is None or not self.worker.alive:
            log = self.workdir / "worker.log"
            scratch = self.workdir / "scratch"
            self.worker = Worker(
                self.language,
                self.artifact,
                self.folder,
                self.device,
                log,
                scratch,
                self.sandbox_mode,
            )
            self.sandbox = self.sandbox or self.worker.sandbox
        return self.worker

    def close(self):
        if self.worker is not None:
            self.worker.close()

    def _after_failure(self, failure: SubmissionFailure):
        """Keep a build failure (loading fails the same way every time); retire a worker that
        died, hung, faulted its CUDA context or ran out of memory, so the next test starts a
        fresh one. A Python exception leaves the worker usable."""
        if failure.verdict is Verdict.BUILD_ERROR:
            self.load_failure = failure
        elif failure.verdict in WORKER_FATAL and self.worker is not None:
            self.worker.kill()
            self.worker = None

    # -- inputs -------------------------------------------------------------------------------

    def _check_dtypes(self, kwargs: Dict[str, object]):
        missing = [p.name for p in self.params if p.name not in kwargs]
        if missing:
            raise ChallengeError(f"a generated test lacks {missing}")
        for p in self.params:
            value = kwargs[p.name]
            if p.is_pointer and (
                not isinstance(value, torch.Tensor) or value.dtype != p.torch_dtype
            ):
                raise ChallengeError(
                    f"{p.name}: the signature's pointer needs {p.torch_dtype}, the generator "
                    f"gave {getattr(value, 'dtype', type(value).__name__)}"
                )

    def _share(self, private: Dict[str, object]):
        """Shared copies of the inputs for the worker, poisoned outputs with guard bytes."""
        shared, guards = {}, {}
        pool = torch.cuda.use_mem_pool(self.pool) if self.pool else contextlib.nullcontext()
        with pool:
            for p in self.params:
                value = private[p.name]
                if not p.is_pointer:
                    shared[p.name] = value
                elif p.is_output:
                    numel = value.numel()
                    guard_elems = math.ceil(GUARD_BYTES / value.element_size())
                    buffer = torch.empty(
                        numel + guard_elems, dtype=value.dtype, device=value.device
                    )
                    guard = buffer[numel:].view(torch.uint8)
                    guard.copy_(torch.randint(0, 256, guard.shape, dtype=torch.uint8))
                    body = buffer[:numel].view(value.shape)
                    if p.direction == "inout":
                        body.copy_(value)
                    else:
                        _poison(body)
                    shared[p.name] = body
                    guards[p.name] = (guard, guard.cpu())
                else:
                    shared[p.name] = value.clone()
        return shared, guards

    def _refresh(self, private, shared, fresh):
        """Copy freshly generated inputs into the existing buffers and re-poison outputs."""
        for p in self.params:
            if not p.is_pointer:
                continue
            private[p.name].copy_(fresh[p.name])
            if p.is_output and p.direction == "out":
                _poison(shared[p.name])
            else:
                shared[p.name].copy_(fresh[p.name])

    # -- checks -------------------------------------------------------------------------------

    def _verify(self, private, shared, guards, keep_values=False):
        """Verdict, detail, comparisons (and optionally expected/actual values) after a call."""
        snapshot = {
            p.name: shared[p.name].to("cpu", copy=True)
            for p in self.params
            if p.is_pointer and p.is_output
        }
        for name, (guard, original) in guards.items():
            if not same_bits(guard.cpu(), original):
                changed = int((guard.cpu() != original).sum())
                return (
                    Verdict.OUT_OF_BOUNDS_WRITE,
                    f"{changed} bytes written past the end of {name}",
                    [],
                    None,
                )
        for p in self.params:
            if (
                p.is_pointer
                and p.direction == "in"
                and not same_bits(shared[p.name], private[p.name])
            ):
                return Verdict.INPUT_MODIFIED, f"solve modified the input {p.name}", [], None
        expected = dict(private)
        for p in self.params:
            if p.is_pointer and p.is_output:
                expected[p.name] = private[p.name].clone()
        try:
            self.challenge.reference_impl(**expected)
        except Exception as exc:  # the challenge's bug, reported as such
            raise ChallengeError(f"the reference failed on a generated test: {exc!r}") from exc
        comparisons = [
            compare_output(
                name, snapshot[name], expected[name].cpu(), self.challenge.atol, self.challenge.rtol
            )
            for name in snapshot
        ]
        failed = [c for c in comparisons if not c.passed]
        if failed:
            outputs = {n: expected[n] for n in snapshot}
            causes = diagnose_outputs(
                self.challenge, self.params, private, outputs, snapshot, self.language
            )
            for c in failed:
                c.diagnosis = causes.get(c.name)
        values = None
        if keep_values:
            values = (
                {n: expected[n].cpu().tolist() for n in snapshot},
                {n: snapshot[n].tolist() for n in snapshot},
            )
        if failed:
            return (
                Verdict.WRONG_ANSWER,
                "; ".join(f"{c.name}: {c.reason}" for c in failed),
                comparisons,
                values,
            )
        return Verdict.PASS, "", comparisons, values

    # -- tests --------------------------------------------------------------------------------

    def run_test(
        self,
        name: str,
        kind: str,
        generated: Dict[str, object],
        seed: int,
        keep_values: bool = False,
    ) -> TestResult:
        """Run one correctness test (``generated`` as the challenge's generator returned it)."""
        private = materialize_test(generated, self.device, seed)
        self._check_dtypes(private)
        result = TestResult(name, kind, Verdict.PASS, sizes=describe_sizes(private))
        shared, guards = self._share(private)
        try:
            self._live_worker().run(shared, self.timeout_s)
        except SubmissionFailure as failure:
            self._after_failure(failure)
            result.verdict, result.detail = failure.verdict, failure.detail
            result.diagnosis = diagnose_error(failure.detail)
            return result
        verdict, detail, comparisons, values = self._verify(private, shared, guards, keep_values)
        result.verdict, result.detail, result.comparisons = verdict, detail, comparisons
        result.diagnosis = next((c.diagnosis for c in comparisons if c.diagnosis), None)
        if values is not None:
            result.expected, result.actual = values
        return result

    def run_performance(
        self,
        seed: int,
        budget_s: float = 10.0,
        on_sample: Optional[Callable[[int], None]] = None,
    ) -> PerformanceResult:
        """The performance test: a checked first call, two more warm-ups, then timed samples,
        each with fresh inputs and a checked output; then the reference, timed the same way.
        ``on_sample(n)``, when given, is called after the n-th timed sample is checked (a
        progress display)."""
        if self.device == "cpu":
            return PerformanceResult(Verdict.SKIPPED, "timing needs an NVIDIA GPU (--device cuda)")
        draws = iter(range(seed + 1, seed + 10**6))

        def generate():
            draw = next(draws)
            torch.manual_seed(draw)
            return materialize_test(self.challenge.generate_performance_test(), self.device, draw)

        torch.manual_seed(seed)
        private = materialize_test(self.challenge.generate_performance_test(), self.device, seed)
        self._check_dtypes(private)
        result = PerformanceResult(Verdict.PASS, sizes=describe_sizes(private))
        shared, guards = self._share(private)
        try:
            worker = self._live_worker()
            for call in range(3):
                if call:
                    self._refresh(private, shared, generate())
                worker.run(shared, self.timeout_s)
                verdict, detail, _, _ = self._verify(private, shared, guards)
                if not verdict.passed:
                    raise SubmissionFailure(verdict, f"warm-up call {call + 1}: {detail}")
            empty_tail = worker.sync_tail_ms()
            timed = {"count": 0}

            def prepare():
                self._refresh(private, shared, generate())
                torch.cuda.synchronize()

            def check():
                timed["count"] += 1
                verdict, detail, _, _ = self._verify(private, shared, guards)
                if not verdict.passed:
                    raise SubmissionFailure(verdict, f"timed call {timed['count']}: {detail}")
                if on_sample is not None:
                    on_sample(timed["count"])

            def sample():
                timed, round_trip_ms = worker.time_once(self.timeout_s)
                if timed.time_ms > round_trip_ms + ROUND_TRIP_SLACK_MS:
                    raise SubmissionFailure(
                        Verdict.TIMING_TAMPERED,
                        f"the worker reported {timed.time_ms:.3f} ms for a call whose whole "
                        f"round trip took {round_trip_ms:.3f} ms",
                    )
                return timed

            result.timing = sample_until_stable(sample, prepare, check, budget_s)
            worker.assert_quiet()
        except SubmissionFailure as failure:
            self._after_failure(failure)
            result.verdict, result.detail = failure.verdict, failure.detail
            return result
        escaped = escaped_work(result.timing, empty_tail)
        if escaped:
            result.verdict, result.detail = Verdict.TIMING_ESCAPED, escaped
        from judge.timing import read_floor

        moved = self.bytes_moved(private)
        floor = read_floor()
        result.roofline = Roofline.of(
            moved, result.timing.median_ms, floor.gbps, floor.kernel, floor.hbm_peak_gbps
        )
        if result.roofline.suspicious and result.verdict.passed:
            percent = result.roofline.percent_of_streaming_read
            if moved > 2 * l2_cache_bytes():  # cannot be served from L2: the time is forged
                result.verdict = Verdict.TIMING_TAMPERED
                result.detail = (
                    f"{percent:.0f}% of the measured streaming-read bandwidth for "
                    f"{moved / 1e6:.0f} MB, twice the L2 size or more: faster than the memory "
                    "system can move the bytes"
                )
            else:
                result.detail = (
                    f"suspicious: {percent:.0f}% of the measured streaming-read bandwidth is "
                    "past the memory system (the inputs may fit in L2)"
                )
        reference = dict(private)
        result.reference_timing = time_calls(
            lambda: self.challenge.reference_impl(**reference), budget_s=budget_s / 2
        )
        result.speedup_over_reference = result.reference_timing.median_ms / result.timing.median_ms
        return result

    def bytes_moved(self, kwargs: Dict[str, object]) -> int:
        """Bytes a call must move (``bytes_moved``)."""
        return bytes_moved(self.challenge, kwargs, self.params)
