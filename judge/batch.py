"""``run_challenge.py batch SPEC --out results.jsonl``: judge many submissions, each as a single
run judges it (``judge.cli.evaluate``: the same worker, verdicts and timing), on one judge per
GPU, ``--jobs N`` judges on the CPU, or Ray tasks (``judge.batch_runners``); results stream
to the JSONL and into the history (``judge.history``). SPEC's format: ``judge.batch_spec``.

Every result line is the JSON report (``Report.to_dict``) plus ``id`` and ``exit_code``; a bad
line or a submission the judge could not take gets ``{"id", "error", "exit_code"}`` instead.
A submission whose (solution hash, challenge, action, language, device name and versions) is
already in the history is not judged again unless ``--rerun``: its stored report is written
(with ``from_history``) unless the output already has it, so rerunning a killed batch's command
finishes it without redoing anything.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

from rich.console import Console
from rich.table import Table

from judge.batch_spec import Submission, actions, parse_spec
from judge.challenges import ChallengeNotFound
from judge.history import (
    RECORDED_EXIT_CODES,
    History,
    Run,
    default_db_path,
    environment,
    file_hash,
    submission_verdict,
)
from judge.progress import BatchProgress

ERROR_VERDICT = "ERROR"  # a submission that got no report: bad SPEC line, usage or judge error

# -- the judge's side: one submission, in a judge process or a Ray task ----------------------

_BANDWIDTH_MEASURED = False


def _measure_bandwidth_once():
    """Fill the streaming-read bandwidth cache under a file lock before the first timed
    submission of this process, so parallel judges never write that file at the same time."""
    global _BANDWIDTH_MEASURED
    if _BANDWIDTH_MEASURED:
        return
    import fcntl

    import torch

    from judge.timing import CACHE_DIR, streaming_read_gbps

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "bandwidth.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        streaming_read_gbps()
    torch.cuda.empty_cache()
    _BANDWIDTH_MEASURED = True


def _task_solution(task: dict) -> Path:
    """The submission's file: its own path, or where Ray's runtime environment unpacked the
    staged copy (a ``py_modules`` package)."""
    staged = task.get("staged")
    if not staged:
        return Path(task["solution"])
    import importlib

    package = importlib.import_module(staged["module"])
    path = Path(package.__file__).parent / staged["file"]
    if file_hash(path) != task["hash"]:
        raise RuntimeError(f"the staged copy of {task['solution']} does not match its hash")
    return path


def judge_task(task: dict) -> dict:
    """Judge one submission as ``run_challenge.py CHALLENGE --solution FILE --action ACTION``
    judges it, through ``judge.cli.evaluate``.

    Args:
        task: id, challenge (folder path), solution, language, action, seed (or None), device,
            timeout, budget, hash, known_keys (environment keys already in the history: when
            this process's key is one, nothing is judged) and, under Ray, staged.

    Returns:
        ``{"id", "kind": "report" | "skipped" | "error", "exit_code", "report", "error",
        "env", "started", "finished"}``; never raises for a submission's or the judge's own
        failure (those are ``error`` results with exit code 2 or 4).
    """
    from judge.challenges import ChallengeLoadError
    from judge.cli import ExitCode, UsageError, build_parser, evaluate
    from judge.session import ChallengeError

    result = {"id": task["id"], "kind": "error", "exit_code": int(ExitCode.INTERNAL_ERROR)}
    result.update(report=None, error=None, env=None, started=time.time())
    try:
        solution = _task_solution(task)
        env = environment(task["device"], task["language"])
        result["env"] = env.to_dict()
        if env.key in task.get("known_keys", ()):
            result.update(kind="skipped", exit_code=None, finished=time.time())
            return result
        if task["device"] == "cuda" and task["action"] in ("submit", "bench"):
            try:
                _measure_bandwidth_once()
            except Exception:  # the session measures it itself, and reports what fails
                pass
        argv = [task["challenge"], "--solution", str(solution), "--action", task["action"]]
        argv += ["--language", task["language"], "--device", task["device"]]
        argv += ["--budget", str(task["budget"])]
        if task["timeout"] is not None:  # else the single run's default for the device
            argv += ["--timeout", str(task["timeout"])]
        if task.get("seed") is not None:
            argv += ["--seed", str(task["seed"])]
        report, code = evaluate(build_parser().parse_args(argv))
        report.solution = task["solution"]  # where the submitter has it, not a staged copy
        result.update(kind="report", exit_code=int(code), report=report.to_dict())
    except (UsageError, ChallengeNotFound, ChallengeLoadError, ChallengeError) as error:
        result.update(exit_code=int(ExitCode.BAD_USAGE), error=str(error))
    except Exception as error:  # the judge's own failure: this submission's line says so
        result["error"] = f"internal error: {error!r}; the submission was not judged"
    result["finished"] = time.time()
    return result


# -- the batch: submissions out, results in, history and JSONL written -----------------------


def _existing_ids(out: Path) -> Dict[str, bool]:
    """Ids already in the output file: True for a report line, False for an error line. A
    line cut off by a kill is ignored (and a newline added, so the next line starts clean)."""
    ids: Dict[str, bool] = {}
    if not out.is_file():
        return ids
    text = out.read_text()
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "id" in obj:
            ids[str(obj["id"])] = ids.get(str(obj["id"]), False) or "error" not in obj
    if text and not text.endswith("\n"):
        with out.open("a") as f:
            f.write("\n")
    return ids


def _pick_device(requested: Optional[str]) -> str:
    if requested is not None:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _summary_line(sub: Submission, result_line: dict, verdict: str) -> str:
    parts = [sub.id, sub.challenge.path.name if sub.challenge else "-", sub.language or "-"]
    parts.append(verdict)
    perf = result_line.get("performance") or {}
    timing = perf.get("timing") or {}
    if timing.get("median_ms") is not None:
        parts.append(f"median {timing['median_ms'] * 1e3:.1f} us")
    if "from_history" in result_line:
        parts.append("(from the history)")
    if result_line.get("error"):
        parts.append(result_line["error"].splitlines()[0][:160])
    return "  ".join(parts)


def run_batch(
    spec: Path,
    out: Path,
    console: Console,
    challenge: Optional[str] = None,
    action: str = "submit",
    device: Optional[str] = None,
    jobs: Optional[int] = None,
    ray_address: Optional[str] = None,
    rerun: bool = False,
    db: Optional[Path] = None,
    timeout: Optional[float] = None,
    budget: float = 10.0,
    ray_options: Optional[dict] = None,
) -> int:
    """Judge every submission of ``spec``; returns the exit code (0 when every submission
    passed, 1 when one failed or got an error line).

    Args:
        spec: a JSONL file or a folder (see the module docstring).
        out: the JSONL file results are appended to as they finish.
        console: where progress and the summary go.
        challenge: the challenge of entries that name none.
        action: the action of entries that name none ("submit" by default).
        device: "cuda" or "cpu"; default: cuda when a GPU is visible (in the Ray cluster).
        jobs: judge processes: at most this many GPUs on cuda (default every visible one), this
            many on the CPU (default 1). Ignored under Ray, whose resources decide.
        ray_address: run Ray tasks on this cluster ("local": RAY_ADDRESS or a new local one).
        rerun: judge submissions the history already has a result for.
        db: the history file (default ``default_db_path()``).
        timeout: seconds allowed for one call of solve (None: a single run's default for the
            device).
        budget: seconds of timing samples per performance test.
        ray_options: more ``ray.init`` arguments for a new local cluster (e.g. num_cpus).

    Raises:
        UsageError: SPEC missing, an unknown --challenge, no GPU for cuda, or Ray requested
            but not installed (or already initialized in this process).
    """
    from judge.batch_runners import run_local, run_ray
    from judge.cli import ExitCode

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    submissions = parse_spec(spec, challenge, action, out.parent / f"{out.name}.sources")
    existing = _existing_ids(out)
    by_id = {sub.id: sub for sub in submissions if sub.error is None}
    counts = {"passed": 0, "failed": 0}
    started = time.perf_counter()
    with (
        History(db or default_db_path()) as history,
        out.open("a") as sink,
        BatchProgress(console, len(submissions), console.is_terminal) as bar,
    ):

        def emit(sub: Submission, line: Optional[dict], verdict: str, shown: dict):
            if line is not None:
                sink.write(json.dumps(line) + "\n")
                sink.flush()
            counts["passed" if verdict == "PASS" else "failed"] += 1
            bar.advance(verdict, _summary_line(sub, shown, verdict))

        for sub in submissions:
            if sub.error is not None:
                line = sub.error_line()
                emit(sub, None if sub.id in existing else line, ERROR_VERDICT, line)
        tasks = _tasks(by_id.values(), history, rerun, timeout, budget)
        if ray_address is not None:

            def say(text: str):
                console.print(text, highlight=False)

            results = run_ray(tasks, ray_address, device, say, ray_options)
        else:
            device = _pick_device(device)
            for task in tasks:
                task["device"] = device
            if tasks:
                console.print(_local_note(device, jobs), highlight=False)
            results = run_local(tasks, device, jobs, out.parent / f"{out.name}.log")
        try:
            for result in results:
                _take_result(by_id[result["id"]], result, history, existing, emit)
        except KeyboardInterrupt:
            results.close()  # stops the judges and the submissions' workers
            bar.__exit__(None, None, None)
            console.print(
                f"interrupted: {bar.done} of {len(submissions)} done and kept (in {out} and the "
                "history); run the same command again to judge the rest",
                style="red",
            )
            return ExitCode.BAD_USAGE
    console.print(
        f"{bar.done} submissions in {time.perf_counter() - started:.1f} s; results in {out}",
        highlight=False,
    )
    _render_summary(console, bar)
    console.print(f"{counts['passed']} passed, {counts['failed']} failed", highlight=False)
    return ExitCode.OK if counts["failed"] == 0 else ExitCode.TEST_FAILED


def _tasks(submissions, history: History, rerun: bool, timeout: float, budget: float):
    """``judge_task``'s task for each valid submission, with the environment keys the history
    already has for it (none with ``rerun``); the device is set by the runner."""
    tasks = []
    for sub in submissions:
        sub.hash = digest = file_hash(sub.solution)  # the key its result is stored under
        key = (digest, sub.challenge.path.name, sub.action, sub.language)
        task = {"id": sub.id, "challenge": str(sub.challenge.path), "hash": digest}
        task.update(solution=str(sub.solution), language=sub.language, action=sub.action)
        task.update(seed=sub.seed, device=None, timeout=timeout, budget=budget)
        task["known_keys"] = [] if rerun else sorted(history.known_keys(*key))
        tasks.append(task)
    return tasks


def _local_note(device: str, jobs: Optional[int]) -> str:
    from judge.batch_runners import local_slots

    slots = local_slots(device, jobs)
    if device == "cuda":
        return f"{len(slots)} judges, one per GPU (CUDA_VISIBLE_DEVICES={','.join(slots)})"
    return f"{len(slots)} judge{'s' if len(slots) > 1 else ''} on the CPU (--jobs)"


def _take_result(sub: Submission, result: dict, history: History, existing, emit):
    """Record one finished result in the history (first: a kill between the two writes then
    loses no work) and write its JSONL line."""
    env = result.get("env")
    if result["kind"] == "skipped":
        stored = history.latest(
            sub.hash, sub.challenge.path.name, sub.action, sub.language, env["key"]
        )
        if stored is None:  # the row went away since the batch started: judge it next time
            result = dict(result, kind="error", exit_code=4, error="its history row vanished")
            return _take_result(sub, result, history, existing, emit)
        line = {"id": sub.id, **stored.report, "exit_code": stored.exit_code}
        line["from_history"] = {
            "run": stored.id,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stored.finished_at)),
        }
        write = not existing.get(sub.id, False)
        emit(sub, line if write else None, submission_verdict(stored.report), line)
        return
    if result["kind"] == "error":
        line = {"id": sub.id, "error": result["error"], "exit_code": result["exit_code"]}
        line.update(challenge=sub.challenge.path.name, solution=str(sub.solution))
        emit(sub, line, ERROR_VERDICT, line)
        return
    report = result["report"]
    if result["exit_code"] in RECORDED_EXIT_CODES and env is not None:
        from judge.history import Environment

        run = Run(
            challenge=sub.challenge.path.name,
            language=report["language"],
            action=report["action"],
            solution_path=str(sub.solution),
            solution_hash=sub.hash,
            device=report["device"],
            environment=Environment(env["device_name"], env["versions"], env["key"]),
            exit_code=result["exit_code"],
            report=report,
            finished_at=result["finished"],
            wall_s=result["finished"] - result["started"],
            source="batch",
            submission_id=sub.id,
        )
        history.add(run)
    line = {"id": sub.id, **report, "exit_code": result["exit_code"]}
    emit(sub, line, submission_verdict(report), line)


def _render_summary(console: Console, bar: BatchProgress):
    table = Table()
    table.add_column("Verdict")
    table.add_column("Submissions", justify="right")
    for verdict, count in sorted(bar.counts.items(), key=lambda kv: (kv[0] != "PASS", kv[0])):
        table.add_row(verdict, str(count))
    console.print(table)


def build_batch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_challenge.py batch",
        description="Judge many submissions (a JSONL SPEC or a folder), one judge per GPU, "
        "results streamed to a JSONL file and recorded in the history.",
    )
    parser.add_argument("spec", type=Path, help="JSONL file (one submission a line) or folder")
    parser.add_argument("--out", type=Path, required=True, help="JSONL file results go to")
    parser.add_argument("--challenge", help="the challenge of entries that name none")
    parser.add_argument(
        "--action", choices=actions(), default="submit", help="default action (submit)"
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when visible")
    parser.add_argument(
        "--jobs",
        type=int,
        help="judge processes: on the CPU this many (default 1); on cuda at most this many "
        "GPUs (default every visible one, one judge each)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the judges as Ray tasks (one GPU or one CPU each); without ADDRESS, "
        "RAY_ADDRESS or a new local cluster",
    )
    parser.add_argument(
        "--rerun", action="store_true", help="judge again what the history already has"
    )
    parser.add_argument("--db", type=Path, help=f"history file (default {default_db_path()})")
    parser.add_argument(
        "--timeout", type=float, help="seconds per solve call (default: as for a single run)"
    )
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds of timing per performance test"
    )
    return parser


def batch_main(argv: List[str], console: Console) -> int:
    """``run_challenge.py batch``'s entry point; returns its exit code."""
    from judge.cli import ExitCode, UsageError

    args = build_batch_parser().parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        console.print("error: --jobs must be at least 1", style="red")
        return ExitCode.BAD_USAGE
    try:
        return run_batch(
            args.spec,
            args.out,
            console,
            challenge=args.challenge,
            action=args.action,
            device=args.device,
            jobs=args.jobs,
            ray_address=args.ray,
            rerun=args.rerun,
            db=args.db,
            timeout=args.timeout,
            budget=args.budget,
        )
    except UsageError as error:
        console.print(f"error: {error}", style="red", markup=False)
        return ExitCode.BAD_USAGE
    except KeyboardInterrupt:  # before the judges started: nothing was judged yet
        console.print("interrupted", style="red")
        return ExitCode.BAD_USAGE
    except Exception as error:  # never a traceback: say what failed
        console.print(
            f"internal error: {error!r}; the results so far are kept. Please report it with "
            "the command line.",
            style="red",
            markup=False,
        )
        return ExitCode.INTERNAL_ERROR
