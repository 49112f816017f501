"""A release check of batch judging: every solution (and broken-submission fixture) of some
challenges is judged once as one batch and once as single submits, each single submit with the
inputs (seed) its batch line was judged with; every test's verdict must match.

    python scripts/batch_vs_single.py [--challenges 95,96] [--no-fixtures] [--select GLOB]
        [--skip N] [--limit N] [--timeout S] [--budget S] [--device cuda|cpu] [--out DIR]

Solutions are the files of solutions/<challenge folder>/; fixtures are the files of
tests/fixtures/ (not README.md, not the shared .cuh), each for challenge 96 unless its
docstring opens with "Challenge 95." (tests/fixtures/README.md). ``--skip``/``--limit`` take a
slice of that list, sorted by challenge then path, so a long check can be split across calls.

The batch is ``run_challenge.py batch`` with ``--rerun`` and its own history file under
``--out``; the single runs are ``run_challenge.py N --action submit --seed SEED``, one process
each, one after another. Prints a row per submission (same / DIFFERENT / missing, its verdicts,
the single run's wall time in s), then both wall times and their ratio. Exit codes: 0 every
compared verdict matches, 1 a difference or a missing result, 2 bad usage.
"""

import argparse
import fnmatch
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from judge.challenges import ChallengeNotFound, find_challenge  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
FIXTURE_DEFAULT_CHALLENGE = 96  # tests/fixtures/README.md


def fixture_challenge(path: Path) -> int:
    """The challenge a fixture is written for: 95 when its docstring opens with
    "Challenge 95.", else 96."""
    head = path.read_text(errors="replace")[:200]
    match = re.match(r'\s*(?:"""|//|/\*|#)?\s*Challenge (\d+)\.', head)
    return int(match.group(1)) if match else FIXTURE_DEFAULT_CHALLENGE


def submissions(numbers: List[int], fixtures: bool) -> List[dict]:
    """Batch SPEC entries (id, challenge, solution, action) of the challenges' solutions and,
    with ``fixtures``, of the fixtures written for them; sorted by challenge, then path.

    Raises:
        ChallengeNotFound: a number names no challenge.
    """
    entries = []
    for number in numbers:
        folder = find_challenge(str(number))
        for path in sorted((REPO / "solutions" / folder.path.name).glob("*")):
            if path.is_file():
                entries.append((number, path))
    if fixtures:
        for path in sorted(FIXTURES.iterdir()):
            if path.name == "README.md" or path.suffix == ".cuh" or not path.is_file():
                continue
            number = fixture_challenge(path)
            if number in numbers:
                entries.append((number, path))
    entries.sort(key=lambda e: (numbers.index(e[0]), str(e[1])))
    return [
        {"id": str(p.relative_to(REPO)), "challenge": n, "solution": str(p), "action": "submit"}
        for n, p in entries
    ]


def verdict_key(report: Optional[dict]):
    """What must match: (build error?, ((test, verdict), ...), performance verdict); for a
    line the judge could not judge, ("error", exit code); None when there is no result."""
    if report is None:
        return None
    if "tests" not in report:
        return ("error", report.get("exit_code"))
    tests = tuple((t["name"], t["verdict"]) for t in report["tests"])
    performance = (report.get("performance") or {}).get("verdict")
    return (bool(report.get("build_error")), tests, performance)


def shown_verdicts(key) -> str:
    """A verdict key (``verdict_key``) in the table: its distinct verdicts, comma-separated."""
    if key is None:
        return "-"
    if key[0] == "error":
        return f"not judged (exit {key[1]})"
    if key[0]:
        return "BUILD ERROR"
    names = sorted({v for _, v in key[1]} | ({key[2]} if key[2] else set()))
    return ", ".join(names)


def differences(batch_key, single_key) -> List[str]:
    """The tests (and the performance test) whose verdicts differ, as "name: batch / single"."""
    if batch_key[0] == "error" or single_key[0] == "error" or batch_key[0] != single_key[0]:
        return [f"judged: {shown_verdicts(batch_key)} / {shown_verdicts(single_key)}"]
    batch_tests, single_tests = dict(batch_key[1]), dict(single_key[1])
    lines = [
        f"{name}: {batch_tests.get(name, '-')} / {single_tests.get(name, '-')}"
        for name in dict.fromkeys([*batch_tests, *single_tests])
        if batch_tests.get(name) != single_tests.get(name)
    ]
    if batch_key[2] != single_key[2]:
        lines.append(f"performance: {batch_key[2]} / {single_key[2]}")
    return lines


def judge_command(*args: object) -> List[str]:
    """``python run_challenge.py ARGS...``, every argument as a string."""
    return [sys.executable, str(REPO / "run_challenge.py"), *map(str, args)]


