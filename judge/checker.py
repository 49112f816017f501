"""Checks that a challenge folder follows the LeetGPU challenge format and our house rules.

Each finding names the file, what is wrong and how to fix it. Used by
``scripts/check_challenge.py``, by pre-commit and by the test suite.
"""

import html
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from core.challenge_base import materialize_test

from judge.challenges import DIFFICULTIES, FOLDER_PATTERN, functional_test_names, load_challenge
from judge.scaffold import STARTER_FILES
from judge.signature import Param, declared_parameters, parse_signature

FUNCTIONAL_TEST_COUNT = range(7, 11)
GPU_MEMORY_BUDGET_BYTES = 16e9  # performance inputs must fit this 5 times over
PERFORMANCE_COPIES = 5
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Finding:
    """One problem in a challenge folder: the file, what is wrong, and the fix."""

    file: Path
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}\n    fix: {self.fix}"


class _Report:
    def __init__(self, folder: Path):
        self.folder = folder
        self.findings: List[Finding] = []

    def add(self, name: str, problem: str, fix: str):
        self.findings.append(Finding(self.folder / name, problem, fix))


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


def _section(page: str, heading: str) -> Optional[str]:
    match = re.search(rf"<h2>\s*{heading}s?\s*</h2>(.*?)(?=<h2>|\Z)", page, re.S)
    return match.group(1) if match else None


def _format_value(value) -> str:
    return f"{value:,}" if isinstance(value, int) else repr(value)


