"""LeetGPU compatibility: the earlier CUDA form, signatures checked by the ABI (position and
type, not names), failure diagnoses, the submission's own frames in runtime errors, Triton's
block pointers on the CPU, challenges that need CUDA, and ``--action build``.

CPU tests build with nvcc (no GPU needed) and run Python fixtures in this process on small
tests; the GPU tests (marked ``gpu``) run the same fixtures through the judge on a GPU.
"""

import ast
import ctypes
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import requires_cuda, requires_nvcc
from core.challenge_base import materialize_test
from test_judge import FIXTURES, SOLUTIONS, judge

from judge.challenges import find_challenge, load_challenge
from judge.diagnose import diagnose_error, diagnose_outputs
from judge.frames import describe_exception
from judge.languages import LANGUAGES, detect_language
from judge.languages.base import BuildError, check_solve_declaration
from judge.languages.cuda import CudaLanguage
from judge.signature import parse_signature

# in-process runs: on the GPU where there is one, else on the CPU (Triton interpreted)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# fixture, what its note says, whether a trampoline exports a mangled C++ solve
LEGACY_CUDA = [
    ("legacy_solve_h.cu", "a C++ `solve` that takes C linkage from solve.h", False),
    ("legacy_no_include.cu", 'a C++ `solve` without extern "C", exported', True),
    ("legacy_dropped_const.cu", '`#include "solve.h"` (generated from the signature); a C++', True),
    ("clang_builtin_headers.cu", "clang's CUDA headers (an editor's include) have empty", False),
]


def challenge_of(number: str):
    """(challenge on the CPU, its parameters) for challenge ``number``."""
    challenge = load_challenge(find_challenge(number), "cpu")
    return challenge, parse_signature(challenge.get_solve_signature())


def exported(library: Path) -> set:
    listing = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True
    ).stdout
    return {line.split()[-1] for line in listing.splitlines() if line.strip()}


# -- the earlier CUDA form -------------------------------------------------------------------


@requires_nvcc
@pytest.mark.parametrize("fixture, note, bridged", LEGACY_CUDA)
def test_legacy_cuda_forms_build(fixture, note, bridged, tmp_path):
    """Each form builds on a machine without a GPU; the library exports the C symbol
    ``solve`` (beside the mangled C++ one where a trampoline bridges it), and a note names
    the form."""
    _, params = challenge_of("96")
    notes = []
    library = CudaLanguage().build(FIXTURES / fixture, params, tmp_path, notes)
    assert any(note in n for n in notes), notes
    if not fixture.startswith("clang"):
        assert any(n.startswith("legacy LeetGPU CUDA form: ") for n in notes)
    symbols = exported(library)
    assert "solve" in symbols
    assert any(s.startswith("_Z5solve") for s in symbols) == bridged


@requires_nvcc
@pytest.mark.parametrize("fixture", ["legacy_no_include.cu", "clang_builtin_headers.cu"])
def test_action_build_reports_the_legacy_form(fixture):
    code, report, output = judge("96", "--action", "build", "--solution", FIXTURES / fixture)
    assert code == 0 and report["build_error"] is None and report["tests"] == [], output
    assert any(n.startswith("built ") for n in report["notes"]), report["notes"]
    assert "BUILD OK" in output and output.rstrip().endswith("1 passed, 0 failed")
    assert ("LeetGPU CUDA form" in output) == fixture.startswith("legacy")


@requires_nvcc
def test_renamed_parameters_build_with_a_note(tmp_path):
    _, params = challenge_of("96")
    notes = []
    library = CudaLanguage().build(FIXTURES / "renamed_parameters.cu", params, tmp_path, notes)
    assert library.is_file()
    assert any("`O`" in n and "`output`" in n for n in notes)
    assert any("`D`" in n and "`head_dim`" in n for n in notes)


def test_a_type_mismatch_shows_both_declarations(tmp_path):
    _, params = challenge_of("96")
    with pytest.raises(BuildError) as error:
        CudaLanguage().build(FIXTURES / "wrong_pointer_type.cu", params, tmp_path)
    text = str(error.value)
    assert "parameter 2 is `const float* K_int8`, expected a pointer to int8_t" in text
    assert 'expected: extern "C" void solve(const float* Q, const int8_t* K_int8' in text
    assert 'found:    extern "C" void solve(const float* Q, const float* K_int8' in text


def test_a_count_mismatch_is_a_build_error(tmp_path):
    _, params = challenge_of("96")
    with pytest.raises(BuildError, match="7 parameters, the signature has 9"):
        CudaLanguage().build(FIXTURES / "wrong_parameters.cu", params, tmp_path)


