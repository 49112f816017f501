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


# -- what a submission declares, and the ABI rule ---------------------------------------------
#
# ``solve`` is called by position, as the C ABI passes arguments: what must agree with the
# signature is the count and each parameter's type (a pointer to the tensor's element type,
# const or not; the scalar's own type). Names are free; a different name is a note. A name the
# signature gives to another position is an error: that parameter would receive the other
# argument.

# C spellings (qualifiers removed) -> canonical type, the torch dtype's name
_C_TYPES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "__half": "float16",
    "__nv_bfloat16": "bfloat16",
    "nv_bfloat16": "bfloat16",
    "bool": "bool",
    "char": "int8",
    "signed char": "int8",
    "int8_t": "int8",
    "unsigned char": "uint8",
    "uint8_t": "uint8",
    "short": "int16",
    "short int": "int16",
    "int16_t": "int16",
    "unsigned short": "uint16",
    "uint16_t": "uint16",
    "int": "int32",
    "signed": "int32",
    "signed int": "int32",
    "int32_t": "int32",
    "unsigned": "uint32",
    "unsigned int": "uint32",
    "uint32_t": "uint32",
    "long": "int64",
    "long int": "int64",
    "long long": "int64",
    "long long int": "int64",
    "int64_t": "int64",
    "unsigned long": "uint64",
    "unsigned long long": "uint64",
    "uint64_t": "uint64",
    "size_t": "uint64",
    "void": "void",
}
_C_QUALIFIERS = {"const", "volatile", "restrict", "__restrict", "__restrict__", "struct"}
# canonical type -> how the generated C code spells it
C_SPELLING = {
    "float32": "float",
    "float64": "double",
    "float16": "__half",
    "bfloat16": "__nv_bfloat16",
    "bool": "bool",
    "int8": "signed char",
    "uint8": "unsigned char",
    "int16": "short",
    "uint16": "unsigned short",
    "int32": "int",
    "uint32": "unsigned int",
    "int64": "long long",
    "uint64": "unsigned long long",
    "void": "void",
}
_MOJO_TYPES = {
    "Float16": "float16",
    "BFloat16": "bfloat16",
    "Float32": "float32",
    "Float64": "float64",
    "Bool": "bool",
    "Int8": "int8",
    "UInt8": "uint8",
    "Int16": "int16",
    "UInt16": "uint16",
    "Int32": "int32",
    "UInt32": "uint32",
    "Int64": "int64",
    "UInt64": "uint64",
    "Int": "int64",  # Mojo's Int is as wide as a pointer
    "UInt": "uint64",
}
_MOJO_POINTERS = {"UnsafePointer", "LegacyUnsafePointer", "OpaquePointer"}
_MOJO_CONVENTIONS = {"owned", "mut", "read", "ref", "var", "inout", "borrowed", "deinit"}
_SCALAR_ABI = {
    ctypes.c_int: "int32",
    ctypes.c_int32: "int32",
    ctypes.c_uint: "uint32",
    ctypes.c_int64: "int64",
    ctypes.c_long: "int64",
    ctypes.c_float: "float32",
    ctypes.c_double: "float64",
}
# Python annotations name a class of scalar, not a width
INTEGER, FLOATING = "an integer", "a floating-point number"
ANY_ELEMENT = "any"  # a Python tensor annotation: the dtype is not part of it


def abi_type(param: Param) -> tuple:
    """``(kind, element)`` the ABI gives ``param``: ``("pointer", "float32")``, ``("scalar",
    "int32")``; the element is the torch dtype's name."""
    if param.is_pointer:
        return "pointer", str(param.torch_dtype).replace("torch.", "")
    return "scalar", _SCALAR_ABI[param.ctype]


@dataclass(frozen=True)
class DeclaredParam:
    """One parameter of ``solve`` as the submission declares it.

    Attributes:
        name: its name (None where a C declaration leaves it out).
        kind: "pointer", "scalar" or "other" (a reference, an array of arrays); None where the
            declaration says nothing (an unannotated Python parameter).
        element: the canonical type pointed to or passed ("float32", "int32", ...), INTEGER or
            FLOATING for a Python ``int``/``float`` annotation, None where unknown.
        text: the parameter as written.
    """

    name: Optional[str]
    kind: Optional[str]
    element: Optional[str]
    text: str


@dataclass(frozen=True)
class Declaration:
    """``solve`` as a source file declares it (its definition where it has one).

    Attributes:
        params: the parameters, in order.
        text: the declaration on one line, e.g. ``void solve(const float* x, int n)``.
        line: the 1-based line of ``solve`` in the file.
        c_linkage: for C and C++: whether the declaration itself says ``extern "C"``.
        variadic: a Python ``*args`` takes any number of further arguments.
    """

    params: List[DeclaredParam]
    text: str
    line: int
    c_linkage: bool = False
    variadic: bool = False


