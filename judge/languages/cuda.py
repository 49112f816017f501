"""CUDA submissions: nvcc builds the file into a shared library whose ``extern "C" solve`` is
called through ctypes with device pointers and C integers."""

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import torch

from judge.languages.base import (
    BuildError,
    Language,
    cached_library,
    check_declared_parameters,
    ctypes_argtypes,
    ctypes_arguments,
)
from judge.signature import Param

SUPPORT_SOURCE = Path(__file__).with_name("cuda_support.cu")
DEFAULT_ARCH = "90a"  # Hopper, when no GPU is visible to ask


def gpu_arch() -> str:
    """The visible GPU's architecture for nvcc, e.g. "90a" on Hopper (wgmma, setmaxnreg need
    the "a" target), "89" on Ada; DEFAULT_ARCH when no GPU is visible."""
    if not torch.cuda.is_available():
        return DEFAULT_ARCH
    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}" + ("a" if major >= 9 else "")


def nvcc_command(source: Path, library: Path, arch: str) -> List[str]:
    return [
        "nvcc",
        "-O3",
        "-lineinfo",
        "-std=c++17",
        "-shared",
        "-Xcompiler",
        "-fPIC",
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        "-o",
        str(library),
        str(source),
        str(SUPPORT_SOURCE),
    ]


class CudaLanguage(Language):
    name = "cuda"
    suffix = ".cu"

    def missing_toolchain(self) -> Optional[str]:
        if shutil.which("nvcc"):
            return None
        return "nvcc is not on PATH: install the CUDA toolkit (12.4 or newer)"

    def build(self, source: Path, params: List[Param], workdir: Path) -> Path:
        check_declared_parameters(source, self.expected_parameters(params))
        arch = gpu_arch()
        library = cached_library(source, workdir, SUPPORT_SOURCE.read_text() + arch)
        if library.is_file():
            return library
        result = subprocess.run(nvcc_command(source, library, arch), capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"nvcc failed (exit {result.returncode}):\n{result.stderr.strip()}")
        exported = _exports_solve(library)
        if exported is False:
            library.unlink()
            raise BuildError(
                f'{source}: the library exports no C symbol `solve`; declare it extern "C" '
                "(a C++ name is mangled and cannot be found)"
            )
        return library

    def load(self, artifact: Path, params: List[Param], device: str):
        lib = ctypes.CDLL(str(artifact))
        solve = lib.solve
        solve.argtypes = ctypes_argtypes(params)
        solve.restype = None
        lib.judge_cuda_check.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.judge_cuda_check.restype = ctypes.c_int
        message = ctypes.create_string_buffer(256)

        def call(kwargs):
            solve(*ctypes_arguments(params, kwargs))

        def check():
            code = lib.judge_cuda_check(message, len(message))
            if code != 0:
                raise CudaError(f"CUDA error {code}: {message.value.decode()}")

        call.check = check
        return call


class CudaError(RuntimeError):
    """A CUDA runtime error after the submission's call (the context may be unusable)."""


def _exports_solve(library: Path) -> Optional[bool]:
    """Whether the library exports a C ``solve``; None when nm is not installed."""
    if shutil.which("nm") is None:
        return None
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True
    ).stdout
    return any(line.split()[-1] == "solve" for line in out.splitlines() if line.strip())
