"""The judge's side of the worker process: start it, send it work, turn every way it can fail
(exception, crash, exit, hang, out of memory, a corrupt reply) into a ``SubmissionFailure``
with a verdict."""

import os
import signal
from pathlib import Path

import torch.multiprocessing as mp

from judge import worker
from judge.verdicts import ERROR_VERDICTS, SubmissionFailure, Verdict


class Worker:
    """One worker process running one built submission.

    Args:
        language: the adapter name, e.g. "cuda".
        artifact: what the adapter's ``load`` takes (a .so or a .py path).
        challenge_folder: the challenge folder (the worker reads the signature from it).
        device: "cuda" or "cpu".
        log_path: the file that receives the worker's stdout and stderr.
        load_timeout_s: seconds allowed for start-up and loading the submission.
    """

    def __init__(
        self,
        language,
        artifact,
        challenge_folder,
        device,
        log_path: Path,
        load_timeout_s: float = 300.0,
    ):
        self.log_path = Path(log_path)
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=worker.main,
            args=(child, language, str(artifact), str(challenge_folder), device, str(log_path)),
            daemon=True,
        )
        self.process.start()
        child.close()
        self._expect("ready", load_timeout_s)

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

    def _expect(self, tag: str, timeout_s: float):
        if not self.conn.poll(timeout_s):
            self.kill()
            raise SubmissionFailure(Verdict.TIMEOUT, f"no answer within {timeout_s:g} s; killed")
        try:
            reply = self.conn.recv()
        except (EOFError, OSError, ConnectionError):
            raise self._death() from None
        except Exception as exc:  # garbage on the pipe: the submission wrote to it
            self.kill()
            raise SubmissionFailure(Verdict.CRASH, f"the worker's reply was corrupt ({exc!r})")
        well_formed = (
            isinstance(reply, tuple) and reply and (reply[0] != "error" or len(reply) == 3)
        )
        if not well_formed:
            self.kill()
            raise SubmissionFailure(
                Verdict.CRASH, f"the worker's reply was corrupt: {reply!r:.200}"
            )
        if reply[0] == "error":
            _, kind, text = reply
            tail = self.log_tail()
            detail = text + (f"\n--- output of the submission ---\n{tail}" if tail else "")
            raise SubmissionFailure(ERROR_VERDICTS.get(kind, Verdict.RUNTIME_ERROR), detail)
        if reply[0] != tag:
            self.kill()
            raise SubmissionFailure(Verdict.CRASH, f"unexpected worker reply {reply[0]!r}")
        return reply[1:]

    def _death(self) -> SubmissionFailure:
        self.process.join(timeout=10)
        code = self.process.exitcode
        tail = self.log_tail()
        suffix = f"\n--- output of the submission ---\n{tail}" if tail else ""
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if name == "SIGKILL":
                return SubmissionFailure(
                    Verdict.OUT_OF_MEMORY,
                    f"the worker was killed (SIGKILL, out of memory?){suffix}",
                )
            return SubmissionFailure(Verdict.CRASH, f"the worker died with {name}{suffix}")
        return SubmissionFailure(
            Verdict.EXIT, f"the submission ended the process (exit code " f"{code}){suffix}"
        )

    def request(self, message: tuple, tag: str, timeout_s: float):
        """Send one message and wait for the reply tagged ``tag``.

        Raises:
            SubmissionFailure: the worker reported an error, died, or did not answer in time.
        """
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            raise self._death() from None
        return self._expect(tag, timeout_s)

    def run(self, kwargs: dict, timeout_s: float):
        """Call ``solve`` once on shared tensors; returns when its device work is done."""
        self.request(("run", kwargs), "done", timeout_s)

    def time_once(self, timeout_s: float):
        """One timed sample of the last ``run``'s call (a ``timing.Sample``)."""
        return self.request(("time",), "timed", timeout_s)[0]

    def sync_tail_ms(self) -> float:
        """The worker's device-synchronize latency after an empty call, in ms."""
        return self.request(("sync_tail",), "sync_tail", 60.0)[0]

    def kill(self):
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(timeout=10)

    def close(self):
        if self.process.is_alive():
            try:
                self.conn.send(("exit",))
            except OSError:
                pass
            self.process.join(timeout=5)
        self.kill()
