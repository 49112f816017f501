"""The run history: best time per solution, regressions (slower than the best, or failing after
a pass), the environment key a batch resumes by, and the history command's table."""

import json
from pathlib import Path

import numpy
import pytest
import torch
from rich.console import Console

from judge.history import (
    Environment,
    History,
    Run,
    default_db_path,
    environment,
    history_main,
    summarize,
)
from judge.report import Report
from judge.session import PerformanceResult
from judge.session import TestResult as CorrectnessResult
from judge.timing import Sample, Timing
from judge.verdicts import Verdict

CHALLENGE = "95_decode_phase_attention"


def report(samples_us=None, failing: str = None, seed: int = 1) -> dict:
    """A submit report: one functional test, and a performance test timed from ``samples_us``
    (GPU spans in us), or failed with the verdict ``failing``."""
    out = Report("95 Decode-Phase Attention", "cuda", "k.cu", "cuda", "submit", seed)
    out.tests.append(CorrectnessResult("functional_1", "functional", Verdict.PASS))
    if failing is not None:
        out.performance = PerformanceResult(Verdict(failing), "it broke")
    else:
        samples = [Sample(us / 1e3, us / 1e3 + 0.05, 0.0) for us in samples_us]
        out.performance = PerformanceResult(Verdict.PASS, timing=Timing.from_samples(samples))
    return out.to_dict()


def run(path, rep, when, torch_version="2.11.0", exit_code=None) -> Run:
    env = Environment("NVIDIA H200", {"torch": torch_version}, f"NVIDIA H200|{torch_version}")
    return Run(
        challenge=CHALLENGE,
        language="cuda",
        action="submit",
        solution_path=path,
        solution_hash=f"hash-of-{path}-{when}",
        device="cuda",
        environment=env,
        exit_code=exit_code if exit_code is not None else (1 if rep["failed"] else 0),
        report=rep,
        finished_at=1_700_000_000.0 + when,
    )


# samples (us) of each timed run, by solution and in order; None: a failed performance test
TIMES = {
    "a.cu": [[30.0, 31.0, 29.5], [25.0, 24.0, 26.0, 25.4], None, [26.5, 27.0, 26.0]],
    "b.cu": [[20.0, 20.5, 19.5], [24.0, 24.5, 23.8]],
}


@pytest.fixture
def filled(tmp_path) -> Path:
    """A history: a.cu gets faster, then fails once, then is close to its best; b.cu gets
    20% slower with a newer torch; c.cu passes, then raises."""
    path = tmp_path / "history.sqlite"
    with History(path) as history:
        when = 0
        for name, runs in TIMES.items():
            for index, samples in enumerate(runs):
                when += 1
                rep = report(samples) if samples else report(failing="WRONG ANSWER")
                version = "2.11.0" if name == "b.cu" and index == 1 else "2.10.0"
                history.add(run(name, rep, when, version))
        history.add(run("c.cu", report([50.0, 51.0]), when + 1))
        history.add(run("c.cu", report(failing="RUNTIME ERROR"), when + 2))
    return path


def test_best_time_per_solution_and_regressions(filled):
    with History(filled) as history:
        summaries = {s.solution_path: s for s in summarize(history.runs(CHALLENGE), 10.0)}
    for name, runs in TIMES.items():
        medians = [numpy.median(s) for s in runs if s is not None]
        assert summaries[name].best.median_ms * 1e3 == pytest.approx(min(medians))
        assert len(summaries[name].runs) == len(runs)
    a, b, c = summaries["a.cu"], summaries["b.cu"], summaries["c.cu"]
    assert a.flags == []  # 26.5 us is within 10% of the best 25.2 us; the failure was fixed
    assert a.latest_timed.median_ms * 1e3 == pytest.approx(26.5)
    (slower,) = b.flags
    expected = 100 * (numpy.median(TIMES["b.cu"][1]) / numpy.median(TIMES["b.cu"][0]) - 1)
    assert slower.startswith(f"slower +{expected:.0f}%") and "torch 2.10.0->2.11.0" in slower
    (failing,) = c.flags
    assert failing.startswith("now RUNTIME ERROR")
    with History(filled) as history:
        loose = {s.solution_path: s for s in summarize(history.runs(), 25.0)}
    assert loose["b.cu"].flags == [], "a 19% slowdown is under a 25% threshold"


def test_history_command_shows_the_best_run(filled):
    shown = Console(width=250, record=True)
    code = history_main(["95", "--db", str(filled)], shown)
    text = shown.export_text()
    assert code == 1, "a flagged regression"
    best_a = numpy.median(TIMES["a.cu"][1])
    row_a = next(line for line in text.splitlines() if "a.cu" in line)
    assert f"{best_a:.1f}" in row_a and "NVIDIA H200" in row_a
    assert "slower +" in text and "now RUNTIME ERROR" in text
    assert "3 solutions, 2 with regressions" in text
    empty = Console(width=250, record=True)
    assert history_main(["96", "--db", str(filled)], empty) == 0
    assert "0 solutions" in empty.export_text()


def test_known_keys_and_latest_find_a_submission_by_environment(tmp_path):
    with History(tmp_path / "h.sqlite") as history:
        first = run("a.cu", report([10.0, 11.0]), 1)
        history.add(first)
        later = run("a.cu", report([12.0, 12.0]), 2)
        later.solution_hash = first.solution_hash
        history.add(later)
        key = (first.solution_hash, CHALLENGE, "submit", "cuda")
        assert history.known_keys(*key) == {"NVIDIA H200|2.11.0"}
        assert history.known_keys("another-hash", CHALLENGE, "submit", "cuda") == set()
        assert history.known_keys(first.solution_hash, CHALLENGE, "run", "cuda") == set()
        found = history.latest(*key, "NVIDIA H200|2.11.0")
        assert found.id == later.id
        assert found.report["performance"]["timing"]["median_ms"] == pytest.approx(0.012)
        assert json.loads(json.dumps(found.report)) == later.report


def test_environment_key_names_the_device_and_the_languages_toolchain():
    pytorch, triton = environment("cpu", "pytorch"), environment("cpu", "triton")
    assert pytorch.device_name == "cpu"
    assert json.loads(pytorch.key.split("|", 1)[1]) == {"torch": torch.__version__}
    assert "triton" in json.loads(triton.key.split("|", 1)[1])
    assert pytorch.versions["torch"] == torch.__version__


def test_default_file_is_under_the_users_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "decode-attention" / "history.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    expected = Path.home() / ".local" / "share" / "decode-attention" / "history.sqlite"
    assert default_db_path() == expected