_C_TYPE_WORDS = {word for key in _C_TYPES for word in key.split()}
_SOLVE_C = re.compile(
    r'(?P<prefix>(?:\bextern\s+"C"\s*)?(?:\b(?:__host__|static|inline)\s+)*)'
    r"\bvoid\s+solve\s*\((?P<params>[^()]*)\)\s*(?P<end>[{;])"
)
_SOLVE_MOJO = re.compile(r"\b(?:def|fn)\s+solve\s*(?:\[[^\]]*\])?\s*\(")


def without_c_comments(text: str) -> str:
    """C/C++ source with its comments blanked out, every newline kept (line numbers hold)."""
    return re.sub(
        r"//[^\n]*|/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S
    )


def _split_top_level(text: str) -> List[str]:
    """Split a parameter list at the commas outside brackets."""
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def parse_c_type(text: str) -> tuple:
    """``(kind, element)`` of a C/C++ parameter type: ``const float* __restrict__`` ->
    ``("pointer", "float32")``, ``int`` -> ``("scalar", "int32")``; the element is None for a
    type the judge does not know (a typedef of the file's own, a struct), the kind "other" for
    a reference or a pointer to a pointer."""
    text = re.sub(r"\bstd::", "", text)
    stars = text.count("*")
    if "&" in text or stars > 1:
        return "other", None
    words = [w for w in re.findall(r"[A-Za-z_]\w*", text) if w not in _C_QUALIFIERS]
    return ("pointer" if stars else "scalar"), _C_TYPES.get(" ".join(words))


def _c_param(piece: str) -> DeclaredParam:
    piece = " ".join(piece.split("=")[0].split())
    arrays = len(re.findall(r"\[[^\]]*\]", piece))  # float x[] is a pointer
    core = re.sub(r"\[[^\]]*\]", "", piece).strip()
    name = None
    last = re.search(r"([A-Za-z_]\w*)\s*$", core)
    if last and last.group(1) not in _C_TYPE_WORDS | _C_QUALIFIERS:
        before = [w for w in re.findall(r"[A-Za-z_]\w*", core[: last.start()])]
        if any(w not in _C_QUALIFIERS for w in before):
            name, core = last.group(1), core[: last.start()]
    kind, element = parse_c_type(core + "*" * arrays)
    return DeclaredParam(name, kind, element, piece)


def _statement_before(code: str, match) -> str:
    """The text from the end of the previous statement or block to ``match``."""
    before = code[: match.start()]
    return before[max(before.rfind(";"), before.rfind("}"), before.rfind("{")) + 1 :]


def _c_declaration(text: str) -> Optional[Declaration]:
    code = without_c_comments(text)
    # a kernel named solve is not the host function the judge calls
    matches = [m for m in _SOLVE_C.finditer(code) if "__global__" not in _statement_before(code, m)]
    if not matches:
        return None
    match = next((m for m in matches if m.group("end") == "{"), matches[0])
    params = [_c_param(p) for p in _split_top_level(match.group("params"))]
    if len(params) == 1 and params[0].text == "void":
        params = []
    prefix = " ".join(match.group("prefix").split())
    found = f"{prefix + ' ' if prefix else ''}void solve({', '.join(p.text for p in params)})"
    line = code.count("\n", 0, match.start("params")) + 1
    return Declaration(params, found, line, c_linkage='"C"' in prefix)


def _mojo_type(text: str) -> tuple:
    text = text.strip()
    head = re.match(r"(\w+)\s*(?:\[(.*)\])?$", text, re.S)
    if not head:
        return "other", None
    name, args = head.group(1), head.group(2)
    if name in _MOJO_POINTERS:
        if name == "OpaquePointer":
            return "pointer", "void"
        inner = [a for a in _split_top_level(args or "") if "=" not in a and "Origin" not in a]
        return "pointer", _mojo_type(inner[0])[1] if inner else None
    if name in ("Scalar", "SIMD") and args:
        dtype = re.search(r"DType\.(\w+)", args)
        width = _split_top_level(args)[1:] or ["1"]
        if dtype and width[0].strip() == "1":
            return "scalar", dtype.group(1)
        return "other", None
    return "scalar", _MOJO_TYPES.get(name)


def _mojo_declaration(text: str) -> Optional[Declaration]:
    code = re.sub(r"#[^\n]*", "", text)
    match = _SOLVE_MOJO.search(code)
    if not match:
        return None
    depth, end = 1, match.end()
    while end < len(code) and depth:
        depth += {"(": 1, ")": -1}.get(code[end], 0)
        end += 1
    params = []
    for piece in _split_top_level(code[match.end() : end - 1]):
        if piece in ("*", "/") or ":" not in piece:
            continue
        name, _, type_text = piece.partition(":")
        words = name.split()
        kind, element = _mojo_type(type_text.split("=")[0])
        params.append(
            DeclaredParam(words[-1] if words else None, kind, element, " ".join(piece.split()))
        )
    line = code.count("\n", 0, match.start()) + 1
    found = f"def solve({', '.join(p.text for p in params)})"
    return Declaration(params, found, line)


