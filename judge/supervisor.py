"""The judge's side of the worker process: start it, send it work, and turn every way it can
fail (exception, crash, exit, hang, out of memory, corrupt or forged replies, a tampered timing
path) into a ``SubmissionFailure`` with a verdict. It never blocks past a deadline on anything
the worker sends, and never unpickles it (``judge.channel``)."""

import os
import secrets
import signal
import time
from pathlib import Path
from typing import Optional

import torch.multiprocessing as mp

from judge import worker
from judge.channel import CorruptReply, ReplyReader, ReplyTimeout, WorkerGone
from judge.verdicts import ERROR_VERDICTS, SubmissionFailure, Verdict

CORRUPTED = "the worker's replies were corrupted"


class SandboxRefused(RuntimeError):
    """``--sandbox require`` and the worker could not confine itself (the message says why)."""


class Worker:
    """One worker process running one built submission.

    Args:
        language: the adapter name, e.g. "cuda".
        artifact: what the adapter's ``load`` takes (a .so or a .py path).
        challenge_folder: the challenge folder (the worker reads the signature from it).
        device: "cuda" or "cpu".
        log_path: the file that receives the worker's stdout and stderr.
        scratch: the only folder the worker may write (its JIT caches live there).
        sandbox_mode: "auto", "require" or "off" (``judge.sandbox.confine``).
        load_timeout_s: seconds allowed for start-up and loading the submission.

    Raises:
        SubmissionFailure: the submission did not load (its verdict), or the worker died,
            hung or answered garbage while starting.
        SandboxRefused: ``sandbox_mode`` is "require" and confinement is not available.
    """

    def __init__(
        self,
        language,
        artifact,
        challenge_folder,
        device,
        log_path: Path,
        scratch: Path,
        sandbox_mode: str = "auto",
        load_timeout_s: float = 300.0,
    ):
        self.log_path = Path(log_path)
        self.seq = 0
        self.sandbox: Optional[str] = None
        context = mp.get_context("spawn")
        requests_reader, self.requests = context.Pipe(duplex=False)
        replies_reader, replies_writer = context.Pipe(duplex=False)
        Path(scratch).mkdir(parents=True, exist_ok=True)
        self.process = context.Process(
            target=worker.main,
            args=(
                requests_reader,
                replies_writer,
                language,
                str(artifact),
                str(challenge_folder),
                device,
                str(log_path),
                str(scratch),
                sandbox_mode,
            ),
            daemon=True,
        )
        self.process.start()
        requests_reader.close()
        replies_writer.close()
        self._replies_conn = replies_reader  # keeps the descriptor open
        self.replies = ReplyReader(replies_reader.fileno())
        try:
            self.sandbox = self._expect("ready", load_timeout_s)["sandbox"]
        except SubmissionFailure as failure:
            if failure.verdict is Verdict.SANDBOX_REFUSED:
                raise SandboxRefused(failure.detail) from None
            raise

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the submission printed (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _with_output(self, text: str) -> str:
        tail = self.log_tail()
        return text + (f"\n--- output of the submission ---\n{tail}" if tail else "")

    def _expect(self, tag: str, timeout_s: float) -> dict:
        try:
            got, fields = self.replies.read(self.seq, timeout_s)
        except ReplyTimeout:
            self.kill()
            raise SubmissionFailure(
                Verdict.TIMEOUT, f"no answer within {timeout_s:g} s; killed"
            ) from None
        except WorkerGone:
            raise self._death() from None
        except CorruptReply as exc:
            self.kill()
            raise SubmissionFailure(Verdict.CRASH, f"{CORRUPTED}: {exc}") from None
        if got == "error":
            verdict = ERROR_VERDICTS.get(fields["kind"])
            if verdict is None:
                self.kill()
                raise SubmissionFailure(
                    Verdict.CRASH, f"{CORRUPTED}: error kind {fields['kind']!r:.40}"
                )
            raise SubmissionFailure(verdict, self._with_output(fields["text"]))
        if got == "tampered":
            self.kill()
            raise SubmissionFailure(
                Verdict.TIMING_TAMPERED,
                f"the timing path changed while the submission ran: {fields['what']}",
            )
        if got != tag:
            self.kill()
            raise SubmissionFailure(Verdict.CRASH, f"{CORRUPTED}: {got!r} where {tag!r} was due")
        return fields

    def _death(self) -> SubmissionFailure:
        self.process.join(timeout=10)
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if name == "SIGKILL":
                return SubmissionFailure(
                    Verdict.OUT_OF_MEMORY,
                    self._with_output("the worker was killed (SIGKILL, out of memory?)"),
                )
            return SubmissionFailure(
                Verdict.CRASH, self._with_output(f"the worker died with {name}")
            )
        return SubmissionFailure(
            Verdict.EXIT, self._with_output(f"the submission ended the process (exit code {code})")
        )

    def request(self, message: tuple, tag: str, timeout_s: float) -> dict:
        """Send one request and wait for its reply tagged ``tag``; returns the reply's fields.

        Raises:
            SubmissionFailure: the worker reported an error or tampering, died, did not answer
                in time, or sent a reply nobody asked for or one that is malformed.
        """
        self.assert_quiet()
        self.seq = secrets.randbits(62)  # unguessable: a forged reply cannot answer it
        try:
            self.requests.send((message[0], self.seq, *message[1:]))
        except (BrokenPipeError, OSError):
            raise self._death() from None
        return self._expect(tag, timeout_s)

    def assert_quiet(self):
        """Raise unless the reply pipe is empty: a reply that came after the one a request
        took (a forged one went first) is left over.

        Raises:
            SubmissionFailure: CRASH, the replies were corrupted.
        """
        if self.replies.pending():
            self.kill()
            raise SubmissionFailure(Verdict.CRASH, f"{CORRUPTED}: a reply nobody asked for")

    def run(self, kwargs: dict, timeout_s: float):
        """Call ``solve`` once on shared tensors; returns when its device work is done."""
        self.request(("run", kwargs), "done", timeout_s)

    def time_once(self, timeout_s: float):
        """One timed sample of the last ``run``'s call: (``timing.Sample``, the round trip the
        judge saw in ms, from sending the request to reading the reply)."""
        from judge.timing import Sample

        started = time.perf_counter()
        fields = self.request(("time",), "timed", timeout_s)
        round_trip_ms = (time.perf_counter() - started) * 1e3
        return Sample(fields["gpu_ms"], fields["event_ms"], fields["tail_ms"]), round_trip_ms

    def sync_tail_ms(self) -> float:
        """The worker's device-synchronize latency after an empty call, in ms."""
        return self.request(("sync_tail",), "sync_tail", 60.0)["ms"]

    def kill(self):
        """Kill the worker and every process of its group (it leads its own session)."""
        if self.process.pid is not None:
            for target in (
                lambda: os.killpg(self.process.pid, signal.SIGKILL),
                lambda: os.kill(self.process.pid, signal.SIGKILL),
            ):
                try:
                    target()
                except (ProcessLookupError, PermissionError):
                    pass
        self.process.join(timeout=10)

    def close(self):
        if self.process.is_alive():
            try:
                self.requests.send(("exit",))
            except OSError:
                pass
            self.process.join(timeout=5)
        self.kill()
