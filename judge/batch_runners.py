"""Where a batch's judges run: one judge process per visible GPU (or ``--jobs`` on the CPU) on
this machine, or one Ray task per submission on a Ray cluster.

Each judge takes one submission at a time and judges it with ``judge.batch.judge_task``, so a
GPU's timing never overlaps another submission's work: locally because each judge process sees
only its own GPU (``CUDA_VISIBLE_DEVICES``) and judges serially; under Ray because every task
asks for a whole GPU (``num_gpus=1``, and Ray then sets ``CUDA_VISIBLE_DEVICES``).
"""

import logging
import os
import queue
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import torch.multiprocessing as mp

from judge.batch import judge_task
from judge.challenges import REPO_ROOT

LOCAL_RAY = "local"  # --ray without an address: RAY_ADDRESS, else a new local cluster
# what Ray's working_dir leaves behind: the environment, caches, build outputs, benchmarks
RAY_EXCLUDES = [
    ".venv",
    ".git",
    ".device",
    ".pytest_cache",
    "docs",
    "build",
    "*.egg-info",
    "**/__pycache__",
    "*.so",
    "*.o",
]


def local_slots(device: str, jobs: Optional[int]) -> List[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each local judge process: one visible GPU each
    (at most ``jobs``), or ``jobs`` judges (default 1) that see no GPU at all on the CPU.

    Raises:
        UsageError: cuda asked for and no GPU visible.
    """
    if device == "cpu":
        return [""] * (jobs or 1)
    import torch

    from judge.cli import UsageError

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        tokens = [t.strip() for t in visible.split(",") if t.strip()][:count]
    else:
        tokens = [str(i) for i in range(count)]
    if not tokens:
        raise UsageError("--device cuda: no CUDA GPU is visible to PyTorch")
    return tokens[: jobs or len(tokens)]


def _judge_process_main(conn, visible_devices: str, log_path: str):
    """A local judge process: pinned to its GPU before CUDA starts, it judges one task at a
    time until told to stop (None), the batch goes away, or it is interrupted."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # too late to pin: refuse to judge
        raise RuntimeError("CUDA started before the judge process was pinned to its GPU")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)  # what the libraries print must not break the batch's display
    os.dup2(log, 2)
    os.close(log)
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            conn.send(judge_task(task))
    except (EOFError, OSError, KeyboardInterrupt):
        return


class JudgeProcess:
    """One local judge process, pinned to one GPU (or to none).

    Args:
        visible_devices: its ``CUDA_VISIBLE_DEVICES`` ("" for none).
        log_path: the file its own stdout and stderr go to.
        stopping: set when the batch stops; a judge process that ended because it was
            interrupted is then not replaced.
    """

    def __init__(self, visible_devices: str, log_path: Path, stopping: threading.Event):
        self.visible_devices = visible_devices
        self.log_path = log_path
        self.stopping = stopping
        self._start()

    def _start(self):
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_judge_process_main,
            args=(child, self.visible_devices, str(self.log_path)),
        )
        self.process.start()
        child.close()

    def judge(self, task: dict) -> dict:
        """Judge one task; a judge process that dies meanwhile is replaced, and the task gets
        an error result (exit code 4)."""
        try:
            self.conn.send(task)
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=10)
            code = self.process.exitcode
            # Exit code 0: it returned, which it does only when interrupted. A Ctrl-C reaches
            # the whole process group, so the batch is stopping too; a replacement started
            # now would be cut off while it starts and print a traceback into the display.
            if not (code == 0 and self.stopping.wait(timeout=5)):
                self._start()
            return {
                "id": task["id"],
                "kind": "error",
                "exit_code": 4,
                "error": f"the judge process died (exit code {code}) while judging it; see "
                f"{self.log_path}",
                "env": None,
            }

    def close(self, interrupted: bool = False):
        """Stop the process: after its current task normally; at once when interrupted
        (SIGINT first, so the session kills the submission's worker; SIGKILL after 10 s)."""
        if interrupted and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGINT)
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout=10 if interrupted else 60)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)


def run_local(tasks: List[dict], device: str, jobs: Optional[int], log_path: Path) -> Iterator:
    """Judge ``tasks`` on this machine, yielding each result as it finishes.

    One thread per judge process hands it the next task, so a slow submission holds only
    its own GPU. Closing the generator early (Ctrl-C) stops every judge process.
    """
    stop = threading.Event()
    judges = [JudgeProcess(v, log_path, stop) for v in local_slots(device, jobs)[: len(tasks)]]
    todo: "queue.Queue[dict]" = queue.Queue()
    for task in tasks:
        todo.put(task)
    done: "queue.Queue[dict]" = queue.Queue()

    def drive(judge: JudgeProcess):
        while not stop.is_set():
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            done.put(judge.judge(task))

    threads = [threading.Thread(target=drive, args=(j,), daemon=True) for j in judges]
    for thread in threads:
        thread.start()
    finished = 0
    try:
        while finished < len(tasks):
            try:
                result = done.get(timeout=0.2)
            except queue.Empty:
                continue
            finished += 1
            yield result
    finally:
        stop.set()
        for judge in judges:
            judge.close(interrupted=finished < len(tasks))


