"""What a test can end in: the verdicts, and the exception that carries a submission's failure
from the worker's supervisor to the session."""

import enum


class Verdict(str, enum.Enum):
    """The outcome of one test."""

    PASS = "PASS"
    WRONG_ANSWER = "WRONG ANSWER"
    INPUT_MODIFIED = "INPUT MODIFIED"
    OUT_OF_BOUNDS_WRITE = "OUT-OF-BOUNDS WRITE"
    BUILD_ERROR = "BUILD ERROR"
    RUNTIME_ERROR = "RUNTIME ERROR"
    CUDA_ERROR = "CUDA ERROR"
    CRASH = "CRASH"
    EXIT = "EXITED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT OF MEMORY"
    TIMING_ESCAPED = "WORK ESCAPED TIMING"
    TIMING_TAMPERED = "TIMING TAMPERED"
    SANDBOX_REFUSED = "SANDBOX REFUSED"  # --sandbox require on a machine without it: usage
    SKIPPED = "SKIPPED"

    @property
    def passed(self) -> bool:
        return self is Verdict.PASS


ERROR_VERDICTS = {
    "build": Verdict.BUILD_ERROR,
    "exception": Verdict.RUNTIME_ERROR,
    "cuda": Verdict.CUDA_ERROR,
    "oom": Verdict.OUT_OF_MEMORY,
    "exit": Verdict.EXIT,
    "sandbox": Verdict.SANDBOX_REFUSED,
}


class SubmissionFailure(Exception):
    """The submission failed in the worker; ``verdict`` and ``detail`` say how."""

    def __init__(self, verdict: Verdict, detail: str):
        super().__init__(f"{verdict.value}: {detail}")
        self.verdict = verdict
        self.detail = detail