# -- the ABI rule, language by language ------------------------------------------------------

SCALE_SIGNATURE = """
import ctypes
import torch
from core.challenge_base import ChallengeBase, OutTensor, RandTensor


class Challenge(ChallengeBase):
    name = "Vector Scale"
    atol = 1e-5
    rtol = 1e-5
    num_gpus = 1
    access_tier = "free"

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
SCALE_PARAMS = parse_signature(
    {
        "x": (ctypes.POINTER(ctypes.c_float), "in"),
        "y": (ctypes.POINTER(ctypes.c_float), "out"),
        "N": (ctypes.c_int, "in"),
    }
)

# file name, solve's declaration, how many notes (renamed parameters), or the error's text
ABI_CASES = [
    ("a.cu", 'extern "C" void solve(const float* x, float* y, int N) {}', 0),
    ("a.cu", "void solve(float* in, float* out, int n) {}", 3),
    ("a.cu", 'extern "C" void solve(const float*, float* __restrict__ y, int) {}', 0),
    ("a.cu", 'extern "C" void solve(const float x[], float y[], int N) {}', 0),
    ("a.cu", 'extern "C" void solve(const float* x, float* y, unsigned int N) {}', "expected int"),
    ("a.cu", 'extern "C" void solve(const float* x, float* y, size_t N) {}', "expected int"),
    ("a.cu", 'extern "C" void solve(const double* x, float* y, int N) {}', "pointer to float"),
    ("a.cu", 'extern "C" void solve(const float* x, float* y) {}', "2 parameters"),
    ("a.cu", 'extern "C" void solve(const float* y, float* x, int N) {}', "would receive `x`"),
    (
        "a.cu",
        '__global__ void solve(int* k) {}\nextern "C" void solve(float* x, float* y, int N) {}',
        0,
    ),
    ("a.mojo", "def solve(x: UnsafePointer[Float32], o: UnsafePointer[Float32], N: Int32):", 1),
    ("a.mojo", "def solve(x: UnsafePointer[Float32], y: UnsafePointer[Float32], N: Int):", "int"),
    ("a.mojo", "def solve(x: UnsafePointer[Int32], y: UnsafePointer[Float32], N: Int32):", "float"),
    ("a.pytorch.py", "def solve(inp, out, n):\n    pass", 3),
    ("a.pytorch.py", "def solve(x: torch.Tensor, y, N: float):\n    pass", "expected int"),
    ("a.pytorch.py", "def solve(y, x, N):\n    pass", "would receive `x`"),
    ("a.pytorch.py", "def solve(x, y):\n    pass", "2 parameters"),
    ("a.pytorch.py", "def solve(*args):\n    pass", 0),
    ("a.jax.py", "def solve(inp, N):\n    pass", 1),
    ("a.jax.py", "def solve(x, y, N):\n    pass", "3 parameters, the signature has 2"),
    ("a.cute.py", "def solve(x: cute.Tensor, y: cute.Tensor, N: cute.Int32):\n    pass", 0),
    ("a.cute.py", "def solve(x: cute.Tensor, y: cute.Tensor, N: cute.Float32):\n    pass", "int"),
]


@pytest.mark.parametrize("name, declaration, outcome", ABI_CASES)
def test_signatures_are_checked_by_position_and_type(tmp_path, name, declaration, outcome):
    source = tmp_path / name
    source.write_text(declaration + "\n")
    language = detect_language(source) or "pytorch"
    params = LANGUAGES[language].solve_parameters(SCALE_PARAMS)
    if isinstance(outcome, int):
        notes = check_solve_declaration(source, language, params)
        assert len(notes) == outcome, notes
        assert all("passed by position" in n for n in notes)
    else:
        with pytest.raises(BuildError, match="does not match") as error:
            check_solve_declaration(source, language, params)
        assert outcome in str(error.value) and "expected: " in str(error.value)


def make_challenge(tmp_path: Path, text: str, name: str = "1_vector_scale") -> Path:
    folder = tmp_path / "challenges" / "easy" / name
    folder.mkdir(parents=True)
    (folder / "challenge.py").write_text(text)
    return folder


def test_python_solve_gets_its_arguments_by_position(tmp_path):
    """A PyTorch solve with its own parameter names passes, with notes: it is called by
    position, as LeetGPU calls it."""
    folder = make_challenge(tmp_path, SCALE_SIGNATURE)
    solution = tmp_path / "scale.pytorch.py"
    solution.write_text(
        "import torch\n\n\ndef solve(inp, out, n):\n    torch.mul(inp, 3.0, out=out)\n"
    )
    code, report, output = judge(
        folder, "--device", "cpu", "--action", "submit", "--solution", solution
    )
    assert code == 0 and len(report["tests"]) == 2, output
    assert sum("passed by position" in n for n in report["notes"]) == 3


# -- diagnoses -------------------------------------------------------------------------------


def run_fixture(path: Path, number: str, test_name: str, seed: int = 0):
    """Run a Python fixture in this process on one named functional test; return
    (diagnoses, whether every output passed)."""
    challenge, params = challenge_of(number)
    torch.manual_seed(seed)
    tests = dict(zip(challenge.get_functional_test_names(), challenge.generate_functional_test()))
    inputs = materialize_test(tests[test_name], DEVICE, seed)
    language = detect_language(path)
    call = LANGUAGES[language].load(path, params, DEVICE)
    shared = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    expected = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    outputs = [p.name for p in params if p.is_output]
    for name in outputs:
        shared[name].fill_(float("nan"))  # as the judge poisons outputs
    call(shared)
    challenge.reference_impl(**expected)
    actual = {n: shared[n] for n in outputs}
    wanted = {n: expected[n] for n in outputs}
    passed = all(
        torch.allclose(actual[n], wanted[n], atol=challenge.atol, rtol=challenge.rtol)
        for n in outputs
    )
    causes = diagnose_outputs(challenge, params, inputs, wanted, actual, language)
    return causes, passed


# fixture, challenge, test, words the diagnosis of "output" must contain (None: it passes)
DIAGNOSED = [
    ("gqa_modulo.pytorch.py", "95", "cache_len_3_gqa", ["h % 2", "h // 4"]),
    ("gqa_modulo.pytorch.py", "95", "non_power_of_two_sizes", ["h % 3", "h // 4"]),
    ("gqa_modulo.pytorch.py", "95", "cache_len_2_mha", None),
    ("tf32_rounding.pytorch.py", "95", "cache_len_3_gqa", ["TF32", "allow_tf32"]),
    ("tf32_rounding.pytorch.py", "95", "cache_len_1_mqa", ["rounded to TF32"]),
    ("tf32_rounding.pytorch.py", "95", "large_scores_need_max_subtraction", ["TF32"]),
    ("missing_tail.triton.py", "96", "all_negative_values", ["output[:, 16:]", "cdiv(24"]),
    ("missing_tail.triton.py", "96", "seq_len_1", ["every element of output", "NaN"]),
    ("missing_tail.triton.py", "96", "seq_len_2", None),
    ("nan_output.pytorch.py", "96", "large_scores_need_max_subtraction", ["max subtraction"]),
    ("nan_output.pytorch.py", "96", "power_of_two_sizes", None),
    (
        "partial_write.pytorch.py",
        "96",
        "non_power_of_two_sizes",
        ["output[6:12, :]", "never wrote"],
    ),
]


@pytest.mark.parametrize("fixture, number, test_name, words", DIAGNOSED)
def test_each_diagnosis_fires_on_its_fixture(fixture, number, test_name, words):
    causes, passed = run_fixture(FIXTURES / fixture, number, test_name)
    if words is None:
        assert passed and causes == {}
    else:
        assert not passed and list(causes) == ["output"], causes
        assert all(w in causes["output"] for w in words), causes["output"]


def python_solutions_on_cpu():
    for path in sorted(SOLUTIONS.glob("*/*.py")):
        language = detect_language(path)
        if LANGUAGES[language].runs_on_cpu and LANGUAGES[language].missing_toolchain() is None:
            yield str(path.relative_to(SOLUTIONS))


@pytest.mark.parametrize("solution", list(python_solutions_on_cpu()))
def test_no_diagnosis_fires_on_a_correct_solution(solution):
    """Every check runs on the correct outputs too (``include_passing``): the TF32 profile
    and the GQA mapping compare real numbers, so they could fire; none may. PyTorch runs
    every functional test; Triton (interpreted) and JAX (compiled per shape) the two with the
    fewest input bytes."""
    path = SOLUTIONS / solution
    challenge, params = challenge_of(solution[:2])
    language = detect_language(path)
    call = LANGUAGES[language].load(path, params, DEVICE)
    torch.manual_seed(1)
    tests = challenge.generate_functional_test()
    if language != "pytorch":
        tests = sorted(
            tests,
            key=lambda t: sum(
                materialize_test(t, "meta", 0)[p.name].nbytes for p in params if p.is_pointer
            ),
        )[:2]
    outputs = [p.name for p in params if p.is_output]
    for index, test in enumerate(tests):
        inputs = materialize_test(test, DEVICE, index)
        shared = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        expected = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        call(shared)
        challenge.reference_impl(**expected)
        causes = diagnose_outputs(
            challenge,
            params,
            inputs,
            {n: expected[n] for n in outputs},
            {n: shared[n] for n in outputs},
            language,
            include_passing=True,
        )
        assert causes == {}, (index, causes)


def test_diagnosis_line_in_the_report_and_the_json():
    code, report, output = judge(
        "95",
        "--device",
        "cpu",
        "--action",
        "submit",
        "--solution",
        FIXTURES / "gqa_modulo.pytorch.py",
    )
    assert code == 1, output
    verdicts = {t["name"]: (t["verdict"], t["diagnosis"]) for t in report["tests"]}
    for name in ("cache_len_1_mqa", "cache_len_2_mha", "mqa_64_heads_head_dim_256"):
        assert verdicts[name] == ("PASS", None)  # MQA and MHA: both mappings agree
    for name in ("cache_len_3_gqa", "realistic_llama_gqa"):
        verdict, diagnosis = verdicts[name]
        assert verdict == "WRONG ANSWER" and "h // " in diagnosis
    assert "likely cause: the output matches query head h reading KV head h % 8" in output


def test_synthetic_patterns():
    """The checks on hand-made outputs of a generic challenge: a flat tail, an integer
    output left unwritten, and errors that are not TF32's (a constant offset, noise)."""
    expected = torch.linspace(-1.0, 1.0, 1000)
    inputs = {"N": 1000}

    class Tiny:
        atol, rtol = 1e-5, 1e-5

        @staticmethod
        def reference_impl(**kwargs):
            raise AssertionError("these patterns need no re-run of the reference")

    tail = expected.clone()
    tail[768:] = 0.0
    (line,) = diagnose_outputs(Tiny, [], inputs, {"y": expected}, {"y": tail}).values()
    assert "y[768:]" in line and "of 256" in line
    ints = torch.arange(64, dtype=torch.int32)
    left = ints.clone()
    left[40:] = torch.iinfo(torch.int32).min
    (line,) = diagnose_outputs(Tiny, [], inputs, {"y": ints}, {"y": left}).values()
    assert "24 of 64 elements (y[40:64])" in line and "minimum integer" in line
    assert diagnose_outputs(Tiny, [], inputs, {"y": expected}, {"y": expected + 1e-3}) == {}
    assert diagnose_outputs(Tiny, [], inputs, {"y": expected}, {"y": expected * 1.001}) == {}
    noisy = expected + 0.05 * torch.randn(1000)
    assert diagnose_outputs(Tiny, [], inputs, {"y": expected}, {"y": noisy}) == {}


