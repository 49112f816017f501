"""Mojo submissions: ``mojo build --emit shared-lib`` builds the file; its exported
``solve`` is called through ctypes with device pointers, like CUDA.

The ABI of an exported ``def solve(...) raises``: after the declared arguments it takes one
hidden pointer to a buffer where it writes the error it raised (first a pointer to the
message, then the message's length), and it returns a bool that is true on error. Calling it
with only the declared arguments writes through garbage.

Supported release: Mojo 0.26.2.0 (``pip install mojo-compiler==0.26.2.0``, the ``mojo`` extra),
the newest whose standard library still has ``std.gpu.host.DeviceContext`` and
``MutExternalOrigin``, the API of the public starters. ``--target-accelerator`` names the
GPU's architecture (``sm_90`` when no GPU is visible, so a machine without one can build).
At run time the library needs Mojo's runtime libraries: those of the installed compiler, or a
folder named by ``MOJO_RUNTIME_DIR`` holding copies of them.
"""

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from judge.languages.base import (
    BuildError,
    Language,
    cached_library,
    check_solve_declaration,
    ctypes_argtypes,
    ctypes_arguments,
)
from judge.signature import Param

RELEASE = "0.26.2.0"
# loaded in this order, each into the global namespace, before a submission's library
RUNTIME_LIBRARIES = (
    "libMSupportGlobals.so",
    "libAsyncRTRuntimeGlobals.so",
    "libNVPTX.so",
    "libAsyncRTMojoBindings.so",
    "libKGENCompilerRTShared.so",
)
MAX_MESSAGE_BYTES = 1 << 20


def mojo_command() -> Optional[str]:
    """The mojo compiler: on PATH, or installed by pip beside this Python."""
    beside = Path(sys.executable).parent / "mojo"
    return shutil.which("mojo") or (str(beside) if beside.is_file() else None)


def mojo_version(command: str) -> Optional[str]:
    try:
        out = subprocess.run([command, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    return out.split()[1] if out.startswith("Mojo") and len(out.split()) > 1 else None


def target_accelerator() -> str:
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"sm_{major}{minor}"
    return "sm_90"


def runtime_dir() -> Optional[Path]:
    """Where Mojo's runtime libraries are: MOJO_RUNTIME_DIR, else the installed compiler's."""
    named = os.environ.get("MOJO_RUNTIME_DIR")
    if named:
        return Path(named)
    import importlib.util

    spec = importlib.util.find_spec("modular")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


class _Error(ctypes.Structure):
    """The buffer ``solve`` writes a raised error into: its first fields are the message
    pointer and length; the rest is room for whatever else the runtime stores there."""

    _fields_ = [
        ("message", ctypes.c_void_p),
        ("length", ctypes.c_int64),
        ("rest", ctypes.c_byte * 240),
    ]


class MojoLanguage(Language):
    name = "mojo"
    suffix = ".mojo"
    extra = "mojo"

    def missing_toolchain(self) -> Optional[str]:
        command = mojo_command()
        version = mojo_version(command) if command else None
        if version == RELEASE:
            return None
        found = f"found Mojo {version}" if version else "Mojo is not installed"
        return f"{found}; the judge supports Mojo {RELEASE}: pip install -e '.[mojo]'"

    def build(self, source: Path, params: List[Param], workdir: Path, notes=None) -> Path:
        found = check_solve_declaration(source, self.name, self.solve_parameters(params))
        if notes is not None:
            notes.extend(found)
        arch = target_accelerator()
        library = cached_library(source, workdir, RELEASE + arch)
        if library.is_file():
            return library
        command = [
            mojo_command(),
            "build",
            "--emit",
            "shared-lib",
            "--target-accelerator",
            arch,
            str(source),
            "-o",
            str(library),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "MODULAR_TELEMETRY": "0"}
        )
        if result.returncode != 0 or not library.is_file():
            output = "\n".join(
                line
                for line in (result.stdout + result.stderr).splitlines()
                if "Crashpad" not in line
            )
            raise BuildError(f"mojo build failed (exit {result.returncode}):\n{output.strip()}")
        return library

    def load(self, artifact: Path, params: List[Param], device: str):
        folder = runtime_dir()
        if folder is None or not (folder / RUNTIME_LIBRARIES[-1]).is_file():
            raise BuildError(
                "Mojo's runtime libraries were not found: install the mojo extra or "
                "set MOJO_RUNTIME_DIR"
            )
        for name in RUNTIME_LIBRARIES:
            ctypes.CDLL(str(folder / name), mode=ctypes.RTLD_GLOBAL)
        solve = ctypes.CDLL(str(artifact)).solve
        solve.argtypes = ctypes_argtypes(params) + [ctypes.POINTER(_Error)]
        solve.restype = ctypes.c_bool

        def call(kwargs):
            error = _Error()
            if solve(*ctypes_arguments(params, kwargs), ctypes.byref(error)):
                raise RuntimeError(f"solve raised: {_message(error)}")

        return call


def _message(error: _Error) -> str:
    if not error.message or not 0 < error.length <= MAX_MESSAGE_BYTES:
        return "(no readable message)"
    return ctypes.string_at(error.message, error.length).decode(errors="replace")
