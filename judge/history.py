"""A local SQLite history of every judged run, and ``run_challenge.py history``.

Every run, single or batch, adds one row: the challenge folder, language, action, the
solution's path and SHA-256, every test's verdict, the performance test's timing (median,
mean, std and min in ms, the run count, how it was timed), the achieved bandwidth, the device
(``cuda`` or ``cpu``, and the GPU's name), the library versions (torch, triton, jax, CuTe DSL,
mojo, nvcc...), the seed, the time and the whole JSON report.

A run's *environment key* is the device's name and the versions of what judges that language
(torch, plus the language's own toolchain): ``batch`` skips a submission whose (solution hash,
challenge, action, language, environment key) already has a row.

The file is ``$XDG_DATA_HOME/decode-attention/history.sqlite`` (``~/.local/share/...`` when
XDG_DATA_HOME is unset), or the ``--db`` option's.
"""

import argparse
import functools
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD_PERCENT = 10.0
# what judges each language besides torch (the references, the checks and the timing)
TOOLCHAIN = {
    "cuda": ("nvcc",),
    "pytorch": (),
    "triton": ("triton",),
    "jax": ("jax", "jaxlib"),
    "cute": ("nvidia-cutlass-dsl",),
    "mojo": ("mojo-compiler",),
}
PACKAGES = ("torch", "numpy", "triton", "jax", "jaxlib", "nvidia-cutlass-dsl", "mojo-compiler")
# recorded results: every verdict decided; not usage errors (2) or the judge's own failures (4)
RECORDED_EXIT_CODES = (0, 1, 3)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    finished_at REAL NOT NULL,      -- seconds since the epoch (UTC)
    wall_s REAL,                    -- the run's wall-clock seconds, build included
    source TEXT NOT NULL,           -- "single" or "batch"
    submission_id TEXT,             -- the batch SPEC's id
    challenge TEXT NOT NULL,        -- the challenge folder's name, e.g. 95_decode_phase_attention
    language TEXT NOT NULL,
    action TEXT NOT NULL,
    solution_path TEXT NOT NULL,
    solution_hash TEXT NOT NULL,    -- SHA-256 of the file's bytes
    device TEXT NOT NULL,           -- "cuda" or "cpu"
    device_name TEXT NOT NULL,      -- e.g. "NVIDIA H200"; "cpu" on the CPU
    versions TEXT NOT NULL,         -- JSON: package (or nvcc) -> version
    env_key TEXT NOT NULL,          -- device_name and the versions that judge this language
    seed INTEGER,
    exit_code INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    verdicts TEXT NOT NULL,         -- JSON: test name -> verdict ("build", "performance" too)
    median_ms REAL, mean_ms REAL, std_ms REAL, min_ms REAL, runs INTEGER,
    timing_method TEXT,             -- GPU span (CUPTI) or CUDA events
    achieved_gbps REAL,
    speedup REAL,                   -- over the PyTorch reference, timed the same way
    report TEXT NOT NULL            -- the JSON report (Report.to_dict)
);
CREATE INDEX IF NOT EXISTS runs_by_key
    ON runs (solution_hash, challenge, action, language, env_key);
CREATE INDEX IF NOT EXISTS runs_by_challenge ON runs (challenge, solution_path);
"""


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/decode-attention/history.sqlite``, else under ``~/.local/share``."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "decode-attention" / "history.sqlite"


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits.

    Raises:
        OSError: the file cannot be read.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def nvcc_version() -> Optional[str]:
    """nvcc's release, e.g. "12.8.93", or None when nvcc is not on PATH."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"V(\d+\.\d+\.\d+)", out.stdout) or re.search(r"release ([\d.]+)", out.stdout)
    return found.group(1) if found else "unknown"


@functools.lru_cache(maxsize=None)
def library_versions() -> Dict[str, str]:
    """Versions of the installed packages in PACKAGES, nvcc's and Python's (absent ones are
    left out). Read from package metadata: nothing is imported."""
    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    nvcc = nvcc_version()
    if nvcc:
        versions["nvcc"] = nvcc
    return versions


