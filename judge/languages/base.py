"""The interface every language adapter implements, and what they share."""

import ctypes
import hashlib
import importlib.util
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Dict, List, Optional

from judge.signature import Param, declared_parameters

Call = Callable[[Dict[str, object]], None]


class BuildError(Exception):
    """The submission did not build, or does not declare ``solve`` as the challenge needs.

    The message is what the user needs to fix it: the compiler's output with file and line, or
    the expected parameter list.
    """


class Language(ABC):
    """One submission language: built in the judge process, loaded and called in the worker.

    Attributes:
        name: the ``--language`` value, e.g. "cuda".
        suffix: the starter/solution file suffix, e.g. ".cu" or ".triton.py".
        runs_on_cpu: whether ``--device cpu`` can run it.
        extra: the pip extra of this project that installs its toolchain, if any.
    """

    name: str
    suffix: str
    runs_on_cpu: bool = False
    extra: Optional[str] = None

    def expected_parameters(self, params: List[Param]) -> List[str]:
        """The parameter names ``solve`` must declare, in order."""
        return [p.name for p in params]

    def missing_toolchain(self) -> Optional[str]:
        """None when the toolchain is installed, else a message saying how to install it."""
        return None

    def build(self, source: Path, params: List[Param], workdir: Path) -> Path:
        """Check (and for compiled languages, compile) ``source`` in the judge process.

        Returns:
            The artifact the worker loads (the source itself for Python languages).

        Raises:
            BuildError: compilation failed, or ``solve`` is missing or declares other
                parameters than the challenge's signature.
        """
        check_declared_parameters(source, self.expected_parameters(params))
        return source

    @abstractmethod
    def load(self, artifact: Path, params: List[Param], device: str) -> Call:
        """In the worker: load the artifact and return a function that calls ``solve`` with one
        test's keyword arguments and leaves the results in the "out" tensors.

        Raises:
            BuildError: the artifact cannot be loaded or has no ``solve``.
        """


def check_declared_parameters(source: Path, expected: List[str]):
    """Raise ``BuildError`` unless ``source`` declares ``solve`` with exactly ``expected``."""
    try:
        declared = declared_parameters(source)
    except SyntaxError as exc:
        raise BuildError(f"{source}:{exc.lineno}: syntax error: {exc.msg}") from None
    if declared is None:
        raise BuildError(f"{source} defines no function `solve`; start from the starter file")
    if declared != expected:
        raise BuildError(
            f"{source}: solve({', '.join(declared)}) does not match the challenge's "
            f"solve({', '.join(expected)})"
        )


def import_solve(path: Path):
    """Import a Python submission from its path and return its ``solve``.

    Raises:
        BuildError: the module has no callable ``solve``. Exceptions raised by the module's own
            top-level code propagate: the worker reports them as runtime errors.
    """
    name = f"submission_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    solve = getattr(module, "solve", None)
    if not callable(solve):
        raise BuildError(f"{path} defines no function `solve`")
    return solve


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class PythonLanguage(Language):
    """A language whose submission is a Python file calling ``solve(**kwargs)`` in place."""

    def load(self, artifact, params, device):
        solve = import_solve(artifact)
        return lambda kwargs: solve(**kwargs)


def cached_library(source: Path, workdir: Path, salt: str) -> Path:
    """Where the shared library built from ``source`` goes: named by a hash of the source and
    ``salt`` (compiler release, target), so an unchanged submission is not rebuilt."""
    digest = hashlib.sha256(source.read_bytes() + salt.encode()).hexdigest()[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir / f"solve_{digest}.so"


def ctypes_argtypes(params: List[Param]) -> list:
    """ctypes argument types of ``solve``: device pointers as void*, scalars as declared."""
    return [ctypes.c_void_p if p.is_pointer else p.ctype for p in params]


def ctypes_arguments(params: List[Param], kwargs: Dict[str, object]) -> list:
    """``solve``'s arguments for ctypes: each tensor's device address, each scalar as is.

    Raises:
        TypeError: a tensor is not contiguous or not of the signature's dtype.
    """
    args = []
    for p in params:
        value = kwargs[p.name]
        if p.is_pointer:
            if value.dtype != p.torch_dtype or not value.is_contiguous():
                raise TypeError(f"{p.name}: a contiguous {p.torch_dtype} tensor is needed")
            args.append(value.data_ptr())
        else:
            args.append(value)
    return args
