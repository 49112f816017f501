"""The judge on an NVIDIA GPU: every solution passes, every GPU-only fixture gets its verdict.

Marked ``gpu`` and skipped where PyTorch sees no CUDA device. The broken Python submissions
run on the GPU too, from tests/test_judge.py's device parameter.
"""

import pytest
from conftest import requires_cuda
from test_judge import FIXTURES, SOLUTIONS, judge

from judge.challenges import find_challenge
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


def bench(solution):
    code, report, output = judge(
        "96", "--device", "cuda", "--action", "bench", "--solution", solution, "--budget", "2"
    )
    assert code == 0, output
    return report["performance"]["timing"]


def test_work_left_on_another_stream_is_timed():
    """The same kernel on a stream of its own, left running when solve returns: CUDA events
    on the current stream miss it, the GPU span does not."""
    honest = bench(SOLUTIONS / "96_int8_kv_cache_attention" / "solution.cu")
    escaping = bench(FIXTURES / "other_stream.cu")
    assert honest["method"] == escaping["method"] == "GPU span (CUPTI)"
    assert 0.8 < escaping["median_ms"] / honest["median_ms"] < 1.25
    assert escaping["event_median_ms"] < 0.5 * escaping["median_ms"]


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


@pytest.mark.parametrize(
    "fixture, code, verdict, detail",
    [
        ("wrong_result.cute.py", 1, "WRONG ANSWER", "elements outside"),
        ("compile_error.cute.py", 3, "BUILD ERROR", "compile_error.cute.py:10"),
        ("wrong_result.mojo", 1, "WRONG ANSWER", "elements outside"),
        ("compile_error.mojo", 3, "BUILD ERROR", "compile_error.mojo:17:13"),
        ("wrong_parameters.jax.py", 3, "BUILD ERROR", "does not match"),
    ],
)
def test_broken_submission_gets_its_verdict_on_the_gpu(fixture, code, verdict, detail):
    missing = LANGUAGES[detect_language(FIXTURES / fixture)].missing_toolchain()
    if missing:
        pytest.skip(missing)
    exit_code, report, output = judge("96", "--device", "cuda", "--solution", FIXTURES / fixture)
    assert exit_code == code, output
    if verdict == "BUILD ERROR" and report["build_error"]:  # found before any test ran
        assert detail in report["build_error"], output
    else:
        assert report["tests"][0]["verdict"] == verdict, output
        assert detail in report["tests"][0]["detail"], output


@pytest.mark.parametrize("number", ["95", "96"])
@pytest.mark.parametrize("language", list(LANGUAGES))
def test_starters_build_and_run_without_solving(number, language):
    adapter = LANGUAGES[language]
    if adapter.missing_toolchain():
        pytest.skip(adapter.missing_toolchain())
    starter = find_challenge(number).starter_dir / f"starter{adapter.suffix}"
    code, report, output = judge(number, "--device", "cuda", "--solution", starter)
    assert code == 1, output
    expected = "RUNTIME ERROR" if language == "jax" else "WRONG ANSWER"  # JAX returns None
    assert report["tests"][0]["verdict"] == expected, output
