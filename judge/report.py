"""The verdict table, the performance block and the JSON report."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy
from rich.console import Console
from rich.table import Table
from rich.text import Text

from judge.session import PerformanceResult, TestResult

STYLE = {"PASS": "bold green", "SKIPPED": "yellow"}


@dataclass
class Report:
    """Everything one ``run_challenge.py`` invocation found."""

    challenge: str
    language: str
    solution: str
    device: str
    action: str
    seed: int
    notes: List[str] = field(default_factory=list)
    sandbox: Optional[str] = None  # what confined the worker (judge.sandbox.confine)
    build_error: Optional[str] = None
    tests: List[TestResult] = field(default_factory=list)
    performance: Optional[PerformanceResult] = None

    @property
    def counts(self):
        """(passed, failed); a skipped performance test counts as neither."""
        verdicts = [t.verdict for t in self.tests]
        if self.performance is not None:
            verdicts.append(self.performance.verdict)
        passed = sum(v.passed for v in verdicts)
        failed = sum(not v.passed and v.value != "SKIPPED" for v in verdicts)
        passed += self.action == "build" and not self.build_error  # --action build: built
        return passed, failed + (1 if self.build_error else 0)

    def to_dict(self) -> dict:
        passed, failed = self.counts
        return {
            "challenge": self.challenge,
            "language": self.language,
            "solution": self.solution,
            "device": self.device,
            "action": self.action,
            "seed": self.seed,
            "notes": self.notes,
            "sandbox": self.sandbox,
            "build_error": self.build_error,
            "tests": [t.to_dict() for t in self.tests],
            "performance": self.performance.to_dict() if self.performance else None,
            "passed": passed,
            "failed": failed,
        }

    def write_json(self, path: Path):
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}"


def _verdict_text(value: str) -> Text:
    return Text(value, style=STYLE.get(value, "bold red"))


def render(report: Report, console: Console):
    """Print the header, one table row per test, the performance block and the final line."""
    console.print(
        f"[bold]{report.challenge}[/bold]  language={report.language}  device={report.device}  "
        f"action={report.action}  seed={report.seed} (replay with --seed {report.seed})"
    )
    console.print(f"solution: {report.solution}")
    if report.sandbox is not None:
        console.print(f"sandbox: {report.sandbox}", markup=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if report.build_error:
        console.print(_verdict_text("BUILD ERROR"))
        console.print(report.build_error, markup=False, highlight=False)
    elif report.action == "build":
        console.print(Text("BUILD OK", style=STYLE["PASS"]), "solve matches the signature")

    if report.tests:
        table = Table(show_lines=False)
        table.add_column("Test", no_wrap=True)
        table.add_column("Result", no_wrap=True)
        for column in (
            "Max abs err",
            "Max rel err",
            "Mismatches",
            "First mismatch (expected vs actual)",
        ):
            table.add_column(column)
        for test in report.tests:
            worst = max(test.comparisons, key=lambda c: c.mismatches, default=None)
            first = "-"
            if worst is not None and worst.first_mismatch is not None:
                first = (
                    f"{worst.name}{worst.first_mismatch}: {worst.expected_value:.6g} vs "
                    f"{worst.actual_value:.6g}"
                )
            table.add_row(
                test.name,
                _verdict_text(test.verdict.value),
                _fmt(worst.max_abs_error if worst else None),
                _fmt(worst.max_rel_error if worst else None),
                "-" if worst is None else f"{sum(c.mismatches for c in test.comparisons)}",
                first,
            )
        console.print(table)
        for test in report.tests:
            if test.detail and not test.verdict.passed:
                console.print(f"[red]{test.name}[/red]: ", end="")
                console.print(test.detail, markup=False, highlight=False)
            if test.diagnosis and not test.verdict.passed:
                console.print(f"  likely cause: {test.diagnosis}", markup=False, highlight=False)
        for test in report.tests:
            if test.expected is not None:
                _render_values(test, console)

    if report.performance is not None:
        _render_performance(report.performance, console)
    passed, failed = report.counts
    console.print(f"{passed} passed, {failed} failed", highlight=False)


def _render_values(test: TestResult, console: Console):
    console.print("inputs:", ", ".join(f"{k}={v}" for k, v in test.sizes.items()), markup=False)
    for name in test.expected:
        for label, values in (("expected", test.expected), ("actual", test.actual)):
            text = numpy.array2string(
                numpy.asarray(values[name]), precision=4, suppress_small=True, max_line_width=140
            )
            console.print(f"{label} {name}:\n{text}", markup=False, highlight=False)


def _render_performance(perf: PerformanceResult, console: Console):
    console.print("[bold]Performance[/bold]", _verdict_text(perf.verdict.value))
    sizes = ", ".join(f"{k}={v}" for k, v in perf.sizes.items() if not isinstance(v, str))
    if sizes:
        console.print(f"  sizes: {sizes}", highlight=False)
    if perf.detail:
        console.print("  ", perf.detail, markup=False, highlight=False)
    t = perf.timing
    if t is None:
        return
    console.print(
        f"  median {t.median_ms * 1e3:.1f} us   mean {t.mean_ms * 1e3:.1f} +- "
        f"{t.std_ms * 1e3:.1f} us   min {t.min_ms * 1e3:.1f} us   runs {t.runs}   ({t.method})",
        highlight=False,
    )
    r = perf.roofline
    if r is not None:
        console.print(
            f"  {r.bytes_moved / 1e6:.1f} MB moved: {r.achieved_gbps:.0f} GB/s = "
            f"{r.percent_of_streaming_read:.1f}% of the measured streaming read "
            f"({r.streaming_read_gbps:.0f} GB/s{', ' + r.floor_kernel if r.floor_kernel else ''})"
            + (
                f", {r.percent_of_hbm_peak:.1f}% of the HBM peak ({r.hbm_peak_gbps:.0f} GB/s)"
                if r.hbm_peak_gbps
                else ""
            ),
            highlight=False,
        )
    if perf.reference_timing is not None:
        console.print(
            f"  PyTorch reference: median {perf.reference_timing.median_ms * 1e3:.1f} us; "
            f"speedup {perf.speedup_over_reference:.2f}x",
            highlight=False,
        )
