"""A batch's SPEC: a JSONL file (one submission a line) or a folder of submission files, read
into ``Submission``s; every problem with an entry becomes that entry's ``error``, never an
exception.

A JSONL line has ``challenge`` (a number, name or folder; else ``--challenge``), exactly one of
``solution`` (a path, relative to the SPEC file's folder, else to the current folder) and
``source`` (the code itself, written to ``<out>.sources/<id>-<hash><suffix>`` first), and
optionally ``id`` (default ``line-N``), ``language``, ``action`` and ``seed``. In a folder,
every file whose language can be detected is a submission (its id: the relative path), for the
challenge of the nearest ``<number>_...`` folder above it, else ``--challenge``.
"""

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from judge.challenges import FOLDER_PATTERN, ChallengeFolder, ChallengeNotFound, find_challenge
from judge.languages import LANGUAGES, detect_language

SPEC_FIELDS = {"id", "challenge", "solution", "source", "language", "action", "seed"}


@dataclass
class Submission:
    """One SPEC entry: what to judge, or why it cannot be (``error``)."""

    id: str
    challenge: Optional[ChallengeFolder] = None
    solution: Optional[Path] = None
    language: Optional[str] = None
    action: str = "submit"
    seed: Optional[int] = None
    line: Optional[int] = None  # its line in a JSONL SPEC
    error: Optional[str] = None
    hash: Optional[str] = None  # SHA-256 of the solution when the batch read it

    def error_line(self, exit_code: int = 2) -> dict:
        line = {"id": self.id, "error": self.error, "exit_code": exit_code}
        if self.line is not None:
            line["spec_line"] = self.line
        if self.challenge is not None:
            line["challenge"] = self.challenge.path.name
        if self.solution is not None:
            line["solution"] = str(self.solution)
        return line


def actions() -> List[str]:
    """The actions ``run_challenge.py`` accepts (its parser is the one authority)."""
    from judge.cli import build_parser

    for action in build_parser()._actions:
        if action.dest == "action":
            return list(action.choices)
    return ["run", "submit", "bench"]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:80] or "submission"


def _inline_language(source: str) -> Optional[str]:
    """The language of an inline source: a Python one by its imports, else CUDA or Mojo by
    their marks; None when undecidable."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe.py"
        probe.write_text(source)
        language = detect_language(probe)
    if language is not None:
        return language
    if re.search(r'extern\s+"C"|__global__', source):
        return "cuda"
    if re.search(r"^\s*fn\s+\w+|^\s*from\s+(std\.)?gpu\b", source, re.M):
        return "mojo"
    return None


def _write_source(sub: Submission, source: str, sources_dir: Path) -> Path:
    """Write an inline source to its own file, named by id and content hash (never
    overwriting another content)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    suffix = LANGUAGES[sub.language].suffix
    path = sources_dir / f"{_safe_name(sub.id)}-{digest}{suffix}"
    sources_dir.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text(source)
    return path.resolve()