def performance_bullet(perf_test: Dict) -> str:
    """The Constraints bullet that must describe the performance test's scalar sizes."""
    pairs = [
        f"<code>{name}</code> = {_format_value(value)}"
        for name, value in perf_test.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return "Performance is measured with " + ", ".join(pairs)


def _matches(token: str, value: float) -> bool:
    decimals = len(token.split(".")[1]) if "." in token and "e" not in token.lower() else 0
    tolerance = 0.5 * 10.0**-decimals + 1e-6 * abs(value)
    return abs(float(token) - value) <= tolerance


def _find_run(tokens: List[str], values: List[float], start: int) -> int:
    """Index just past the first run of ``tokens`` from ``start`` matching ``values``, or -1."""
    for i in range(start, len(tokens) - len(values) + 1):
        if all(_matches(tokens[i + j], v) for j, v in enumerate(values)):
            return i + len(values)
    return -1


def _check_html_example(report: _Report, example_html: str, example: Dict, params: List[Param]):
    text = _strip_tags(example_html)
    tokens = NUMBER.findall(text)
    position = 0
    for p in params:
        value = example[p.name]
        if not p.is_pointer:
            pattern = rf"\b{re.escape(p.name)}\s*=\s*{re.escape(_format_value(value))}(?![\d.])"
            if not re.search(pattern, text):
                report.add(
                    "challenge.html",
                    f"the Example does not state {p.name} = {_format_value(value)}",
                    f"write '<code>{p.name}</code> = {_format_value(value)}' in the Example",
                )
            continue
        values = [float(v) for v in value.detach().cpu().flatten().tolist()]
        end = _find_run(tokens, values, position)
        if end < 0:
            shown = ", ".join(f"{v:.4g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
            what = "reference output" if p.is_output else "input"
            report.add(
                "challenge.html",
                f"the Example does not show the {what} {p.name} of generate_example_test() "
                f"(expected, in order after the previous tensor: {shown})",
                f"print {p.name}'s values row-major, to 4 decimals for floats",
            )
        else:
            position = end


def _check_test_dict(report: _Report, label: str, test, params: List[Param]):
    if not isinstance(test, dict):
        report.add(
            "challenge.py", f"{label} is a {type(test).__name__}, not a dict", "return a dict"
        )
        return False
    expected, got = [p.name for p in params], list(test)
    if sorted(expected) != sorted(got):
        report.add(
            "challenge.py",
            f"{label} has keys {got}, the signature has {expected}",
            "give every test exactly the solve parameters as keys",
        )
        return False
    ok = True
    for p in params:
        value = test[p.name]
        if p.is_pointer:
            dtype = getattr(value, "dtype", None)
            if not isinstance(value, torch.Tensor) or dtype != p.torch_dtype:
                report.add(
                    "challenge.py",
                    f"{label}: {p.name} is {type(value).__name__} of dtype {dtype}, the "
                    f"signature's pointer type needs a tensor of {p.torch_dtype}",
                    f"create {p.name} with dtype={p.torch_dtype}",
                )
                ok = False
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            report.add(
                "challenge.py",
                f"{label}: scalar {p.name} is {type(value).__name__}",
                "pass a Python int or float",
            )
            ok = False
    return ok


def _run_reference(report: _Report, challenge, label: str, test: Dict) -> bool:
    try:
        challenge.reference_impl(**test)
    except Exception as exc:  # a broken reference is a finding, not a crash
        report.add(
            "challenge.py",
            f"reference_impl fails on {label}: {exc!r}",
            "make the test's shapes match the reference's asserts",
        )
        return False
    return True


def _call(report: _Report, method, label: str):
    try:
        return method()
    except Exception as exc:  # the challenge's own code: a finding, never a crash
        report.add("challenge.py", f"{label} raised {exc!r}", "fix the generator")
        return None


def _check_challenge_py(report: _Report, folder: Path):
    try:
        challenge = load_challenge(folder, "cpu")
        meta = load_challenge(folder, "meta")
    except Exception as exc:
        report.add("challenge.py", f"cannot load the challenge: {exc}", "fix the import error")
        return None
    for attr, kind in (("name", str), ("atol", float), ("rtol", float)):
        if not isinstance(getattr(challenge, attr, None), kind):
            report.add(
                "challenge.py",
                f"class attribute {attr} is missing or not a {kind.__name__}",
                f"set {attr} on class Challenge",
            )
    if getattr(challenge, "num_gpus", None) != 1:
        report.add("challenge.py", "num_gpus must be 1", "set num_gpus = 1")
    if getattr(challenge, "access_tier", None) not in ("free", "pro"):
        report.add(
            "challenge.py", "access_tier must be 'free' or 'pro'", 'set access_tier = "free"'
        )
    try:
        params = parse_signature(challenge.get_solve_signature())
    except Exception as exc:
        report.add(
            "challenge.py",
            f"get_solve_signature() is invalid: {exc}",
            "return {name: (ctypes type, 'in' | 'out' | 'inout')}",
        )
        return None

    example = _call(report, challenge.generate_example_test, "generate_example_test()")
    if _check_test_dict(report, "the example test", example, params):
        _run_reference(report, challenge, "the example test", example)

    functional = _call(report, challenge.generate_functional_test, "generate_functional_test()")
    if not isinstance(functional, list) or len(functional) not in FUNCTIONAL_TEST_COUNT:
        count = len(functional) if isinstance(functional, list) else type(functional).__name__
        report.add(
            "challenge.py",
            f"generate_functional_test() returned {count} tests",
            "return a list of 7 to 10 tests covering the edge cases",
        )
        functional = functional if isinstance(functional, list) else []
    names = functional_test_names(challenge, len(functional))
    if not hasattr(challenge, "get_functional_test_names") or len(set(names)) != len(names):
        report.add(
            "challenge.py",
            "functional tests have no unique names",
            "add get_functional_test_names() returning one unique name per test",
        )
    for name, test in zip(names, functional):
        label = f"functional test {name!r}"
        if _check_test_dict(report, label, test, params):
            _run_reference(report, challenge, label, test)

    perf_spec = _call(report, meta.generate_performance_test, "generate_performance_test()")
    perf = materialize_test(perf_spec, "meta", seed=0) if isinstance(perf_spec, dict) else perf_spec
    if _check_test_dict(report, "the performance test", perf, params):
        _run_reference(report, meta, "the performance test", perf)
        total = sum(v.nbytes for v in perf.values() if isinstance(v, torch.Tensor))
        if total * PERFORMANCE_COPIES > GPU_MEMORY_BUDGET_BYTES:
            report.add(
                "challenge.py",
                f"performance inputs take {total / 1e9:.2f} GB; {PERFORMANCE_COPIES} copies "
                f"exceed {GPU_MEMORY_BUDGET_BYTES / 1e9:.0f} GB",
                "shrink the performance test",
            )
    return challenge, params, example, perf_spec


def _check_html(report: _Report, folder: Path, challenge, params, example, perf_spec):
    page = (folder / "challenge.html").read_text()
    for heading in ("Implementation Requirements", "Example", "Constraints"):
        if _section(page, heading) is None:
            report.add(
                "challenge.html",
                f"no <h2>{heading}</h2> section",
                f"add an <h2>{heading}</h2> section",
            )
    example_html = _section(page, "Example")
    if example_html is not None and isinstance(example, dict):
        solved = dict(example)
        for p in params:
            if p.is_output:
                solved[p.name] = example[p.name].clone()
        try:
            challenge.reference_impl(**solved)
            _check_html_example(report, example_html, solved, params)
        except Exception:
            pass  # already reported by the challenge.py checks
    constraints = _section(page, "Constraints")
    if constraints is not None and isinstance(perf_spec, dict):
        items = re.findall(r"<li>(.*?)</li>", constraints, re.S)
        last = " ".join(items[-1].split()) if items else ""
        expected = performance_bullet(perf_spec)
        if last != expected:
            report.add(
                "challenge.html",
                f"the last Constraints bullet is {last!r}",
                f"make it exactly: <li>{expected}</li>",
            )


def _comment_blocks(path: Path) -> int:
    """Number of comment blocks (runs of comment lines) in a starter file."""
    text = path.read_text()
    if path.suffix == ".py":
        lines = [
            tok.start[0]
            for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.COMMENT
        ]
    else:
        marker = "//" if path.suffix == ".cu" else "#"
        lines = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
        lines += [i for i, line in enumerate(text.splitlines(), 1) if "/*" in line]
    lines = sorted(set(lines))
    return sum(1 for i, n in enumerate(lines) if i == 0 or n != lines[i - 1] + 1)


def _check_starters(report: _Report, folder: Path, params: Optional[List[Param]]):
    for name in STARTER_FILES:
        path = folder / "starter" / name
        rel = f"starter/{name}"
        if not path.is_file():
            report.add(rel, "missing", "run scripts/new_challenge.py for a template of all six")
            continue
        blocks = _comment_blocks(path)
        if blocks != 1:
            report.add(
                rel,
                f"has {blocks} comments; a starter has exactly one",
                "keep only the comment that says which parameters are on the device",
            )
        if params is None:
            continue
        want = [p.name for p in params if not (name.endswith(".jax.py") and p.is_output)]
        got = declared_parameters(path)
        if got != want:
            report.add(
                rel,
                f"solve's parameters are {got}, the signature gives {want}",
                "copy the parameter list from get_solve_signature()",
            )


def check_challenge(folder: Path) -> List[Finding]:
    """All findings for one challenge folder; an empty list means it passes."""
    folder = Path(folder)
    report = _Report(folder)
    if not FOLDER_PATTERN.match(folder.name) or folder.parent.name not in DIFFICULTIES:
        report.add(
            "",
            "folder is not challenges/<easy|medium|hard>/<number>_<name>",
            "move it; scripts/new_challenge.py picks the next free number",
        )
    for name in ("challenge.py", "challenge.html"):
        if not (folder / name).is_file():
            report.add(name, "missing", "run scripts/new_challenge.py for a template")
    params = None
    if (folder / "challenge.py").is_file():
        loaded = _check_challenge_py(report, folder)
        if loaded is not None:
            challenge, params, example, perf_spec = loaded
            if (folder / "challenge.html").is_file():
                _check_html(report, folder, challenge, params, example, perf_spec)
    _check_starters(report, folder, params)
    return report.findings
