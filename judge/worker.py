"""The worker process: the only place a submission's code runs.

Before the submission is imported the worker closes every descriptor it inherited but its two
pipes and the log, starts its own session (process group), points every JIT cache into its
scratch folder, confines itself (``judge.sandbox``: Landlock and seccomp), and records the
timing path (``judge.integrity``). It receives the test tensors from the judge (CUDA IPC
handles or shared memory, never a seed it could replay), calls ``solve`` and answers on the
reply pipe (``judge.channel``); the judge reads the outputs from the shared memory itself and
decides every verdict. Its stdout and stderr go to a log file, so what a submission prints
cannot pass for the judge's output.

Requests (pickled, judge -> worker): ("run", seq, kwargs), ("time", seq), ("sync_tail", seq),
("exit",). Replies (JSON lines, worker -> judge; fields in ``channel.REPLY_FIELDS``): ready,
done, timed, sync_tail, error (kind in ERROR_KINDS), tampered.
"""

import os
import resource
import sys

JUDGE_DIR = os.path.dirname(os.path.abspath(__file__))
ERROR_KINDS = ("build", "exception", "cuda", "oom", "exit", "sandbox")
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
    # the submission's frames first (Triton's kernel lines included), the judge's left out
    from judge.frames import describe_exception

    return describe_exception(exc, JUDGE_DIR)


def _close_inherited_descriptors(keep):
    """Close every descriptor but ``keep``: a submission must find nothing of the judge's
    (the resource tracker's pipe, the spawn pipe) to write garbage into."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    try:  # multiprocessing would otherwise try the closed tracker pipe at exit
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._fd = None
    except (ImportError, AttributeError):
        pass


def _die_with_the_judge():
    """Ask the kernel for SIGKILL when the judge exits (PR_SET_PDEATHSIG): the worker leads
    its own process group, so a judge killed by its user would otherwise leave it running."""
    import ctypes
    import signal

    judge_pid = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != judge_pid:  # the judge was gone before the request took effect
        os._exit(1)


def _private_caches(scratch: str, device: str):
    """Every cache and temporary folder a submission's toolchain writes, inside ``scratch``.
    A fresh scratch per run also means no submission can plant a compiled kernel in a cache
    that a later submission would load."""
    for variable, sub in (
        ("TMPDIR", "tmp"),
        ("XDG_CACHE_HOME", "cache"),
        ("TRITON_CACHE_DIR", "triton"),
        ("TRITON_HOME", "triton-home"),
        ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
        ("CUDA_CACHE_PATH", "nv-compute-cache"),
        ("JAX_COMPILATION_CACHE_DIR", "jax"),
        ("MODULAR_HOME", "modular"),
    ):
        path = os.path.join(scratch, sub)
        os.makedirs(path, exist_ok=True)
        os.environ[variable] = path
    # the judge, not the caller's environment, decides how Triton and JAX run
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # leave GPU memory to torch
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
        os.environ["JAX_PLATFORMS"] = "cpu"
        resource.setrlimit(resource.RLIMIT_AS, (CPU_MEMORY_LIMIT_BYTES, CPU_MEMORY_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(
    requests,
    replies,
    language: str,
    artifact: str,
    challenge_folder: str,
    device: str,
    log_path: str,
    scratch: str,
    sandbox_mode: str,
):
    """Worker entry point (run in a spawned process)."""
    from judge.channel import write_reply

    reply_fd = replies.fileno()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _close_inherited_descriptors({0, 1, 2, requests.fileno(), reply_fd})
    os.setsid()
    _die_with_the_judge()
    _private_caches(scratch, device)

    from judge.sandbox import Policy, SandboxUnavailable, confine

    try:  # before torch starts any thread: every later thread inherits the confinement
        applied = confine(Policy.for_scratch(scratch), sandbox_mode)
    except SandboxUnavailable as exc:
        write_reply(reply_fd, 0, "error", kind="sandbox", text=str(exc))
        return

    import torch

    from judge.challenges import load_challenge
    from judge.integrity import TimingPathGuard
    from judge.languages import LANGUAGES
    from judge.signature import parse_signature
    from judge.timing import L2Flusher, sync_tail_ms, time_once

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    on_gpu = device != "cpu"
    if on_gpu:
        torch.cuda.init()
    guard = TimingPathGuard()

    try:
        params = parse_signature(load_challenge(challenge_folder, device).get_solve_signature())
        call = LANGUAGES[language].load(artifact, params, device)
    except BaseException as exc:  # a submission that fails to load is a verdict, not a crash
        write_reply(reply_fd, 0, "error", kind=_classify(exc), text=_describe(exc))
        return
    check = getattr(call, "check", None)

    def run(kwargs):
        call(kwargs)
        if check is not None:
            check()
        elif on_gpu:
            torch.cuda.synchronize()

    write_reply(reply_fd, 0, "ready", sandbox=applied)
    kwargs, flush = None, None
    while True:
        message = requests.recv()
        if message[0] == "exit":
            return
        seq = message[1]
        try:
            if message[0] == "run":
                kwargs = message[2]
                run(kwargs)
                answer = ("done", {})
            elif message[0] == "time":
                flush = flush or L2Flusher()
                sample = time_once(lambda: call(kwargs), flush)
                if check is not None:
                    check()
                answer = (
                    "timed",
                    {
                        "gpu_ms": sample.gpu_ms,
                        "event_ms": sample.event_ms,
                        "tail_ms": sample.tail_ms,
                    },
                )
            elif message[0] == "sync_tail":
                answer = ("sync_tail", {"ms": sync_tail_ms()})
            else:
                return
            changes = guard.changes()
            if changes:
                answer = ("tampered", {"what": "; ".join(changes[:8])})
            write_reply(reply_fd, seq, answer[0], **answer[1])
        except BaseException as exc:
            kind = _classify(exc)
            write_reply(reply_fd, seq, "error", kind=kind, text=_describe(exc))
            if kind in ("cuda", "exit"):
                sys.stdout.flush()
                os._exit(1)  # a CUDA context after a fault is unusable: start afresh
