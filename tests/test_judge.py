"""The judge end to end on the CPU: solutions pass, broken submissions get their verdicts."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import requires_cuda, requires_nvcc

from judge.challenges import REPO_ROOT, find_challenge, load_challenge
from judge.compare import compare_output
from judge.languages import LANGUAGES, detect_language
from judge.languages.base import BuildError, import_solve
from judge.languages.cuda import CudaLanguage
from judge.languages.cute import compile_solve, layout_key
from judge.signature import parse_signature
from judge.timing import (
    EVENT_WINDOW,
    GPU_SPANS,
    Roofline,
    Sample,
    Timing,
    escaped_work,
    keep_sampling,
)

FIXTURES = REPO_ROOT / "tests" / "fixtures"
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, requires_cuda])]
SOLUTIONS = REPO_ROOT / "solutions"


def judge(*args, timeout=600):
    """Run run_challenge.py; return (exit code, JSON report or None, printed output)."""
    report = Path(__import__("tempfile").mkdtemp()) / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "run_challenge.py"),
            *map(str, args),
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    data = json.loads(report.read_text()) if report.is_file() else None
    return result.returncode, data, result.stdout + result.stderr


# fixture, action, the verdict it must get, the test that must get it
PYTHON_FIXTURES = [
    ("wrong_result.pytorch.py", "run", "WRONG ANSWER", "example"),
    ("no_write.pytorch.py", "run", "WRONG ANSWER", "example"),
    ("partial_write.pytorch.py", "run", "WRONG ANSWER", "example"),
    ("nan_output.pytorch.py", "submit", "WRONG ANSWER", "large_scores_need_max_subtraction"),
    ("writes_input.pytorch.py", "run", "INPUT MODIFIED", "example"),
    ("raises.pytorch.py", "run", "RUNTIME ERROR", "example"),
    ("calls_exit.pytorch.py", "run", "EXITED", "example"),
    ("exits_process.pytorch.py", "run", "EXITED", "example"),
    ("hangs.pytorch.py", "run", "TIMEOUT", "example"),
    ("allocates_without_end.pytorch.py", "run", "OUT OF MEMORY", "example"),
    ("cheat_patch_judge.pytorch.py", "run", "WRONG ANSWER", "example"),
    ("wrong_result.jax.py", "run", "WRONG ANSWER", "example"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fixture, action, verdict, test_name", PYTHON_FIXTURES)
def test_broken_python_submission_gets_its_verdict(device, fixture, action, verdict, test_name):
    code, report, output = judge(
        "96",
        "--device",
        device,
        "--action",
        action,
        "--solution",
        FIXTURES / fixture,
        "--timeout",
        "20",
        "--budget",
        "1",
    )
    assert code == 1, output
    verdicts = {t["name"]: t["verdict"] for t in report["tests"]}
    assert verdicts[test_name] == verdict, output
    failed = [name for name, v in verdicts.items() if v != "PASS"]
    assert failed == [test_name], "only the named test may fail"
    assert output.rstrip().splitlines()[-1].endswith(" passed, 1 failed")


def test_nan_fixture_reports_non_finite_values():
    _, report, _ = judge(
        "96",
        "--device",
        "cpu",
        "--action",
        "submit",
        "--solution",
        FIXTURES / "nan_output.pytorch.py",
    )
    (failed,) = [t for t in report["tests"] if t["verdict"] != "PASS"]
    assert "NaN/Inf" in failed["detail"]
    assert failed["comparisons"][0]["first_mismatch"] is not None


@pytest.mark.parametrize(
    "fixture",
    ["missing_solve.pytorch.py", "wrong_parameters.pytorch.py", "wrong_parameters.jax.py"],
)
def test_python_interface_errors_are_build_errors(fixture):
    code, report, output = judge("96", "--device", "cpu", "--solution", FIXTURES / fixture)
    assert code == 3 and report["build_error"], output
    assert output.rstrip().splitlines()[-1] == "0 passed, 1 failed"


# every solution in a language that runs on the CPU, of every challenge
CPU_SOLUTIONS = sorted(
    str(path.relative_to(SOLUTIONS))
    for suffix in (".pytorch.py", ".triton.py", ".jax.py")
    for path in SOLUTIONS.glob(f"*/*{suffix}")
)


@pytest.mark.parametrize("solution", CPU_SOLUTIONS)
def test_cpu_solutions_pass_submit(solution):
    number = solution[:2]
    code, report, output = judge(
        number, "--device", "cpu", "--action", "submit", "--solution", SOLUTIONS / solution
    )
    assert code == 0, output
    assert len(report["tests"]) == 10 and all(t["verdict"] == "PASS" for t in report["tests"])
    assert report["performance"]["verdict"] == "SKIPPED"
    assert "timing needs an NVIDIA GPU" in report["performance"]["detail"]


def test_run_shows_sizes_expected_and_actual_and_seed_replays():
    solution = SOLUTIONS / "96_int8_kv_cache_attention" / "solution.pytorch.py"
    code, report, output = judge(
        "int8_kv_cache_attention", "--device", "cpu", "--solution", solution, "--seed", "1234"
    )
    assert code == 0 and report["seed"] == 1234 and "--seed 1234" in output
    (example,) = report["tests"]
    assert example["expected"] and example["actual"] and "K_int8" in example["sizes"]
    assert "expected output:" in output and "actual output:" in output
    _, again, _ = judge(
        "96", "--device", "cpu", "--action", "submit", "--solution", solution, "--seed", "77"
    )
    _, replay, _ = judge(
        "96", "--device", "cpu", "--action", "submit", "--solution", solution, "--seed", "77"
    )
    errors = [[c["max_abs_error"] for c in t["comparisons"]] for t in again["tests"]]
    assert errors == [[c["max_abs_error"] for c in t["comparisons"]] for t in replay["tests"]]


def test_bad_usage_is_exit_code_2_with_a_message():
    code, _, output = judge("does_not_exist")
    assert code == 2 and "known challenges: 95 (decode_phase_attention)" in output
    code, _, output = judge("95", "--device", "cpu", "--language", "cuda")
    assert code == 2 and "no solution at" in output and "starter/starter.cu" in output
    code, _, output = judge(
        "95",
        "--device",
        "cpu",
        "--solution",
        SOLUTIONS / "95_decode_phase_attention" / "solution.cu",
    )
    assert code == 2 and "cuda needs an NVIDIA GPU" in output
    listing = subprocess.run(
        [sys.executable, "run_challenge.py", "--list"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert "95  decode_phase_attention" in listing and "96  int8_kv_cache_attention" in listing


LEGACY_CHALLENGE = """
import ctypes
import torch
from core.challenge_base import ChallengeBase, OutTensor, RandTensor


