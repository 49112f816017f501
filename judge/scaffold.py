"""Starter files rendered from a ``solve`` signature, and a new challenge folder's skeleton."""

from pathlib import Path
from typing import Dict, List

from judge.challenges import CHALLENGES_DIR, list_challenges
from judge.signature import Param

STARTER_FILES = (
    "starter.cu",
    "starter.pytorch.py",
    "starter.triton.py",
    "starter.jax.py",
    "starter.cute.py",
    "starter.mojo",
)


def _names(params: List[Param]) -> str:
    return ", ".join(p.name for p in params)


def _python_starter(imports: str, comment: str, decorator: str, params, annotation, returns=""):
    lines = [imports, "", "", comment]
    if decorator:
        lines.append(decorator)
    lines.append("def solve(")
    lines += [f"    {p.name}: {annotation(p)}," for p in params]
    lines += [f"){returns}:", "    pass", ""]
    return "\n".join(lines)


def render_starters(params: List[Param]) -> Dict[str, str]:
    """The six starter files for a signature: file name -> text.

    Each has an empty ``solve`` with the signature's parameters and exactly one comment, the
    one that says which parameters live on the device. JAX's ``solve`` takes no output
    parameters and returns the output instead.
    """
    tensors = [p for p in params if p.is_pointer]
    jax_params = [p for p in params if not p.is_output]
    jax_tensors = [p for p in jax_params if p.is_pointer]
    cuda_args = ", ".join(p.cuda_decl() for p in params)
    mojo_args = "".join(f"    {p.mojo_decl()},\n" for p in params)
    return {
        "starter.cu": (
            "#include <cuda_runtime.h>\n\n"
            f"// {_names(tensors)} are device pointers\n"
            f'extern "C" void solve({cuda_args}) {{}}\n'
        ),
        "starter.pytorch.py": _python_starter(
            "import torch",
            f"# {_names(tensors)} are tensors on the GPU",
            "",
            params,
            lambda p: p.python_annotation("torch.Tensor"),
        ),
        "starter.triton.py": _python_starter(
            "import torch\nimport triton\nimport triton.language as tl",
            f"# {_names(tensors)} are tensors on the GPU",
            "",
            params,
            lambda p: p.python_annotation("torch.Tensor"),
        ),
        "starter.jax.py": _python_starter(
            "import jax\nimport jax.numpy as jnp",
            f"# {_names(jax_tensors)} are tensors on the device; return the output tensor",
            "@jax.jit",
            jax_params,
            lambda p: p.python_annotation("jax.Array"),
            returns=" -> jax.Array",
        ),
        "starter.cute.py": _python_starter(
            "import cutlass\nimport cutlass.cute as cute",
            f"# {_names(tensors)} are tensors on the GPU",
            "@cute.jit",
            params,
            lambda p: p.cute_annotation(),
        ),
        "starter.mojo": (
            "from std.gpu.host import DeviceContext\n"
            "from std.gpu import block_dim, block_idx, thread_idx\n"
            "from std.memory import UnsafePointer\n"
            "from std.math import ceildiv\n\n\n"
            f"# {_names(tensors)} are device pointers\n"
            "@export\n"
            f"def solve(\n{mojo_args}) raises:\n"
            "    pass\n"
        ),
    }


def next_free_number(root: Path = CHALLENGES_DIR) -> int:
    """One more than the highest challenge number under ``root`` (1 when there is none)."""
    return max((f.number for f in list_challenges(root)), default=0) + 1


CHALLENGE_TEMPLATE = """import ctypes
from typing import Any, Dict, List

import torch
from core.challenge_base import ChallengeBase, OutTensor, RandnTensor

# name, N
FUNCTIONAL_CASES = [
    ("single_element", 1),
    ("two_elements", 2),
    ("three_elements", 3),
    ("power_of_two", 1024),
    ("non_power_of_two", 1000),
    ("one_block_plus_one", 257),
    ("realistic", 1_000_000),
]


class Challenge(ChallengeBase):
    name = "{title}"
    atol = 1e-05
    rtol = 1e-05
    num_gpus = 1
    access_tier = "free"

    def reference_impl(self, input: torch.Tensor, output: torch.Tensor, N: int):
        assert input.shape == output.shape == (N,)
        assert input.dtype == output.dtype == torch.float32
        # TODO: replace with the challenge's computation
        output.copy_(input)

    def get_solve_signature(self) -> Dict[str, tuple]:
        return {{
            "input": (ctypes.POINTER(ctypes.c_float), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "N": (ctypes.c_int, "in"),
        }}

    def _make_test_case(self, input: torch.Tensor) -> Dict[str, Any]:
        return {{"input": input, "output": torch.empty_like(input), "N": input.shape[0]}}

    def generate_example_test(self) -> Dict[str, Any]:
        input = torch.tensor([1.0, 2.0, 3.0, 4.0], device=self.device)
        return self._make_test_case(input)

    def get_functional_test_names(self) -> List[str]:
        return [case[0] for case in FUNCTIONAL_CASES]

    def generate_functional_test(self) -> List[Dict[str, Any]]:
        return [
            self._make_test_case(torch.randn(n, device=self.device))
            for _, n in FUNCTIONAL_CASES
        ]

    def generate_performance_test(self) -> Dict[str, Any]:
        N = 1_000_000
        return {{"input": RandnTensor((N,)), "output": OutTensor((N,)), "N": N}}
"""

HTML_TEMPLATE = """<p>
  TODO: describe {title}. Given <code>input</code> of length <code>N</code>, write the result into
  <code>output</code>. All tensors are <code>float32</code>.
</p>

<h2>Implementation Requirements</h2>
<ul>
  <li>Implement <code>solve(input, output, N)</code>; do not change the signature or use
    external libraries beyond the standard GPU frameworks.</li>
  <li>Write the result into the provided <code>output</code> buffer.</li>
</ul>

<h2>Example</h2>
<p>
  With <code>N</code> = 4:
  <strong>Input</strong> <code>input</code> = \\([1.0, 2.0, 3.0, 4.0]\\)
  <strong>Output</strong> <code>output</code> = \\([1.0, 2.0, 3.0, 4.0]\\)
</p>

<h2>Constraints</h2>
<ul>
  <li>1 &le; <code>N</code> &le; 100,000,000</li>
  <li>Performance is measured with <code>N</code> = 1,000,000</li>
</ul>
"""


def create_challenge(slug: str, difficulty: str, root: Path = CHALLENGES_DIR) -> Path:
    """Write ``<root>/<difficulty>/<next number>_<slug>/`` with a template challenge.

    The template is a complete, checker-clean copy challenge; its reference, signature, tests
    and text are the places to edit.

    Raises:
        ValueError: the slug is not lower_snake_case, the difficulty is unknown, or the
            folder exists.
    """
    from judge.challenges import DIFFICULTIES, load_challenge
    from judge.signature import parse_signature

    if not slug.replace("_", "").isalnum() or slug != slug.lower():
        raise ValueError(f"name {slug!r} must be lower_snake_case, e.g. 'paged_attention'")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}")
    folder = root / difficulty / f"{next_free_number(root)}_{slug}"
    folder.mkdir(parents=True, exist_ok=False)
    title = slug.replace("_", " ").title()
    (folder / "challenge.py").write_text(CHALLENGE_TEMPLATE.format(title=title))
    (folder / "challenge.html").write_text(HTML_TEMPLATE.format(title=title))
    params = parse_signature(load_challenge(folder, "cpu").get_solve_signature())
    (folder / "starter").mkdir()
    for name, text in render_starters(params).items():
        (folder / "starter" / name).write_text(text)
    return folder
