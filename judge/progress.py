"""Live progress on a terminal: a batch's done / total, verdict counts and ETA, and the timing
phase of a single run. Both stay off when stdout is not a terminal, so what a pipe or a test
reads is the report alone."""

import contextlib
import time
from collections import Counter
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _counts_text(counts: Counter) -> str:
    parts = []
    for verdict, count in sorted(counts.items(), key=lambda kv: (kv[0] != "PASS", kv[0])):
        style = "green" if verdict == "PASS" else "yellow" if verdict == "CACHED" else "red"
        parts.append(f"[{style}]{verdict} {count}[/{style}]")
    return "  ".join(parts)


class BatchProgress:
    """A batch's progress bar (done / total, verdict counts, elapsed, ETA) on a terminal;
    elsewhere only the counts are kept.

    Args:
        console: where the bar and the per-submission lines go.
        total: submissions in the batch.
        enabled: show the live bar (pass ``console.is_terminal``).
    """

    def __init__(self, console: Console, total: int, enabled: bool):
        self.console = console
        self.counts: Counter = Counter()
        self.done = 0
        self.total = total
        self.progress = None
        if enabled:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]batch[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.progress.add_task("batch", total=total, counts="")

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def advance(self, verdict: str, line: str):
        """Count one finished submission under ``verdict`` and print its ``line`` (above the
        bar on a terminal)."""
        self.done += 1
        self.counts[verdict] += 1
        target = self.progress.console if self.progress is not None else self.console
        target.print(f"[{self.done}/{self.total}] {line}", markup=False, highlight=False)
        if self.progress is not None:
            self.progress.update(self.task, advance=1, counts=_counts_text(self.counts))


@contextlib.contextmanager
def timing_progress(console: Console, budget_s: float) -> Iterator[Optional[Callable[[int], None]]]:
    """A callback for ``Session.run_performance``'s ``on_sample`` that shows the samples
    taken and the seconds spent against ``budget_s``, or None when stdout is not a terminal.
    The bar appears with the first timed sample and is gone when the block ends."""
    if not console.is_terminal:
        yield None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("timing: {task.fields[samples]} samples"),
        BarColumn(),
        TextColumn("{task.completed:.1f} / {task.total:g} s budget"),
        console=console,
        transient=True,
    )
    state = {"task": None, "started": 0.0}

    def on_sample(count: int):
        if state["task"] is None:
            progress.start()
            state["started"] = time.perf_counter()
            state["task"] = progress.add_task("timing", total=budget_s, samples=0)
        elapsed = min(budget_s, time.perf_counter() - state["started"])
        progress.update(state["task"], completed=elapsed, samples=count)

    try:
        yield on_sample
    finally:
        if state["task"] is not None:
            progress.stop()