def _spec_entry(
    obj, number: int, spec_dir: Path, challenge: Optional[str], action: str, sources_dir: Path
) -> Submission:
    """One JSONL SPEC line as a Submission; every problem becomes its ``error``."""
    sub = Submission(id=f"line-{number}", line=number, action=action)
    if not isinstance(obj, dict):
        sub.error = f"SPEC line {number}: not a JSON object"
        return sub
    if isinstance(obj.get("id"), (str, int)) and str(obj["id"]).strip():
        sub.id = str(obj["id"])
    unknown = sorted(set(obj) - SPEC_FIELDS)
    if unknown:
        sub.error = f"unknown fields {unknown}; a SPEC line has {sorted(SPEC_FIELDS)}"
        return sub
    query = obj.get("challenge", challenge)
    if query is None:
        sub.error = "no challenge: give it in the line or with --challenge"
        return sub
    try:
        sub.challenge = find_challenge(str(query))
    except ChallengeNotFound as error:
        sub.error = str(error)
        return sub
    sub.action = obj.get("action", action)
    if sub.action not in actions():
        sub.error = f"unknown action {sub.action!r}; one of {actions()}"
        return sub
    seed = obj.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        sub.error = f"seed must be an integer, not {seed!r}"
        return sub
    sub.seed = seed
    sub.language = obj.get("language")
    if sub.language is not None and sub.language not in LANGUAGES:
        sub.error = f"unknown language {sub.language!r}; one of {sorted(LANGUAGES)}"
        return sub
    has_path, has_source = "solution" in obj, "source" in obj
    if has_path == has_source:
        sub.error = "give exactly one of solution (a path) and source (the code itself)"
        return sub
    if has_source:
        if not isinstance(obj["source"], str) or not obj["source"].strip():
            sub.error = "source must be a non-empty string"
            return sub
        sub.language = sub.language or _inline_language(obj["source"])
        if sub.language is None:
            sub.error = "cannot tell the inline source's language; add a language field"
            return sub
        sub.solution = _write_source(sub, obj["source"], sources_dir)
        return sub
    if not isinstance(obj["solution"], str):
        sub.error = "solution must be a path string"
        return sub
    given = Path(obj["solution"]).expanduser()
    for candidate in ([given] if given.is_absolute() else [spec_dir / given, Path.cwd() / given]):
        if candidate.is_file():
            sub.solution = candidate.resolve()
            break
    else:
        sub.error = f"no solution file at {given} (relative to {spec_dir} or the current folder)"
        return sub
    sub.language = sub.language or detect_language(sub.solution)
    if sub.language is None:
        sub.error = f"cannot tell the language of {sub.solution}; add a language field"
    return sub


def _folder_entries(folder: Path, challenge: Optional[str], action: str) -> List[Submission]:
    """Every file under ``folder`` whose language can be detected."""
    fallback = None
    if challenge is not None:
        fallback = find_challenge(challenge)  # ChallengeNotFound: a usage error for all
    submissions = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(p.startswith((".", "__")) for p in relative.parts):
            continue
        language = detect_language(path)
        if language is None:
            continue
        sub = Submission(relative.as_posix(), solution=path.resolve(), language=language)
        sub.action = action
        numbered = [
            p.name
            for p in [path.parent, *path.parent.parents]
            if FOLDER_PATTERN.match(p.name) and (p == folder or folder in p.parents)
        ]
        try:
            if numbered:
                sub.challenge = find_challenge(FOLDER_PATTERN.match(numbered[0]).group(1))
            elif fallback is not None:
                sub.challenge = fallback
            else:
                sub.error = "no <number>_<name> folder above it; pass --challenge"
        except ChallengeNotFound as error:
            sub.error = str(error)
        submissions.append(sub)
    return submissions


def parse_spec(
    spec: Path, challenge: Optional[str], action: str, sources_dir: Path
) -> List[Submission]:
    """The submissions a SPEC (JSONL file or folder) names, in order; bad entries carry their
    ``error``. Duplicate ids after the first are errors too.

    Raises:
        UsageError: SPEC does not exist, or ``--challenge`` names no challenge.
    """
    from judge.cli import UsageError

    spec = Path(spec)
    if spec.is_dir():
        try:
            submissions = _folder_entries(spec.resolve(), challenge, action)
        except ChallengeNotFound as error:
            raise UsageError(str(error)) from None
    elif spec.is_file():
        submissions = []
        for number, text in enumerate(spec.read_text().splitlines(), start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as error:
                sub = Submission(f"line-{number}", line=number)
                sub.error = f"SPEC line {number} is not JSON: {error.msg} (column {error.colno})"
                submissions.append(sub)
                continue
            entry = _spec_entry(obj, number, spec.resolve().parent, challenge, action, sources_dir)
            submissions.append(entry)
    else:
        raise UsageError(f"no SPEC at {spec}: give a JSONL file or a folder of submissions")
    seen = set()
    for sub in submissions:
        if sub.id in seen and sub.error is None:
            sub.error = f"duplicate id {sub.id!r}: ids must be unique within a batch"
        seen.add(sub.id)
    return submissions
