"""The interface every language adapter implements, and what they share."""

import ctypes
import hashlib
import importlib.util
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Dict, List, Optional

from judge.signature import Param, compare_declaration, declared_solve, expected_declaration

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
        """The names of the parameters ``solve`` takes, in order (all of the signature's)."""
        return [p.name for p in params]

    def solve_parameters(self, params: List[Param]) -> List[Param]:
        """The signature's parameters that ``solve`` takes, in the order it takes them."""
        names = set(self.expected_parameters(params))
        return [p for p in params if p.name in names]

    def missing_toolchain(self) -> Optional[str]:
        """None when the toolchain is installed, else a message saying how to install it."""
        return None

    def build(
        self, source: Path, params: List[Param], workdir: Path, notes: Optional[List[str]] = None
    ) -> Path:
        """Check (and for compiled languages, compile) ``source`` in the judge process.

        Args:
            source: the submission file.
            params: the challenge's signature.
            workdir: where build products go (cached there by content).
            notes: receives what the user should know about a build that succeeded (a
                parameter named differently from the signature, a legacy form).

        Returns:
            The artifact the worker loads (the source itself for Python languages).

        Raises:
            BuildError: compilation failed, or ``solve`` is missing or does not take the
                signature's parameters (their count and types, by position).
        """
        found = check_solve_declaration(source, self.name, self.solve_parameters(params))
        if notes is not None:
            notes.extend(found)
        return source

    @abstractmethod
    def load(self, artifact: Path, params: List[Param], device: str) -> Call:
        """In the worker: load the artifact and return a function that calls ``solve`` with one
        test's keyword arguments and leaves the results in the "out" tensors.

        Raises:
            BuildError: the artifact cannot be loaded or has no ``solve``.
        """


def check_solve_declaration(source: Path, language: str, params: List[Param]) -> List[str]:
    """Check ``solve``'s declaration in ``source`` by the ABI rule: ``solve`` is called by
    position, so the parameters' count and types must be the signature's; a name that differs
    is only a note.

    Args:
        source: the submission file.
        language: the adapter name (for the expected declaration's spelling).
        params: the parameters ``solve`` takes, in order.

    Returns:
        One note per parameter whose name alone differs from the signature's.

    Raises:
        BuildError: no ``solve``, a syntax error in a Python file, or a mismatch; the message
            shows the expected declaration beside the one found.
    """
    try:
        declaration = declared_solve(source)
    except SyntaxError as exc:
        raise BuildError(f"{source}:{exc.lineno}: syntax error: {exc.msg}") from None
    if declaration is None:
        raise BuildError(f"{source} defines no function `solve`; start from the starter file")
    problems, renamed = compare_declaration(params, declaration)
    if problems:
        raise BuildError(
            f"{source}:{declaration.line}: solve does not match the challenge's signature: "
            + "; ".join(problems)
            + f"\n  expected: {expected_declaration(language, params)}"
            + f"\n  found:    {declaration.text}"
        )
    return [
        f"{source.name}:{declaration.line}: parameter {position} is named `{found}`, the "
        f"signature's `{expected}`: arguments are passed by position, so it builds"
        for position, found, expected in renamed
    ]


def call_by_position(solve, params: List[Param], kwargs: Dict[str, object]):
    """``solve(*arguments)`` in the order of ``params``, as the C ABI and LeetGPU pass them:
    the parameters' names are the submission's own."""
    return solve(*[kwargs[p.name] for p in params])


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
    """A language whose submission is a Python file whose ``solve`` writes the outputs in
    place; it gets its arguments by position, in the signature's order."""

    def load(self, artifact, params, device):
        solve = import_solve(artifact)
        return lambda kwargs: call_by_position(solve, params, kwargs)


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