# -- runtime errors --------------------------------------------------------------------------


def test_a_triton_error_shows_the_kernel_line_first():
    code, report, output = judge(
        "96", "--device", "cpu", "--solution", FIXTURES / "arange_not_power_of_two.triton.py"
    )
    assert code == 1, output
    (test,) = report["tests"]
    assert test["verdict"] == "RUNTIME ERROR"
    lines = test["detail"].splitlines()
    assert "arange_not_power_of_two.triton.py" in lines[0] and "in solve" in lines[0]
    assert "in whole_sequence_kernel" in lines[2] and "tl.arange(0, SEQ_LEN)" in lines[3]
    assert "arange's range must be a power of 2" in test["detail"]
    assert "triton.next_power_of_2" in test["diagnosis"]


def test_a_triton_compile_error_names_the_kernel_line(tmp_path):
    """On a GPU Triton compiles the kernel and raises CompilationError with a line counted
    from the kernel's def; the judge turns it into the file's own line."""
    from triton.compiler.errors import CompilationError

    source = tmp_path / "kernel.py"
    source.write_text(textwrap.dedent("""
            def kernel(X, D):
                offsets = 1
                r = arange(0, D)


            def solve(src, node):
                raise CompilationError(src, node, "ValueError('arange must be a power of 2')")
            """))
    namespace = {"CompilationError": CompilationError}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    src = source.read_text().split("\n\n\n")[0].strip()
    node = ast.parse(src).body[0].body[1]  # the arange line: line 3 of the kernel's source
    with pytest.raises(CompilationError) as raised:
        namespace["solve"](src, node)
    text = describe_exception(raised.value, str(Path(__file__).parent.parent / "judge"))
    assert f'File "{source}", line 4, in kernel' in text and "r = arange(0, D)" in text
    assert text.splitlines()[-1].startswith("triton.compiler.errors.CompilationError: ValueError")


