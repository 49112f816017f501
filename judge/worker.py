"""The worker process: the only place a submission's code runs.

It receives the test tensors from the judge (CUDA IPC handles or shared memory, never a seed it
could replay), calls ``solve`` and answers with a status; the judge reads the outputs from the
shared memory itself and decides every verdict. Its stdout and stderr go to a log file, so what
a submission prints cannot pass for the judge's output.

Messages, judge -> worker: ("run", kwargs), ("time",), ("sync_tail",), ("exit",).
Worker -> judge: ("ready",), ("done",), ("timed", timing.Sample), ("sync_tail", ms),
("error", kind, text) where kind is one of ERROR_KINDS.
"""

import os
import resource
import sys
import traceback

JUDGE_DIR = os.path.dirname(os.path.abspath(__file__))
ERROR_KINDS = ("build", "exception", "cuda", "oom", "exit")
CPU_MEMORY_LIMIT_BYTES = 16 * 2**30  # --device cpu only: CUDA needs a large address space


def _classify(exc: BaseException) -> str:
    import torch

    from judge.languages.base import BuildError
    from judge.languages.cuda import CudaError

    if isinstance(exc, SystemExit):
        return "exit"
    if isinstance(exc, BuildError):  # e.g. a CuTe DSL function compiled on its first call
        return "build"
    text = str(exc)
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or any(
        phrase in text for phrase in ("out of memory", "can't allocate memory")
    ):
        return "oom"
    if isinstance(exc, CudaError) or "CUDA error" in text:
        return "cuda"
    return "exception"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"solve called exit({exc.code!r})"
    # the submission's frames only: the judge's own are noise to its author
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(JUDGE_DIR)
    ]
    where = "".join(traceback.format_list(frames[-3:]))
    return (where + "".join(traceback.format_exception_only(type(exc), exc))).strip()


def main(conn, language: str, artifact: str, challenge_folder: str, device: str, log_path: str):
    """Worker entry point (run in a spawned process)."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # the judge, not the caller's environment, decides how Triton and JAX run
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # leave GPU memory to torch
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
        os.environ["JAX_PLATFORMS"] = "cpu"
        resource.setrlimit(resource.RLIMIT_AS, (CPU_MEMORY_LIMIT_BYTES, CPU_MEMORY_LIMIT_BYTES))

    import torch

    from judge.challenges import load_challenge
    from judge.languages import LANGUAGES
    from judge.signature import parse_signature
    from judge.timing import L2Flusher, sync_tail_ms, time_once

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    on_gpu = device != "cpu"

    try:
        params = parse_signature(load_challenge(challenge_folder, device).get_solve_signature())
        call = LANGUAGES[language].load(artifact, params, device)
    except BaseException as exc:  # a submission that fails to load is a verdict, not a crash
        conn.send(("error", _classify(exc), _describe(exc)))
        return
    check = getattr(call, "check", None)

    def run(kwargs):
        call(kwargs)
        if check is not None:
            check()
        elif on_gpu:
            torch.cuda.synchronize()

    conn.send(("ready",))
    kwargs, flush = None, None
    while True:
        message = conn.recv()
        try:
            if message[0] == "run":
                kwargs = message[1]
                run(kwargs)
                conn.send(("done",))
            elif message[0] == "time":
                flush = flush or L2Flusher()
                sample = time_once(lambda: call(kwargs), flush)
                if check is not None:
                    check()
                conn.send(("timed", sample))
            elif message[0] == "sync_tail":
                conn.send(("sync_tail", sync_tail_ms()))
            else:
                return
        except BaseException as exc:
            kind = _classify(exc)
            conn.send(("error", kind, _describe(exc)))
            if kind in ("cuda", "exit"):
                sys.stdout.flush()
                os._exit(1)  # a CUDA context after a fault is unusable: start afresh