# -- Ray ---------------------------------------------------------------------------------------


def _ray():
    from judge.cli import UsageError

    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install -e '.[ray]'") from None
    return ray


def _connect(address: str, runtime_env: dict, options: Optional[dict]):
    """Connect to (or start) the cluster with the batch's job-level runtime environment:
    Ray uploads local folders (the project, the submissions) only for a whole job.

    Raises:
        UsageError: Ray is not installed, or already initialized in this process (with
            another runtime environment).
    """
    from judge.cli import UsageError

    ray = _ray()
    if ray.is_initialized():
        raise UsageError("Ray is already initialized in this process; the batch connects itself")
    ray.init(
        address=None if address == LOCAL_RAY else address,
        runtime_env=runtime_env,
        log_to_driver=False,  # the submissions' and judges' prints stay out of the display
        logging_level=logging.ERROR,
        **(options or {}),
    )
    return ray


def _stage(tasks: List[dict], folder: Path) -> str:
    """Copy each submission into a package under ``folder`` that Ray ships as a ``py_modules``
    entry; each task learns where its copy is inside it. Returns the package's name."""
    name = f"decode_attention_submissions_{secrets.token_hex(4)}"
    package = folder / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Submissions of one batch, shipped to Ray."""\n')
    for task in tasks:
        relative = Path(task["hash"][:16]) / Path(task["solution"]).name
        (package / relative).parent.mkdir(exist_ok=True)
        shutil.copyfile(task["solution"], package / relative)
        task["staged"] = {"module": name, "file": relative.as_posix()}
    return name


def run_ray(
    tasks: List[dict],
    address: str,
    device: Optional[str],
    say: Callable[[str], None],
    options: Optional[dict] = None,
) -> Iterator:
    """Judge ``tasks`` as Ray tasks (one GPU, or one CPU, each), yielding each result as it
    finishes. The project travels as the job's ``working_dir`` and the submissions as one
    ``py_modules`` package; a task that fails in Ray itself gets an error result.

    Args:
        tasks: ``judge_task``'s tasks; their ``device`` is set here.
        address: the cluster (``LOCAL_RAY``: RAY_ADDRESS, else a new local cluster).
        device: "cuda", "cpu", or None: cuda when the cluster has GPUs.
        say: prints a line for the user.
        options: more ``ray.init`` arguments for a new local cluster (e.g. num_cpus).

    Raises:
        UsageError: Ray is not installed or already initialized here, or cuda asked for on a
            cluster without GPUs.
    """
    if not tasks:
        return
    staging = Path(tempfile.mkdtemp(prefix="judge-ray-"))
    tasks = [dict(task) for task in tasks]
    package = _stage(tasks, staging)
    runtime_env = {
        "working_dir": str(REPO_ROOT),
        "excludes": RAY_EXCLUDES,
        "py_modules": [str(staging / package)],
        "env_vars": {"TORCH_CPP_LOG_LEVEL": "ERROR"},
    }
    try:
        ray = _connect(address, runtime_env, options)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pending = {}
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        device = device or ("cuda" if gpus else "cpu")
        if device == "cuda" and not gpus:
            from judge.cli import UsageError

            raise UsageError("--device cuda: the Ray cluster has no GPUs")
        say(
            f"Ray: {len(tasks)} tasks on {gpus:g} GPUs, one GPU each"
            if device == "cuda"
            else f"Ray: {len(tasks)} tasks on the CPU, one CPU each"
        )
        # a GPU task's worker process is not reused (max_calls=1): its CUDA context belongs to
        # the GPU Ray gave that task
        if device == "cuda":
            resources = {"num_gpus": 1, "num_cpus": 1, "max_calls": 1}
        else:
            resources = {"num_cpus": 1}
        remote = ray.remote(max_retries=0, **resources)(judge_task)
        pending = {remote.remote(dict(task, device=device)): task for task in tasks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as error:  # the task died in Ray: this submission says so
                    result = {
                        "id": task["id"],
                        "kind": "error",
                        "exit_code": 4,
                        "error": f"the Ray task failed: {error!r}"[:2000],
                        "env": None,
                        "finished": time.time(),
                    }
                yield result
    finally:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        ray.shutdown()
        shutil.rmtree(staging, ignore_errors=True)