class Challenge(ChallengeBase):
    def __init__(self):
        super().__init__(name="Vector Scale", atol=1e-5, rtol=1e-5, num_gpus=1,
                         access_tier="free")

    def reference_impl(self, x, y, N):
        y.copy_(x * 3.0)

    def get_solve_signature(self):
        return {"x": (ctypes.POINTER(ctypes.c_float), "in"),
                "y": (ctypes.POINTER(ctypes.c_float), "out"),
                "N": (ctypes.c_int, "in")}

    def generate_example_test(self):
        return {"x": RandTensor((8,), -1.0, 1.0), "y": OutTensor((8,)), "N": 8}

    def generate_functional_test(self):
        return [{"x": RandTensor((n,), -1.0, 1.0), "y": OutTensor((n,)), "N": n}
                for n in (1, 1000)]

    def generate_performance_test(self):
        return {"x": RandTensor((1 << 20,)), "y": OutTensor((1 << 20,)), "N": 1 << 20}
"""


def test_older_public_challenge_with_declarative_specs_runs_unchanged(tmp_path):
    folder = tmp_path / "challenges" / "easy" / "1_vector_scale"
    folder.mkdir(parents=True)
    (folder / "challenge.py").write_text(LEGACY_CHALLENGE)
    solution = tmp_path / "scale.py"
    solution.write_text("import torch\n\n\ndef solve(x, y, N):\n    torch.mul(x, 3.0, out=y)\n")
    code, report, output = judge(
        folder, "--device", "cpu", "--action", "submit", "--solution", solution
    )
    assert code == 0, output
    assert [t["name"] for t in report["tests"]] == ["functional_1", "functional_2"]
    assert report["challenge"] == "1 Vector Scale"


NAN_INPUT_CHALLENGE = """
import ctypes
import torch
from core.challenge_base import ChallengeBase