@dataclass(frozen=True)
class Environment:
    """Where a run was judged: the device's name, every library version, and the key that
    decides whether an earlier result still stands."""

    device_name: str  # torch's name for the GPU, e.g. "NVIDIA H200"; "cpu" on the CPU
    versions: Dict[str, str]
    key: str

    def to_dict(self) -> dict:
        return {"device_name": self.device_name, "versions": self.versions, "key": self.key}


def environment(device: str, language: str) -> Environment:
    """The judging environment of this process for ``language`` on ``device``.

    Args:
        device: "cuda" (the first visible GPU is named: a batch judge sees exactly one) or
            "cpu".
        language: an adapter name, e.g. "triton".
    """
    if device == "cuda":
        import torch

        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = "cpu"
    versions = library_versions()
    relevant = {name: versions.get(name) for name in ("torch",) + TOOLCHAIN.get(language, ())}
    key = device_name + "|" + json.dumps(relevant, sort_keys=True)
    return Environment(device_name, dict(versions), key)


def _verdicts(report: dict) -> Dict[str, str]:
    verdicts = {}
    if report.get("build_error"):
        verdicts["build"] = "BUILD ERROR"
    for test in report.get("tests") or []:
        verdicts[test["name"]] = test["verdict"]
    if report.get("performance"):
        verdicts["performance"] = report["performance"]["verdict"]
    return verdicts


def submission_verdict(report: dict) -> str:
    """One verdict for a whole report: BUILD ERROR, else the first test's that is neither
    PASS nor SKIPPED, else PASS."""
    for verdict in _verdicts(report).values():
        if verdict not in ("PASS", "SKIPPED"):
            return verdict
    return "PASS"


@dataclass
class Run:
    """One history row (see the table's schema above for each field)."""

    challenge: str
    language: str
    action: str
    solution_path: str
    solution_hash: str
    device: str
    environment: Environment
    exit_code: int
    report: dict
    finished_at: float
    wall_s: Optional[float] = None
    source: str = "single"
    submission_id: Optional[str] = None
    id: Optional[int] = None

    @property
    def passed(self) -> bool:
        """Every test passed (a skipped performance test is not a failure)."""
        return self.exit_code == 0 and not self.report.get("failed")

    @property
    def timing(self) -> Optional[dict]:
        """The performance test's timing when it passed, else None."""
        perf = self.report.get("performance") or {}
        if perf.get("verdict") != "PASS":
            return None
        return perf.get("timing")

    @property
    def median_ms(self) -> Optional[float]:
        return self.timing["median_ms"] if self.timing else None


class History:
    """The SQLite file of every run. Each ``add`` commits at once, so a killed batch keeps
    everything it finished.

    Args:
        path: the database file; its folder is created.

    Raises:
        sqlite3.Error, OSError: the file cannot be created or is not a history database.
    """

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")  # readers never block the batch's writer
        with self.db:
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, run: Run) -> int:
        """Insert one run and commit; returns its row id."""
        report = run.report
        perf = report.get("performance") or {}
        timing = run.timing or {}
        roofline = perf.get("roofline") or {}
        row = {
            "finished_at": run.finished_at,
            "wall_s": run.wall_s,
            "source": run.source,
            "submission_id": run.submission_id,
            "challenge": run.challenge,
            "language": run.language,
            "action": run.action,
            "solution_path": run.solution_path,
            "solution_hash": run.solution_hash,
            "device": run.device,
            "device_name": run.environment.device_name,
            "versions": json.dumps(run.environment.versions, sort_keys=True),
            "env_key": run.environment.key,
            "seed": report.get("seed"),
            "exit_code": run.exit_code,
            "passed": int(report.get("passed") or 0),
            "failed": int(report.get("failed") or 0),
            "verdicts": json.dumps(_verdicts(report)),
            "median_ms": timing.get("median_ms"),
            "mean_ms": timing.get("mean_ms"),
            "std_ms": timing.get("std_ms"),
            "min_ms": timing.get("min_ms"),
            "runs": timing.get("runs"),
            "timing_method": timing.get("method"),
            "achieved_gbps": roofline.get("achieved_gbps") if timing else None,
            "speedup": perf.get("speedup_over_reference") if timing else None,
            "report": json.dumps(report),
        }
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self.db:
            cursor = self.db.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", row)
        run.id = cursor.lastrowid
        return run.id

    def known_keys(self, solution_hash: str, challenge: str, action: str, language: str):
        """The environment keys that already have a result for this submission."""
        rows = self.db.execute(
            "SELECT DISTINCT env_key FROM runs WHERE solution_hash = ? AND challenge = ? "
            "AND action = ? AND language = ?",
            (solution_hash, challenge, action, language),
        )
        return {row["env_key"] for row in rows}

    def latest(
        self, solution_hash: str, challenge: str, action: str, language: str, env_key: str
    ) -> Optional[Run]:
        """The newest run of this submission in this environment, or None."""
        row = self.db.execute(
            "SELECT * FROM runs WHERE solution_hash = ? AND challenge = ? AND action = ? "
            "AND language = ? AND env_key = ? ORDER BY finished_at DESC, id DESC LIMIT 1",
            (solution_hash, challenge, action, language, env_key),
        ).fetchone()
        return _run(row) if row else None

    def runs(self, challenge: Optional[str] = None) -> List[Run]:
        """Every run (of one challenge folder, when given), oldest first."""
        query, args = "SELECT * FROM runs", ()
        if challenge is not None:
            query, args = query + " WHERE challenge = ?", (challenge,)
        return [_run(row) for row in self.db.execute(query + " ORDER BY finished_at, id", args)]


