"""The timing path, bound before the submission loads and verified unchanged after every call.

The worker times a call with code that runs in the submission's own process (CUPTI through
torch.profiler, CUDA events, synchronize, perf_counter, the reply pipe), so Python code in the
submission could replace any of it: wrap ``judge.timing.DeviceActivity`` to shrink the span,
swap ``torch.Tensor.sum`` to skip the L2 flush, rebind ``time.perf_counter``. Before the
submission is imported, ``TimingPathGuard`` records every callable of ``GUARDED_MODULES`` (and
of the classes they define), with each Python function's code, defaults and closure; ``changes``
lists what differs since then. The worker runs it after every call, and any change is the
verdict ``TIMING TAMPERED``.

Names a module gains are not changes (imports add submodules as attributes); data values (flags,
counters) are not guarded, only what the timing path calls. Out of reach, and said so in
README.md: native code (ctypes included), which can patch CUPTI or the interpreter itself, and
code that rewrites this guard's own records through the garbage collector. The judge's
cross-checks from outside the worker still bound those: a span longer than the round trip the
judge saw, or shorter than the streaming-read floor allows, is rejected.
"""

import importlib
import sys
import types
from typing import Dict, List, Tuple

GUARDED_MODULES = (
    "builtins",
    "time",
    "os",
    "json",
    "select",
    "judge.timing",
    "judge.worker",
    "judge.channel",
    "judge.integrity",
    "torch.cuda",
    "torch.cuda.streams",
    "torch._tensor",
    "torch.profiler",
    "torch.profiler.profiler",
    "torch.autograd",
    "torch.autograd.profiler",
    "torch.autograd.profiler_util",
    "torch._C._autograd",
)

Key = Tuple[str, ...]


def _function_parts(func) -> tuple:
    """What makes a Python function behave as it does; a builtin is only its identity."""
    if isinstance(func, (staticmethod, classmethod)):
        func = func.__func__
    if isinstance(func, property):
        return tuple(_function_parts(f) for f in (func.fget, func.fset, func.fdel) if f)
    if isinstance(func, types.FunctionType):
        cells = tuple(c.cell_contents for c in func.__closure__ or () if _cell_set(c))
        return (func.__code__, func.__defaults__, func.__kwdefaults__, cells)
    return ()


def _same(a, b) -> bool:
    """Identity, element by element: no ``==`` runs on whatever a closure holds."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b


def _cell_set(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _defined_in(cls: type, modules) -> bool:
    """Whether the class belongs to the timing path: defined in a guarded module, or in torch
    or the judge (torch.Tensor says its module is "torch")."""
    module = getattr(cls, "__module__", None) or ""
    return module in modules or module.split(".")[0] in ("torch", "judge")


def _guarded(value) -> bool:
    return callable(value) or isinstance(
        value, (types.ModuleType, staticmethod, classmethod, property)
    )


class TimingPathGuard:
    """A record of the timing path, taken at construction (before the submission loads)."""

    def __init__(self, modules=GUARDED_MODULES):
        self.records: Dict[Key, tuple] = {}
        self.classes: Dict[str, Tuple[type, frozenset]] = {}  # name -> (class, its own keys)
        self.trace = (sys.gettrace(), sys.getprofile())
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            self._record(("sys.modules", name), module)
            self._record_namespace(name, vars(module), modules)

    def _record(self, key: Key, value):
        self.records[key] = (value, _function_parts(value))

    def _record_namespace(self, owner: str, namespace, modules):
        for attr, value in list(namespace.items()):
            if not _guarded(value):
                continue
            self._record((owner, attr), value)
            if isinstance(value, type) and _defined_in(value, modules):
                self.classes[f"{owner}.{attr}"] = (value, frozenset(vars(value)))
                for member, item in list(vars(value).items()):
                    if _guarded(item):
                        self._record((f"{owner}.{attr}", member), item)

    def changes(self) -> List[str]:
        """What differs from the record: one line per replaced, removed or rewritten callable;
        empty when the timing path is as it was."""
        found = []
        if not _same((sys.gettrace(), sys.getprofile()), self.trace):
            found.append("a trace or profile hook was installed (sys.settrace / sys.setprofile)")
        for name, (cls, keys) in self.classes.items():
            for attr in set(vars(cls)) - keys:
                if any(attr in vars(base) for base in cls.__mro__[1:]):
                    found.append(f"{name}.{attr} now shadows the inherited one")
        for key, (value, parts) in self.records.items():
            owner, attr = key
            if owner == "sys.modules":
                current = sys.modules.get(attr)
                if current is not value:
                    found.append(f"the module {attr} was replaced in sys.modules")
                continue
            namespace = self._namespace(owner)
            if namespace is None:
                continue
            if attr not in namespace:
                found.append(f"{owner}.{attr} was removed")
            elif namespace[attr] is not value:
                found.append(f"{owner}.{attr} was replaced")
            elif not _same(_function_parts(value), parts):
                found.append(f"{owner}.{attr} was rewritten in place (code, defaults or closure)")
        return found

    def _namespace(self, owner: str):
        module = self.records.get(("sys.modules", owner))
        if module is not None:
            return vars(module[0])
        module_name, _, class_name = owner.rpartition(".")
        holder = self.records.get((module_name, class_name))
        return vars(holder[0]) if holder is not None else None