def test_missing_triton_constructs_name_the_release():
    line = diagnose_error(
        "InterpreterError: NotImplementedError('Block pointers have been removed')"
    )
    assert "tl.make_block_ptr" in line and "Triton 3.6" in line


def test_block_pointers_run_in_the_cpu_interpreter():
    code, report, output = judge(
        "96", "--device", "cpu", "--solution", FIXTURES / "block_pointers.triton.py"
    )
    assert code == 0 and report["tests"][0]["verdict"] == "PASS", output


# -- challenges that need CUDA, and --action build elsewhere --------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_challenge_that_needs_cuda_is_a_usage_error_on_the_cpu(tmp_path):
    text = SCALE_SIGNATURE.replace(
        '        return {"x": RandTensor((8,), -1.0, 1.0), "y": OutTensor((8,)), "N": 8}',
        '        x = torch.rand(8, device="cuda")\n'
        '        return {"x": x, "y": torch.empty_like(x), "N": 8}',
    )
    folder = make_challenge(tmp_path, text)
    solution = tmp_path / "scale.pytorch.py"
    solution.write_text("import torch\n\n\ndef solve(x, y, N):\n    torch.mul(x, 3.0, out=y)\n")
    code, _, output = judge(folder, "--device", "cpu", "--solution", solution)
    line = 1 + text.splitlines().index('        x = torch.rand(8, device="cuda")')
    assert code == 2, output
    assert f'challenge.py:{line}: x = torch.rand(8, device="cuda")' in output
    assert 'creates tensors on "cuda"' in output and "internal error" not in output


