"""What a ``get_solve_signature()`` entry means: tensor dtypes and each language's spelling."""

import ast
import ctypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

# ctypes element type -> (torch dtype, CUDA C type, Mojo type)
_POINTEE = {
    ctypes.c_float: (torch.float32, "float", "Float32"),
    ctypes.c_double: (torch.float64, "double", "Float64"),
    ctypes.c_uint16: (torch.float16, "half", "Float16"),
    ctypes.c_int: (torch.int32, "int", "Int32"),
    ctypes.c_int32: (torch.int32, "int", "Int32"),
    ctypes.c_int64: (torch.int64, "long long", "Int64"),
    ctypes.c_long: (torch.int64, "long", "Int64"),
    ctypes.c_int8: (torch.int8, "int8_t", "Int8"),
    ctypes.c_byte: (torch.int8, "int8_t", "Int8"),
    ctypes.c_uint8: (torch.uint8, "uint8_t", "UInt8"),
    ctypes.c_ubyte: (torch.uint8, "uint8_t", "UInt8"),
    ctypes.c_bool: (torch.bool, "bool", "Bool"),
}

# ctypes scalar type -> (CUDA C type, Mojo type, Python annotation, CuTe annotation)
_SCALAR = {
    ctypes.c_int: ("int", "Int32", "int", "cute.Int32"),
    ctypes.c_uint: ("unsigned int", "UInt32", "int", "cute.Uint32"),
    ctypes.c_int64: ("long long", "Int64", "int", "cute.Int64"),
    ctypes.c_long: ("long", "Int64", "int", "cute.Int64"),
    ctypes.c_float: ("float", "Float32", "float", "cute.Float32"),
    ctypes.c_double: ("double", "Float64", "float", "cute.Float64"),
}


class SignatureError(ValueError):
    """A ``get_solve_signature()`` entry uses a type or direction the judge does not know."""


@dataclass(frozen=True)
class Param:
    """One ``solve`` parameter: a device pointer (a tensor) or a scalar."""

    name: str
    ctype: object
    direction: str  # "in", "out" or "inout"

    @property
    def is_pointer(self) -> bool:
        return isinstance(self.ctype, type) and issubclass(self.ctype, ctypes._Pointer)

    @property
    def is_output(self) -> bool:
        return self.direction in ("out", "inout")

    @property
    def pointee(self):
        return self.ctype._type_ if self.is_pointer else None

    @property
    def torch_dtype(self) -> Optional[torch.dtype]:
        """The dtype the tensor must have (None for scalars)."""
        return _POINTEE[self.pointee][0] if self.is_pointer else None

    def cuda_decl(self) -> str:
        """The parameter in a CUDA C declaration, e.g. ``const float* Q`` or ``int n``."""
        if self.is_pointer:
            const = "" if self.is_output else "const "
            return f"{const}{_POINTEE[self.pointee][1]}* {self.name}"
        return f"{_SCALAR[self.ctype][0]} {self.name}"

    def mojo_decl(self) -> str:
        if self.is_pointer:
            return f"{self.name}: UnsafePointer[{_POINTEE[self.pointee][2]}, MutExternalOrigin]"
        return f"{self.name}: {_SCALAR[self.ctype][1]}"

    def python_annotation(self, tensor: str) -> str:
        return tensor if self.is_pointer else _SCALAR[self.ctype][2]

    def cute_annotation(self) -> str:
        return "cute.Tensor" if self.is_pointer else _SCALAR[self.ctype][3]


def parse_signature(signature: Dict[str, tuple]) -> List[Param]:
    """Turn ``get_solve_signature()`` into checked ``Param``s, in order.

    Raises:
        SignatureError: an entry is not ``(ctypes type, "in" | "out" | "inout")`` or its type
            has no known tensor dtype.
    """
    params = []
    for name, entry in signature.items():
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise SignatureError(f"{name}: expected (ctypes type, direction), got {entry!r}")
        ctype, direction = entry
        if direction not in ("in", "out", "inout"):
            raise SignatureError(f"{name}: direction must be 'in', 'out' or 'inout'")
        param = Param(name, ctype, direction)
        known = _POINTEE if param.is_pointer else _SCALAR
        if (param.pointee if param.is_pointer else ctype) not in known:
            raise SignatureError(f"{name}: unsupported ctypes type {ctype!r}")
        params.append(param)
    return params


def declared_parameters(path: Path) -> Optional[List[str]]:
    """The parameter names of ``solve`` as a starter or solution file declares them (read from
    the source, never executed), or None when the file declares no ``solve``.

    Raises:
        SyntaxError: a Python file does not parse.
    """
    text = path.read_text()
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.name == "solve":
                return [a.arg for a in node.args.args]
        return None
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S) if path.suffix == ".cu" else text
    patterns = [r"\bdef\s+solve\s*\((.*?)\)\s*(?:raises|->|:)"]
    if path.suffix == ".cu":
        patterns = [r'extern\s+"C"[^{;]*?\bsolve\s*\((.*?)\)', r"\bvoid\s+solve\s*\((.*?)\)"]
    match = next((m for m in (re.search(p, text, re.S) for p in patterns) if m), None)
    if not match:
        return None
    if path.suffix == ".mojo":
        return re.findall(r"(\w+)\s*:", match.group(1))
    return [re.findall(r"\w+", piece)[-1] for piece in match.group(1).split(",") if piece.strip()]
