"""CuTe DSL submissions (``nvidia-cutlass-dsl``): ``solve`` is a ``@cute.jit`` function taking
``cute.Tensor``s and ``cute.Int32``/``cute.Uint32`` scalars, as in the public CuTe starters.

Each tensor reaches ``solve`` through ``cutlass.cute.runtime.from_dlpack`` (no copy; a static
layout of the tensor's shape, with 16-byte alignment assumed where the buffer has it). The
function is compiled with ``cute.compile`` once per distinct set of shapes, on the first call
that has them: the judge's untimed first calls, never a timed one. Later calls with those shapes
run the compiled function. A failing ``cute.compile`` is a ``BuildError`` that names the line of
the submission where it failed.

The DSL targets the visible GPU; where none is visible (compile-only checks), ``CUTE_DSL_ARCH``
names the target, e.g. ``sm_90a``, and must be set before ``cutlass`` is imported: without it
the DSL silently targets ``sm_100a``.
"""

import traceback
from pathlib import Path
from typing import Dict, List

from judge.languages.base import BuildError, Language, import_solve, module_available
from judge.signature import Param

ALIGNMENT_BYTES = 16


def cute_arguments(params: List[Param], kwargs: Dict[str, object]) -> list:
    """``solve``'s arguments: each tensor as a ``cute.Tensor`` sharing its memory (16-byte
    alignment assumed where the data pointer has it), each scalar as is."""
    from cutlass.cute.runtime import from_dlpack

    args = []
    for p in params:
        value = kwargs[p.name]
        if p.is_pointer:
            aligned = value.data_ptr() % ALIGNMENT_BYTES == 0
            args.append(from_dlpack(value, assumed_align=ALIGNMENT_BYTES if aligned else None))
        else:
            args.append(value)
    return args


def layout_key(params: List[Param], kwargs: Dict[str, object]) -> tuple:
    """What a compiled ``solve`` is specialised for: each tensor's shape, strides, dtype and
    alignment (scalars are run-time arguments)."""
    return tuple(
        (
            tuple(kwargs[p.name].shape),
            kwargs[p.name].stride(),
            kwargs[p.name].dtype,
            kwargs[p.name].data_ptr() % ALIGNMENT_BYTES == 0,
        )
        for p in params
        if p.is_pointer
    )


def compile_solve(solve, params: List[Param], kwargs: Dict[str, object], source: Path):
    """``cute.compile(solve, ...)`` for the shapes of ``kwargs``.

    Raises:
        BuildError: the DSL rejected the function; the message names the submission's line.
    """
    import cutlass.cute as cute

    try:
        return cute.compile(solve, *cute_arguments(params, kwargs))
    except Exception as exc:  # the DSL raises many types: MLIRError, DSLRuntimeError, ...
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(source)]
        where = f"{source}:{frames[-1].lineno}: " if frames else f"{source}: "
        message = str(exc).strip() or type(exc).__name__
        raise BuildError(f"cute.compile failed: {where}{type(exc).__name__}: {message}") from None


class CuteLanguage(Language):
    name = "cute"
    suffix = ".cute.py"
    extra = "cute"

    def missing_toolchain(self):
        if module_available("cutlass"):
            return None
        return "CuTe DSL is not installed: pip install -e '.[cute]' (nvidia-cutlass-dsl)"

    def load(self, artifact: Path, params: List[Param], device: str):
        solve = import_solve(artifact)
        compiled = {}

        def call(kwargs):
            key = layout_key(params, kwargs)
            if key not in compiled:
                compiled[key] = compile_solve(solve, params, kwargs, artifact)
            compiled[key](*cute_arguments(params, kwargs))

        return call