class Challenge(ChallengeBase):
    def __init__(self):
        super().__init__(name="Scale Without NaN", atol=1e-5, rtol=1e-5, num_gpus=1,
                         access_tier="free")

    def reference_impl(self, x, y, N):
        y.copy_(torch.nan_to_num(x, nan=0.0) * 3.0)

    def get_solve_signature(self):
        return {"x": (ctypes.POINTER(ctypes.c_float), "in"),
                "y": (ctypes.POINTER(ctypes.c_float), "out"),
                "N": (ctypes.c_int, "in")}

    def case(self):
        x = torch.tensor([0.0, float("nan"), -2.0, float("nan")], device=self.device)
        return {"x": x, "y": torch.empty(4, device=self.device), "N": 4}

    def generate_example_test(self):
        return self.case()

    def generate_functional_test(self):
        return [self.case()]

    def generate_performance_test(self):
        return self.case()
"""


@pytest.mark.parametrize(
    "body, verdict",
    [
        ("torch.mul(torch.nan_to_num(x, nan=0.0), 3.0, out=y)", "PASS"),
        # the same values, one bit changed: 0.0 overwritten with -0.0
        ("torch.mul(torch.nan_to_num(x, nan=0.0), 3.0, out=y)\n    x[0] = -0.0", "INPUT MODIFIED"),
    ],
)
def test_inputs_are_compared_bit_by_bit(tmp_path, body, verdict):
    folder = tmp_path / "challenges" / "easy" / "2_scale_without_nan"
    folder.mkdir(parents=True)
    (folder / "challenge.py").write_text(NAN_INPUT_CHALLENGE)
    solution = tmp_path / "scale.py"
    solution.write_text(f"import torch\n\n\ndef solve(x, y, N):\n    {body}\n")
    code, report, output = judge(folder, "--device", "cpu", "--solution", solution)
    assert [t["verdict"] for t in report["tests"]] == [verdict], output
    assert code == (0 if verdict == "PASS" else 1)


class TestCudaBuildVerdicts:
    params = parse_signature(
        load_challenge(
            REPO_ROOT / "challenges/medium/96_int8_kv_cache_attention", "cpu"
        ).get_solve_signature()
    )

    def build(self, name, tmp_path):
        return CudaLanguage().build(FIXTURES / name, self.params, tmp_path)

    @requires_nvcc
    def test_compile_error_names_file_and_line(self, tmp_path):
        with pytest.raises(BuildError, match=r"compile_error\.cu\(8\): error"):
            self.build("compile_error.cu", tmp_path)

    @requires_nvcc
    def test_a_solve_nvcc_cannot_export_is_a_build_error(self, tmp_path):
        with pytest.raises(BuildError, match="defines no function `solve`"):
            self.build("solve_in_namespace.cu", tmp_path)

    def test_wrong_parameter_list_is_a_build_error(self, tmp_path):
        with pytest.raises(
            BuildError, match=r"7 parameters, the signature has 9(?s:.*)solve\(const float\* Q"
        ):
            self.build("wrong_parameters.cu", tmp_path)

    @requires_nvcc
    def test_gpu_fixtures_build(self, tmp_path):
        for name in ("out_of_bounds.cu", "other_stream.cu", "illegal_address.cu", "hangs.cu"):
            assert self.build(name, tmp_path).is_file()

    @requires_nvcc
    @pytest.mark.parametrize("source", sorted(SOLUTIONS.glob("*/*.cu")), ids=lambda p: p.name)
    def test_cuda_solutions_build(self, source, tmp_path):
        challenge = load_challenge(find_challenge(source.parent.name), "cpu")
        params = parse_signature(challenge.get_solve_signature())
        assert CudaLanguage().build(source, params, tmp_path).is_file()


class TestMojoBuild:
    """Builds with the pinned release (0.26.2.0) for sm_90 on a machine without a GPU; the
    libraries it makes ran on an H200 (see the GPU tests)."""

    language = LANGUAGES["mojo"]
    pytestmark = pytest.mark.skipif(
        LANGUAGES["mojo"].missing_toolchain() is not None,
        reason="Mojo 0.26.2.0 is not installed (pip install -e .[mojo])",
    )

    @pytest.mark.parametrize("source", sorted(SOLUTIONS.glob("*/*.mojo")), ids=lambda p: p.name)
    def test_mojo_solutions_build(self, source, tmp_path):
        challenge = load_challenge(find_challenge(source.parent.name), "cpu")
        params = parse_signature(challenge.get_solve_signature())
        library = self.language.build(source, params, tmp_path)
        assert (
            " T solve"
            in subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True).stdout
        )

    def test_the_wrong_result_fixture_builds(self, tmp_path):
        fixture = FIXTURES / "wrong_result.mojo"
        assert self.language.build(fixture, TestCudaBuildVerdicts.params, tmp_path).is_file()

    def test_compile_error_names_file_and_line(self, tmp_path):
        with pytest.raises(BuildError, match=r"compile_error\.mojo:17:13: error"):
            self.language.build(
                FIXTURES / "compile_error.mojo", TestCudaBuildVerdicts.params, tmp_path
            )

    def test_mojo_needs_a_gpu_to_run(self):
        code, _, output = judge(
            "96",
            "--device",
            "cpu",
            "--solution",
            SOLUTIONS / "96_int8_kv_cache_attention" / "solution.mojo",
        )
        assert code == 2 and "mojo needs an NVIDIA GPU" in output


class TestCompare:
    def test_within_tolerance_passes_and_reports_errors(self):
        expected = torch.tensor([1.0, 2.0, 3.0])
        result = compare_output("o", expected + 1e-5, expected, 1e-4, 1e-4)
        assert result.passed and result.mismatches == 0
        assert result.max_abs_error == pytest.approx(1e-5, rel=0.1)

    def test_first_mismatch_index_and_values(self):
        expected = torch.zeros(2, 3)
        actual = expected.clone()
        actual[1, 2] = 0.5
        result = compare_output("o", actual, expected, 1e-3, 1e-3)
        assert not result.passed and result.mismatches == 1
        assert result.first_mismatch == [1, 2] and result.actual_value == 0.5

    def test_nan_and_inf_fail_even_where_expected_is_inf_free(self):
        expected = torch.ones(4)
        actual = torch.tensor([1.0, float("nan"), float("inf"), 1.0])
        result = compare_output("o", actual, expected, 1.0, 1.0)
        assert not result.passed and result.mismatches == 2 and "NaN/Inf" in result.reason

    def test_all_zero_output_fails_when_expected_is_not_zero(self):
        expected = torch.full((16,), 1e-6)
        result = compare_output("o", torch.zeros(16), expected, 1e-4, 1e-4)
        assert not result.passed and "all zeros" in result.reason
        assert compare_output("o", torch.zeros(16), torch.zeros(16), 1e-4, 1e-4).passed

    def test_shape_change_fails(self):
        assert not compare_output("o", torch.zeros(3), torch.zeros(4), 1, 1).passed


class TestTimingLogic:
    def test_sampling_needs_ten_runs_then_stops_at_one_percent_sem(self):
        import time

        now = time.perf_counter()
        assert keep_sampling([1.0] * 9, now, 10.0)
        assert not keep_sampling([1.0] * 10, now, 10.0)
        noisy = [1.0, 2.0] * 5
        assert keep_sampling(noisy, now, 10.0)
        assert not keep_sampling(noisy, now - 11.0, 10.0), "the time budget ends sampling"

    def test_gpu_spans_when_every_sample_has_one_else_event_windows(self):
        spans = [Sample(0.020 + i * 1e-3, 0.090, 0.01) for i in range(5)]
        timing = Timing.from_samples(spans)
        assert timing.method == GPU_SPANS and timing.median_ms == pytest.approx(0.022)
        assert timing.event_median_ms == pytest.approx(0.090)
        mixed = Timing.from_samples(spans + [Sample(None, 0.080, 0.01)])
        assert mixed.method == EVENT_WINDOW and mixed.median_ms == pytest.approx(0.090)

    def test_work_outside_an_event_window_is_flagged(self):
        honest = Timing.from_samples([Sample(None, 0.170, 0.012)] * 10)
        cheat = Timing.from_samples([Sample(None, 0.005, 0.012 + 0.170)] * 10)
        assert escaped_work(honest, empty_tail_ms=0.010) is None
        assert "another stream" in escaped_work(cheat, empty_tail_ms=0.010)
        spanned = Timing.from_samples([Sample(0.170, 0.005, 0.012 + 0.170)] * 10)
        assert escaped_work(spanned, empty_tail_ms=0.010) is None, "spans see every stream"

    def test_roofline(self):
        roof = Roofline.of(bytes_moved=3_000_000_000, median_ms=1.0, stream_gbps=3000.0)
        assert roof.achieved_gbps == pytest.approx(3000.0)
        assert roof.percent_of_streaming_read == pytest.approx(100.0) and not roof.suspicious
        assert Roofline.of(3_000_000_000, 0.5, 3000.0).suspicious


@pytest.mark.parametrize(
    "name, text, language",
    [
        ("a.cu", "", "cuda"),
        ("a.triton.py", "", "triton"),
        ("k.py", "import torch\nimport triton.language as tl\n", "triton"),
        ("k.py", "import jax.numpy as jnp\n", "jax"),
        ("k.py", "import cutlass.cute as cute\n", "cute"),
        ("k.py", "import torch\n", "pytorch"),
        ("k.mojo", "", "mojo"),
        ("k.py", "print(1)\n", None),
    ],
)
def test_language_detection(tmp_path, name, text, language):
    path = tmp_path / name
    path.write_text(text)
    assert detect_language(path) == language


def test_jax_starter_returning_nothing_is_a_runtime_error():
    starter = REPO_ROOT / "challenges/medium/96_int8_kv_cache_attention/starter/starter.jax.py"
    code, report, output = judge("96", "--device", "cpu", "--solution", starter)
    assert code == 1 and report["tests"][0]["verdict"] == "RUNTIME ERROR", output
    assert "return the output as a jax.Array" in report["tests"][0]["detail"]


def test_starter_source_is_not_judged_as_correct(tmp_path):
    starter = REPO_ROOT / "challenges/medium/95_decode_phase_attention/starter/starter.pytorch.py"
    code, report, _ = judge("95", "--device", "cpu", "--solution", starter)
    assert code == 1 and report["tests"][0]["verdict"] == "WRONG ANSWER"


def test_fixture_docstrings_name_their_verdicts():
    for fixture, _, verdict, _ in PYTHON_FIXTURES:
        doc = (FIXTURES / fixture).read_text()
        assert verdict in doc, textwrap.shorten(f"{fixture} should say it gets {verdict}", 80)


def test_a_broken_challenge_is_an_internal_error_not_a_traceback(tmp_path):
    folder = tmp_path / "challenges" / "easy" / "2_broken_generator"
    folder.mkdir(parents=True)
    broken = LEGACY_CHALLENGE.replace(
        "    def generate_example_test(self):\n",
        "    def generate_example_test(self):\n        raise KeyError('oops')\n",
    )
    (folder / "challenge.py").write_text(broken)
    solution = tmp_path / "scale.py"
    solution.write_text("import torch\n\n\ndef solve(x, y, N):\n    torch.mul(x, 3.0, out=y)\n")
    code, _, output = judge(folder, "--device", "cpu", "--solution", solution)
    assert code == 4 and "internal error: KeyError('oops')" in output
    assert "Traceback" not in output


class TestCuteBuild:
    """cute.compile for Hopper on a machine without a GPU (conftest sets CUTE_DSL_ARCH); the
    compiled solutions run in the GPU tests."""

    pytestmark = pytest.mark.skipif(
        LANGUAGES["cute"].missing_toolchain() is not None,
        reason="the cute extra (nvidia-cutlass-dsl) is not installed",
    )

    @pytest.mark.parametrize("source", sorted(SOLUTIONS.glob("*/*.cute.py")), ids=lambda p: p.name)
    def test_cute_solutions_compile_for_every_functional_test(self, source):
        challenge = load_challenge(find_challenge(source.parent.name), "cpu")
        params = parse_signature(challenge.get_solve_signature())
        solve = import_solve(source)
        tests = [challenge.generate_example_test(), *challenge.generate_functional_test()]
        compiled = {layout_key(params, t): compile_solve(solve, params, t, source) for t in tests}
        assert len(compiled) > 1, "the tests should need several compiled shapes"
        assert all(map(callable, compiled.values()))

    @staticmethod
    def compile_fixture(name):
        """``compile_solve`` of a challenge-96 fixture for the example test's shapes."""
        source = FIXTURES / name
        example = load_challenge(
            REPO_ROOT / "challenges/medium/96_int8_kv_cache_attention", "cpu"
        ).generate_example_test()
        return compile_solve(import_solve(source), TestCudaBuildVerdicts.params, example, source)

    def test_compile_error_names_file_and_line(self):
        with pytest.raises(
            BuildError, match=r"compile_error\.cute\.py:10: MLIRError(?s:.*)coordinate"
        ):
            self.compile_fixture("compile_error.cute.py")

    def test_the_wrong_result_fixture_compiles(self):
        assert callable(self.compile_fixture("wrong_result.cute.py"))

    def test_cute_needs_a_gpu_to_run(self):
        solution = SOLUTIONS / "96_int8_kv_cache_attention" / "solution.cute.py"
        code, _, output = judge("96", "--device", "cpu", "--solution", solution)
        assert code == 2 and "cute needs an NVIDIA GPU" in output
