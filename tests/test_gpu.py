"""The judge on an NVIDIA GPU: every solution passes, every GPU-only fixture gets its verdict.

Marked ``gpu`` and skipped where PyTorch sees no CUDA device. The broken Python submissions
run on the GPU too, from tests/test_judge.py's device parameter.
"""

import pytest
from conftest import requires_cuda
from test_judge import FIXTURES, SOLUTIONS, judge

from judge.languages import LANGUAGES, detect_language

pytestmark = [pytest.mark.gpu, requires_cuda]

SOLUTION_FILES = sorted(str(p.relative_to(SOLUTIONS)) for p in SOLUTIONS.glob("*/*.*"))


@pytest.mark.parametrize("solution", SOLUTION_FILES)
def test_solution_passes_submit_on_the_gpu(solution):
    missing = LANGUAGES[detect_language(SOLUTIONS / solution)].missing_toolchain()
    if missing:
        pytest.skip(missing)
    code, report, output = judge(
        solution[:2],
        "--device",
        "cuda",
        "--action",
        "submit",
        "--solution",
        SOLUTIONS / solution,
        "--budget",
        "2",
    )
    assert code == 0, output
    assert all(t["verdict"] == "PASS" for t in report["tests"])
    perf = report["performance"]
    assert perf["verdict"] == "PASS", output
    assert perf["timing"]["runs"] >= 10 and perf["roofline"]["achieved_gbps"] > 0
    assert not perf["roofline"]["suspicious"]


@pytest.mark.parametrize(
    "fixture, verdict",
    [
        ("out_of_bounds.cu", "OUT-OF-BOUNDS WRITE"),
        ("illegal_address.cu", "CUDA ERROR"),
        ("hangs.cu", "TIMEOUT"),
    ],
)
def test_broken_cuda_submission_gets_its_verdict(fixture, verdict):
    code, report, output = judge(
        "96", "--device", "cuda", "--solution", FIXTURES / fixture, "--timeout", "10"
    )
    assert code == 1, output
    assert report["tests"][0]["verdict"] == verdict, output


def test_work_left_on_another_stream_is_flagged():
    code, report, output = judge(
        "96",
        "--device",
        "cuda",
        "--action",
        "bench",
        "--solution",
        FIXTURES / "other_stream.cu",
        "--budget",
        "2",
    )
    assert code == 1, output
    assert report["performance"]["verdict"] == "WORK ESCAPED TIMING", output


def test_a_crashed_worker_is_replaced_for_the_next_test():
    code, report, output = judge(
        "96",
        "--device",
        "cuda",
        "--action",
        "submit",
        "--solution",
        FIXTURES / "illegal_address.cu",
        "--timeout",
        "10",
        "--budget",
        "1",
    )
    assert code == 1
    assert all(t["verdict"] == "CUDA ERROR" for t in report["tests"]), output


@pytest.mark.skipif(
    LANGUAGES["mojo"].missing_toolchain() is not None, reason="Mojo 0.26.2.0 is not installed"
)
def test_a_raising_mojo_solve_reports_its_message():
    code, report, output = judge("96", "--device", "cuda", "--solution", FIXTURES / "raises.mojo")
    assert code == 1 and report["tests"][0]["verdict"] == "RUNTIME ERROR", output
    assert "solve raised: this kernel is not written yet" in report["tests"][0]["detail"]