@pytest.mark.skipif(
    LANGUAGES["cute"].missing_toolchain() is not None, reason="the cute extra is not installed"
)
def test_cute_builds_without_a_gpu():
    code, _, output = judge(
        "96", "--action", "build", "--solution", FIXTURES / "compile_error.cute.py"
    )
    assert code == 3 and "compile_error.cute.py:10" in output, output


# -- on the GPU ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", [f for f, *_ in LEGACY_CUDA] + ["renamed_parameters.cu"], ids=str
)
@pytest.mark.gpu
@requires_cuda
def test_legacy_cuda_forms_pass_submit_on_the_gpu(fixture):
    code, report, output = judge(
        "96",
        "--device",
        "cuda",
        "--action",
        "submit",
        "--solution",
        FIXTURES / fixture,
        "--budget",
        "1",
    )
    assert code == 0, output
    assert all(t["verdict"] == "PASS" for t in report["tests"]) and len(report["tests"]) == 10


@pytest.mark.gpu
@requires_cuda
def test_tf32_dot_is_diagnosed_on_the_gpu():
    """tl.dot in Triton's default precision: TF32 on sm_80 and newer. The tests it fails are
    wrong answers, diagnosed as TF32 rounding where diagnosed at all."""
    code, report, output = judge(
        "95",
        "--device",
        "cuda",
        "--action",
        "submit",
        "--solution",
        FIXTURES / "tf32_dot.triton.py",
        "--budget",
        "1",
    )
    failed = [t for t in report["tests"] if t["verdict"] != "PASS"]
    assert code == 1 and failed, output
    assert all(t["verdict"] == "WRONG ANSWER" for t in failed), output
    diagnosed = [t["diagnosis"] for t in failed if t["diagnosis"]]
    assert diagnosed and all('input_precision="ieee"' in d for d in diagnosed), output


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter runs without a GPU")
def test_tf32_dot_is_right_apart_from_the_rounding():
    """The GPU test's fixture is right but for TF32: the CPU interpreter multiplies in
    float32, and it passes there."""
    for test_name in ("cache_len_3_gqa", "all_negative_values"):
        causes, passed = run_fixture(FIXTURES / "tf32_dot.triton.py", "95", test_name)
        assert passed and causes == {}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize(
    "fixture, action, expect",
    [
        ("block_pointers.triton.py", "submit", None),
        ("missing_tail.triton.py", "submit", ("non_power_of_two_sizes", "output[:, 32:]")),
        ("arange_not_power_of_two.triton.py", "run", ("example", "next_power_of_2")),
    ],
)
def test_triton_fixtures_on_the_gpu(fixture, action, expect):
    code, report, output = judge(
        "96",
        "--device",
        "cuda",
        "--action",
        action,
        "--solution",
        FIXTURES / fixture,
        "--budget",
        "1",
    )
    if expect is None:
        assert code == 0, output
        return
    test_name, words = expect
    (test,) = [t for t in report["tests"] if t["name"] == test_name]
    assert test["verdict"] != "PASS" and words in (test["diagnosis"] or ""), output
    if fixture.startswith("arange"):  # Triton's CompilationError, at the kernel's line
        assert "tl.arange(0, SEQ_LEN)" in test["detail"], output
