"""``run_challenge.py``: build a submission, check it against the reference and time it."""

import argparse
import enum
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

from rich.console import Console

from judge.build_only import check_build
from judge.challenges import (
    ChallengeLoadError,
    ChallengeNotFound,
    find_challenge,
    functional_test_names,
    list_challenges,
    load_challenge,
)
from judge.frames import cuda_required
from judge.languages import LANGUAGES, BuildError, detect_language
from judge.report import Report, render
from judge.sandbox import MODES
from judge.sandbox import probe as probe_sandbox
from judge.session import ChallengeError, Session
from judge.signature import parse_signature
from judge.supervisor import SandboxRefused
from judge.timing import CACHE_DIR


class ExitCode(enum.IntEnum):
    """The process exit status of ``run_challenge.py``."""

    OK = 0  # every test passed
    TEST_FAILED = 1  # a test got a verdict other than PASS
    BAD_USAGE = 2  # bad arguments, unknown challenge, missing file or toolchain
    BUILD_FAILED = 3  # the submission did not build or does not declare solve as required
    INTERNAL_ERROR = 4  # the judge or the challenge itself failed: a bug to report


GPU_TIMEOUT_S = 60.0  # --timeout's default on the GPU
CPU_TIMEOUT_S = 600.0  # on the CPU: Triton's interpreter runs a large test for minutes


