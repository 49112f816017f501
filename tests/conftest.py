"""Shared fixtures: every challenge folder and its challenge loaded on the CPU, and
tool-availability checks."""

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch  # noqa: E402

from judge.challenges import (  # noqa: E402
    REPO_ROOT,
    find_challenge,
    list_challenges,
    load_challenge,
)

# Triton kernels run through the interpreter on machines without a GPU, and CuTe DSL compiles
# for Hopper there (it reads the target when cutlass is first imported)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("CUTE_DSL_ARCH", "sm_90a")

# every challenge folder: the generic tests (checker, starters) run on each
# every judge run adds a row to the history (judge/history.py): keep the tests' rows out of
# the user's own history file, in a folder of this test session
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="judge-tests-data-")

CHALLENGE_IDS = [str(f.number) for f in list_challenges()]


requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"
)
requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


@pytest.fixture(params=CHALLENGE_IDS)
def folder(request):
    """Each challenge folder in turn."""
    return find_challenge(request.param)


@pytest.fixture
def challenge(folder):
    """Each challenge in turn, instantiated on the CPU."""
    return load_challenge(folder, "cpu")


CPU_MODEL = REPO_ROOT / "tests" / "cuda_cpu_model"


def build_cpu_model(driver: str, folder: Path) -> ctypes.CDLL:
    """A CUDA editorial's kernel built for the CPU model in tests/cuda_cpu_model: g++ compiles
    the driver `driver` (a .cpp there that includes the editorial) into a shared library in
    `folder`, loaded through ctypes. Skips the test where there is no g++ or no glibc
    (ucontext); a failed build fails it with the compiler's messages."""
    if shutil.which("g++") is None or not sys.platform.startswith("linux"):
        pytest.skip("the CPU model needs g++ and glibc's ucontext")
    library = folder / (Path(driver).stem + ".so")
    result = subprocess.run(
        ["g++", "-std=c++17", "-O2", "-shared", "-fPIC", "-I", str(CPU_MODEL)]
        + ["-o", str(library), str(CPU_MODEL / driver)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(library))