def timed_run(command: List[str], display: Path) -> float:
    """Run one judge command from the repository, its output to ``display``, nothing on its
    stdin; returns its wall time in s."""
    started = time.perf_counter()
    with open(display, "w") as sink:
        subprocess.run(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
        )
    return time.perf_counter() - started


def run_batch(spec: Path, out: Path, options: List[object]) -> float:
    """Judge the SPEC as one batch; returns its wall time in s. Its display goes to
    ``<out>.display``."""
    command = judge_command("batch", spec, "--out", out, "--rerun", *options)
    return timed_run(command, Path(f"{out}.display"))


def run_single(entry: dict, seed: Optional[int], report: Path, options: List[object]) -> float:
    """One submit in its own process, with the batch line's seed; returns its wall time in s.
    Its display goes beside ``report``, as ``.log``."""
    seeded = ["--seed", seed] if seed is not None else []
    command = judge_command(
        entry["challenge"],
        "--action",
        "submit",
        "--solution",
        entry["solution"],
        "--json",
        report,
        *options,
        *seeded,
    )
    return timed_run(command, report.with_suffix(".log"))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="scripts/batch_vs_single.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--challenges", default="95,96", help="comma-separated numbers")
    parser.add_argument("--no-fixtures", action="store_true", help="solutions only")
    parser.add_argument("--select", help="only files whose name matches this glob")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N")
    parser.add_argument("--limit", type=int, help="judge at most N (after --skip)")
    parser.add_argument("--timeout", type=float, help="seconds per solve call (judge default)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timing samples")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when visible")
    parser.add_argument(
        "--out", type=Path, default=Path("batch-vs-single"), help="folder for every result"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(highlight=False)
    try:
        numbers = [int(n) for n in args.challenges.split(",") if n.strip()]
        entries = submissions(numbers, not args.no_fixtures)
    except ValueError:
        console.print(f"--challenges: numbers, not {args.challenges!r}", style="red")
        return 2
    except ChallengeNotFound as exc:
        console.print(str(exc), style="red")
        return 2
    if args.select:
        entries = [e for e in entries if fnmatch.fnmatch(Path(e["solution"]).name, args.select)]
    entries = entries[args.skip :][: args.limit]
    if not entries:
        console.print("nothing to judge: no submission is selected", style="red")
        return 2
    out = args.out
    (out / "single").mkdir(parents=True, exist_ok=True)
    options = ["--budget", args.budget]
    options += ["--timeout", args.timeout] if args.timeout is not None else []
    options += ["--device", args.device] if args.device else []
    spec = out / "spec.jsonl"
    spec.write_text("".join(json.dumps(e) + "\n" for e in entries))
    (out / "batch.jsonl").unlink(missing_ok=True)  # a batch resumes from its JSONL: start anew

    console.print(f"batch of {len(entries)} submissions ...")
    batch_wall = run_batch(spec, out / "batch.jsonl", options + ["--db", str(out / "batch.sqlite")])
    batch: Dict[str, dict] = {}
    if (out / "batch.jsonl").is_file():
        for line in (out / "batch.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                batch[row["id"]] = row

    table = Table("")
    table.add_column("submission", overflow="fold")
    for name in ("challenge", "verdicts (batch)", "single s"):
        table.add_column(name)
    single_wall, failures = 0.0, 0
    for number, entry in enumerate(entries, 1):
        b = batch.get(entry["id"])
        report = out / "single" / (entry["id"].replace("/", "__") + ".json")
        console.print(f"[{number}/{len(entries)}] single submit of {entry['id']} ...")
        report.unlink(missing_ok=True)
        wall = run_single(
            entry, (b or {}).get("seed"), report, options + ["--db", str(out / "single.sqlite")]
        )
        single_wall += wall
        s = json.loads(report.read_text()) if report.is_file() else None
        kb, ks = verdict_key(b), verdict_key(s)
        status = "missing" if kb is None or ks is None else "same" if kb == ks else "DIFFERENT"
        failures += status != "same"
        table.add_row(
            status, entry["id"], str(entry["challenge"]), shown_verdicts(kb), f"{wall:.1f}"
        )
        if status == "DIFFERENT":
            table.add_row("", "  single submit:", "", shown_verdicts(ks), "")
            for line in differences(kb, ks):
                table.add_row("", f"  {line}", "", "", "")  # the tests that differ
    console.print(table)
    console.print(
        f"batch {batch_wall:.1f} s, single submits {single_wall:.1f} s: the batch takes "
        f"{batch_wall / single_wall:.2f}x the loop's wall time; {len(entries) - failures} of "
        f"{len(entries)} the same"
    )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