def _python_annotation(node) -> tuple:
    if node is None:
        return None, None
    text = ast.unparse(node)
    leaf = text.split(".")[-1].split("[")[0]
    if "Tensor" in leaf or "Array" in leaf or leaf == "ndarray":
        return "pointer", ANY_ELEMENT
    if leaf in ("int", "bool"):
        return "scalar", INTEGER
    if leaf == "float":
        return "scalar", FLOATING
    cute = {"Int32": "int32", "Uint32": "uint32", "Int64": "int64", "Uint64": "uint64"}
    cute.update({"Float32": "float32", "Float64": "float64", "Float16": "float16"})
    if leaf in cute:
        return "scalar", cute[leaf]
    return None, None  # Constexpr, a type variable: says nothing about the ABI


def _python_declaration(text: str) -> Optional[Declaration]:
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "solve":
            args = node.args.posonlyargs + node.args.args
            params = [
                DeclaredParam(a.arg, *_python_annotation(a.annotation), ast.unparse(a))
                for a in args
            ]
            found = f"def solve({ast.unparse(node.args)})"
            return Declaration(params, found, node.lineno, variadic=node.args.vararg is not None)
    return None


def declared_solve(path: Path) -> Optional[Declaration]:
    """``solve`` as a starter or solution file declares it, read from the source and never
    executed; None when the file declares no ``solve``.

    Raises:
        SyntaxError: a Python file does not parse.
    """
    text = path.read_text()
    if path.suffix == ".py":
        return _python_declaration(text)
    if path.suffix in (".cu", ".cuh", ".cpp", ".h"):
        return _c_declaration(text)
    return _mojo_declaration(text)


def declared_parameters(path: Path) -> Optional[List[str]]:
    """The parameter names of ``solve`` as ``path`` declares it (an unnamed C parameter is
    ``""``), or None when the file declares no ``solve``.

    Raises:
        SyntaxError: a Python file does not parse.
    """
    declaration = declared_solve(path)
    return None if declaration is None else [p.name or "" for p in declaration.params]


_FRIENDLY = {
    "float32": "float",
    "float64": "double",
    "float16": "half",
    "int8": "int8_t",
    "uint8": "uint8_t",
    "int16": "int16_t",
    "uint16": "uint16_t",
    "int32": "int",
    "uint32": "unsigned int",
    "int64": "int64_t",
    "uint64": "uint64_t",
}


def _describe_abi(kind: str, element: str) -> str:
    name = _FRIENDLY.get(element, element)
    return f"a pointer to {name} (const or not)" if kind == "pointer" else name


def _type_problem(position: int, expected: Param, found: DeclaredParam) -> Optional[str]:
    """Why ``found`` cannot receive ``expected``'s argument, or None when it can."""
    kind, element = abi_type(expected)
    if found.kind is None:
        return None  # an unannotated Python parameter: nothing to check
    want = f"parameter {position} is `{found.text}`, expected {_describe_abi(kind, element)}"
    if found.kind != kind:
        return want
    if found.element is None:
        return want + " (a type the judge does not know)"
    if found.element == ANY_ELEMENT:
        return None
    if found.element == INTEGER:
        ok = element.startswith(("int", "uint", "bool"))
    elif found.element == FLOATING:
        ok = element.startswith(("float", "bfloat"))
    else:
        ok = found.element == element
    return None if ok else want


def compare_declaration(expected: List[Param], declaration: Declaration) -> tuple:
    """Check a declared ``solve`` against the parameters it must take, by the ABI rule.

    Args:
        expected: the parameters ``solve`` takes, in order (for JAX, without the outputs).
        declaration: what the file declares.

    Returns:
        ``(problems, renamed)``: the mismatches that make it a build error (a count, a type,
        a name the signature gives to another position), and ``(position, found, expected)``
        for each parameter whose name alone differs.
    """
    problems, renamed = [], []
    found = declaration.params
    if len(found) != len(expected) and not (declaration.variadic and len(found) < len(expected)):
        return [f"{len(found)} parameters, the signature has {len(expected)}"], []
    names = {p.name: i for i, p in enumerate(expected)}
    for i, (want, have) in enumerate(zip(expected, found)):
        problem = _type_problem(i + 1, want, have)
        if problem:
            problems.append(problem)
        if have.name is None or have.name == want.name:
            continue
        if have.name in names:
            problems.append(
                f"parameter {i + 1} is named `{have.name}`, the signature's parameter "
                f"{names[have.name] + 1}: arguments are passed by position, so it would "
                f"receive `{want.name}`"
            )
        else:
            renamed.append((i + 1, have.name, want.name))
    return problems, renamed


def expected_declaration(language: str, params: List[Param]) -> str:
    """How ``solve`` is declared in ``language`` for these parameters (those it takes)."""
    if language == "cuda":
        return f'extern "C" void solve({", ".join(p.cuda_decl() for p in params)})'
    if language == "mojo":
        return f"def solve({', '.join(p.mojo_decl() for p in params)}) raises"
    if language == "cute":
        return f"def solve({', '.join(f'{p.name}: {p.cute_annotation()}' for p in params)})"
    tensor = "jax.Array" if language == "jax" else "torch.Tensor"
    args = ", ".join(f"{p.name}: {p.python_annotation(tensor)}" for p in params)
    return f"def solve({args})" + (" -> jax.Array" if language == "jax" else "")