def _run(row: sqlite3.Row) -> Run:
    environment = Environment(row["device_name"], json.loads(row["versions"]), row["env_key"])
    return Run(
        challenge=row["challenge"],
        language=row["language"],
        action=row["action"],
        solution_path=row["solution_path"],
        solution_hash=row["solution_hash"],
        device=row["device"],
        environment=environment,
        exit_code=row["exit_code"],
        report=json.loads(row["report"]),
        finished_at=row["finished_at"],
        wall_s=row["wall_s"],
        source=row["source"],
        submission_id=row["submission_id"],
        id=row["id"],
    )


# -- best times and regressions ---------------------------------------------------------------


@dataclass
class SolutionSummary:
    """Every run of one solution file on one kind of device: its best and latest runs and
    what regressed between them.

    ``best`` is the passing run with the lowest median (None when no run was timed);
    ``flags`` name each regression: the latest timed run's median above the best's by more
    than the threshold, or a run that failed after the previous run of its action passed.
    """

    challenge: str
    solution_path: str
    language: str
    device_name: str
    runs: List[Run]
    best: Optional[Run]
    latest: Run
    latest_timed: Optional[Run]
    flags: List[str]


def _version_changes(old: Dict[str, str], new: Dict[str, str]) -> str:
    changed = [
        f"{name} {old.get(name, '-')}->{new.get(name, '-')}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
    return ", ".join(changed)


def summarize(
    runs: Iterable[Run], threshold_percent: float = DEFAULT_THRESHOLD_PERCENT
) -> List[SolutionSummary]:
    """Group runs by (challenge, solution path, language, device name) and find each group's
    best time and regressions.

    Args:
        runs: history rows, oldest first (``History.runs``).
        threshold_percent: how much slower than the best (in percent of the best median) the
            latest timed run may be before it is flagged.
    """
    groups: Dict[tuple, List[Run]] = {}
    for run in runs:
        key = (run.challenge, run.solution_path, run.language, run.environment.device_name)
        groups.setdefault(key, []).append(run)
    summaries = []
    for (challenge, path, language, device_name), group in sorted(groups.items()):
        timed = [r for r in group if r.passed and r.median_ms is not None]
        best = min(timed, key=lambda r: r.median_ms, default=None)
        latest = group[-1]
        latest_timed = timed[-1] if timed else None
        flags = []
        if best is not None and latest_timed is not best:
            slower = 100.0 * (latest_timed.median_ms / best.median_ms - 1.0)
            if slower > threshold_percent:
                changes = _version_changes(
                    best.environment.versions, latest_timed.environment.versions
                )
                flags.append(f"slower +{slower:.0f}%" + (f" ({changes})" if changes else ""))
        same_action = [r for r in group[:-1] if r.action == latest.action]
        if not latest.passed and same_action and same_action[-1].passed:
            flags.append(
                f"now {submission_verdict(latest.report)} (passed "
                f"{_when(same_action[-1].finished_at)})"
            )
        summaries.append(
            SolutionSummary(
                challenge, path, language, device_name, group, best, latest, latest_timed, flags
            )
        )
    return summaries


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _us(run: Optional[Run]) -> str:
    return "-" if run is None or run.median_ms is None else f"{run.median_ms * 1e3:.1f}"


def _short_path(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def render_history(summaries: List[SolutionSummary], console, threshold_percent: float):
    """One table row per solution: runs, best median (us) and when, the latest run's verdict
    and median, and the regression flags; then a count line."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Best time per solution (median of the performance test, us)")
    for column in ("Challenge", "Solution", "Language", "Device", "Runs"):
        table.add_column(column, overflow="fold" if column == "Solution" else "ellipsis")
    table.add_column("Best us", justify="right")
    table.add_column("Best run")
    table.add_column("Latest")
    table.add_column("Latest us", justify="right")
    table.add_column("Regression")
    for s in summaries:
        verdict = submission_verdict(s.latest.report)
        table.add_row(
            s.challenge,
            _short_path(s.solution_path),
            s.language,
            s.device_name,
            str(len(s.runs)),
            _us(s.best),
            _when(s.best.finished_at) if s.best else "-",
            Text(verdict, style="bold green" if verdict == "PASS" else "bold red"),
            _us(s.latest_timed),
            Text("; ".join(s.flags), style="bold red") if s.flags else Text("-"),
        )
    console.print(table)
    flagged = sum(bool(s.flags) for s in summaries)
    console.print(
        f"{len(summaries)} solutions, {flagged} with regressions (slower than the best by more "
        f"than {threshold_percent:g}%, or failing after a pass)",
        highlight=False,
    )


def build_history_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_challenge.py history",
        description="The best time per solution from the local history, and regressions.",
    )
    parser.add_argument("challenge", nargs="?", help="only this challenge (folder, number, name)")
    parser.add_argument("--db", type=Path, help=f"history file (default {default_db_path()})")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD_PERCENT,
        help="flag a latest time slower than the best by more than this many percent "
        f"(default {DEFAULT_THRESHOLD_PERCENT:g})",
    )
    return parser


def challenge_key(query: str) -> str:
    """The history's name for a challenge (its folder's name) from a folder, number or name;
    a query that matches no folder is kept as it is."""
    from judge.challenges import ChallengeNotFound, find_challenge

    try:
        return find_challenge(query).path.name
    except ChallengeNotFound:
        return query


def history_main(argv: List[str], console) -> int:
    """``run_challenge.py history``: exit 0, or 1 when a regression is flagged, 2 when the
    history file cannot be read."""
    args = build_history_parser().parse_args(argv)
    path = args.db or default_db_path()
    if not Path(path).is_file():
        console.print(f"no history at {path} yet: every judged run adds to it", style="yellow")
        return 0
    try:
        with History(path) as history:
            runs = history.runs(challenge_key(args.challenge) if args.challenge else None)
    except sqlite3.Error as error:
        console.print(f"error: cannot read the history {path}: {error}", style="red")
        return 2
    summaries = summarize(runs, args.threshold)
    render_history(summaries, console, args.threshold)
    return 1 if any(s.flags for s in summaries) else 0


def record_run(
    db: Optional[Path], report: dict, challenge: str, exit_code: int, started: float
) -> Optional[int]:
    """Add one single run (``report`` as ``Report.to_dict`` gives it) to the history and
    return its row id. A history that cannot be written costs a warning on stderr, never the
    run's verdicts; runs without a verdict (exit codes 2 and 4) are not recorded.

    Args:
        db: the history file, None for ``default_db_path()``.
        challenge: the challenge as the user named it (folder, number or name).
        started: ``time.time()`` when the run began.
    """
    if exit_code not in RECORDED_EXIT_CODES:
        return None
    try:
        run = Run(
            challenge=challenge_key(challenge),
            language=report["language"],
            action=report["action"],
            solution_path=report["solution"],
            solution_hash=file_hash(report["solution"]),
            device=report["device"],
            environment=environment(report["device"], report["language"]),
            exit_code=exit_code,
            report=report,
            finished_at=time.time(),
            wall_s=time.time() - started,
        )
        with History(db) as history:
            return history.add(run)
    except Exception as error:  # the history must never fail a judged run
        sys.stderr.write(f"note: this run was not added to the history: {error!r}\n")
        return None