class UsageError(Exception):
    """A problem with what the user asked for; the message says how to fix it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_challenge.py",
        description="Build a submission, check it against the challenge's reference, time it.",
        epilog="Many submissions: run_challenge.py batch SPEC --out FILE (batch --help). "
        "Best times and regressions: run_challenge.py history [CHALLENGE].",
    )
    parser.add_argument(
        "challenge",
        nargs="?",
        help="challenge folder, number (95) or name (decode_phase_attention)",
    )
    parser.add_argument("--list", action="store_true", help="list the challenges and exit")
    parser.add_argument(
        "--language",
        choices=list(LANGUAGES),
        help="default: inferred from the file's suffix, then its imports",
    )
    parser.add_argument(
        "--solution", type=Path, help="default: <challenge>/solution/solution.<ext>"
    )
    parser.add_argument(
        "--action",
        choices=("run", "submit", "bench", "build"),
        default="run",
        help="run: the example test; submit: every functional test, then "
        "the performance test; bench: the performance test only; build: compile and "
        "check solve's declaration only (CUDA, Mojo and CuTe DSL too without a GPU)",
    )
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        help="default: cuda when a CUDA GPU is visible, else cpu",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument("--seed", type=int, help="replay a run's inputs (printed by every run)")
    parser.add_argument(
        "--db", type=Path, help="the history file every run is added to (default: see history)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help=f"seconds allowed for one call of solve (default {GPU_TIMEOUT_S:g} on the GPU, "
        f"{CPU_TIMEOUT_S:g} on the CPU, where Triton runs interpreted)",
    )
    parser.add_argument(
        "--sandbox",
        choices=MODES,
        default="auto",
        help="confine the worker with Landlock and seccomp: auto (what the machine offers, "
        "named in the report), require (a usage error where either is missing), off",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="seconds of timing samples for the performance test (default 10)",
    )
    return parser


def _find_solution(folder, language: Optional[str], given: Optional[Path]) -> Path:
    if given is not None:
        if not given.is_file():
            raise UsageError(f"no solution file at {given}")
        return given
    solution_dir = folder.path / "solution"
    if language is not None:
        candidates = [solution_dir / f"solution{LANGUAGES[language].suffix}"]
    else:
        candidates = sorted(solution_dir.glob("solution.*")) or [solution_dir / "solution.<ext>"]
    for path in candidates:
        if path.is_file():
            return path
    suffix = LANGUAGES[language or "cuda"].suffix
    starter = folder.starter_dir / f"starter{suffix}"
    raise UsageError(
        f"no solution at {candidates[0]}; start from the starter:\n"
        f"  mkdir -p {solution_dir} && cp {starter} {solution_dir}/solution{suffix}"
        "\nor pass --solution FILE"
    )


def _pick_device(requested: Optional[str], notes: List[str]) -> str:
    import torch

    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise UsageError("--device cuda: no CUDA GPU is visible to PyTorch")
    if requested is None:
        if not available:
            notes.append("no CUDA GPU found: running on the CPU (--device cpu)")
        return "cuda" if available else "cpu"
    return requested


def _language_for(path: Path, requested: Optional[str], device: str, build_only=False):
    language = requested or detect_language(path)
    if language is None:
        raise UsageError(f"cannot tell the language of {path}; pass --language")
    adapter = LANGUAGES[language]
    missing = adapter.missing_toolchain()
    if missing:
        raise UsageError(missing)
    if device == "cpu" and not adapter.runs_on_cpu and not build_only:
        raise UsageError(
            f"{language} needs an NVIDIA GPU; on a CPU, pytorch, triton and jax run "
            "(--action build compiles it without one)"
        )
    return adapter


def judge(args, console: Console) -> ExitCode:
    """Judge one submission as ``args`` asks, print the report, write ``--json`` and add the
    run to the history (``judge.history``)."""
    from judge.history import record_run
    from judge.progress import timing_progress

    started = time.time()
    with timing_progress(console, args.budget) as on_sample:
        report, exit_code = evaluate(args, on_sample)
    render(report, console)
    if args.json:
        report.write_json(args.json)
    record_run(args.db, report.to_dict(), args.challenge, int(exit_code), started)
    return exit_code


def evaluate(args, on_sample=None) -> Tuple[Report, ExitCode]:
    """Judge one submission as ``args`` (``build_parser()``'s namespace) asks, printing
    nothing: the code path of every single run and of every batch submission.

    Args:
        on_sample: called with the count after each timed sample (a progress display).

    Returns:
        The report and the exit code (OK, TEST_FAILED or BUILD_FAILED).

    Raises:
        UsageError, ChallengeNotFound, ChallengeLoadError, ChallengeError: as ``main`` reports.
    """
    import torch

    notes: List[str] = []
    folder = find_challenge(args.challenge)
    device = _pick_device(args.device, notes)
    solution = _find_solution(folder, args.language, args.solution).resolve()
    adapter = _language_for(solution, args.language, device, args.action == "build")
    if args.sandbox == "require":
        landlock, seccomp, missing = probe_sandbox()
        if not (landlock and seccomp):
            raise UsageError(f"--sandbox require: {missing}")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    challenge = load_challenge(folder, device)
    report = Report(
        f"{folder.number} {challenge.name}",
        adapter.name,
        str(solution),
        device,
        args.action,
        seed,
        notes,
    )
    exit_code = ExitCode.OK
    try:
        params = parse_signature(challenge.get_solve_signature())
        artifact = adapter.build(solution, params, CACHE_DIR / "builds", report.notes)
        if args.action == "build":
            report.notes.append(check_build(adapter, artifact, folder.path))
    except BuildError as error:
        report.build_error = str(error)
        exit_code = ExitCode.BUILD_FAILED
    if report.build_error is None and args.action != "build":
        with tempfile.TemporaryDirectory(prefix="judge-") as workdir:
            session = Session(
                challenge,
                folder.path,
                adapter.name,
                artifact,
                device,
                Path(workdir),
                args.timeout or (CPU_TIMEOUT_S if device == "cpu" else GPU_TIMEOUT_S),
                args.sandbox,
            )
            try:
                _run_tests(session, challenge, args, seed, report, on_sample)
            except SandboxRefused as refused:
                raise UsageError(str(refused)) from None
            except Exception as error:  # a challenge that puts tensors on "cuda"
                where = cuda_required(error, folder.path / "challenge.py")
                if device != "cpu" or where is None:
                    raise
                raise UsageError(
                    f'{where}\nthe challenge creates tensors on "cuda", so it needs an NVIDIA '
                    "GPU; this machine has none (run it where PyTorch sees one)"
                ) from None
            finally:
                session.close()
                report.sandbox = session.sandbox
        if session.load_failure is not None:
            exit_code = ExitCode.BUILD_FAILED
    if exit_code is ExitCode.OK and report.counts[1]:
        exit_code = ExitCode.TEST_FAILED
    return report, exit_code


def _run_tests(session: Session, challenge, args, seed: int, report: Report, on_sample=None):
    """The tests of ``args.action``, in order, appended to ``report``."""
    import torch

    torch.manual_seed(seed)  # the generators draw from the global RNG
    action = args.action
    if action == "run":
        example = challenge.generate_example_test()
        report.tests.append(session.run_test("example", "example", example, seed, True))
    elif action == "submit":
        functional = challenge.generate_functional_test()
        names = functional_test_names(challenge, len(functional))
        for index, (name, test) in enumerate(zip(names, functional)):
            report.tests.append(session.run_test(name, "functional", test, seed + index))
    if action in ("submit", "bench"):
        report.performance = session.run_performance(seed, args.budget, on_sample)


def main(argv=None) -> int:
    # a pipe or file gets a wide table instead of rich's 80-column default
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["batch"]:
        from judge.batch import batch_main

        return batch_main(argv[1:], console)
    if argv[:1] == ["history"]:
        from judge.history import history_main

        return history_main(argv[1:], console)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for folder in list_challenges():
            console.print(f"{folder.number:>4}  {folder.slug:<32} {folder.difficulty}")
        return ExitCode.OK
    if not args.challenge:
        parser.print_usage()
        console.print("error: name a challenge (or --list)", style="red")
        return ExitCode.BAD_USAGE
    try:
        return judge(args, console)
    except (UsageError, ChallengeNotFound, ChallengeLoadError, ChallengeError) as error:
        console.print(f"error: {error}", style="red", markup=False)
        return ExitCode.BAD_USAGE
    except KeyboardInterrupt:
        console.print("interrupted", style="red")
        return ExitCode.BAD_USAGE
    except Exception as error:  # never a traceback: say what failed and where to report it
        console.print(
            f"internal error: {error!r}; the submission was not judged. Please report "
            "it with the command line and the seed.",
            style="red",
            markup=False,
        )
        return ExitCode.INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
