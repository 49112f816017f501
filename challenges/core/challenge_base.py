"""The challenge contract shared with the public LeetGPU challenge set, and its input specs.

A challenge folder's ``challenge.py`` defines ``class Challenge(ChallengeBase)``. Its generators
return dicts of keyword arguments for ``solve``: tensors, Python scalars, or the declarative
specs below, which the judge turns into tensors with ``materialize_test`` from a seed.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch

DType = Union[str, torch.dtype]


def resolve_dtype(dtype: DType) -> torch.dtype:
    """Map a dtype name such as ``"float32"`` (or a ``torch.dtype``) to a ``torch.dtype``.

    Raises:
        ValueError: the name is not a torch dtype.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype name such as 'float32'")
    return resolved


@dataclass(frozen=True)
class _Spec:
    shape: Tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        """Size of the materialized tensor in bytes."""
        count = 1
        for n in self.shape:
            count *= n
        return count * self.torch_dtype.itemsize


@dataclass(frozen=True)
class RandTensor(_Spec):
    """Uniform random input in ``[low, high)``."""

    low: float = 0.0
    high: float = 1.0
    dtype: DType = "float32"


@dataclass(frozen=True)
class RandnTensor(_Spec):
    """Normal random input with the given mean and standard deviation."""

    mean: float = 0.0
    std: float = 1.0
    dtype: DType = "float32"


@dataclass(frozen=True)
class RandIntTensor(_Spec):
    """Uniform random integers in ``[low, high)`` (``high`` exclusive, as ``torch.randint``)."""

    low: int
    high: int
    dtype: DType = "int32"


@dataclass(frozen=True)
class FullTensor(_Spec):
    """A tensor filled with one value (zeros, ones, ...)."""

    value: float = 0.0
    dtype: DType = "float32"


@dataclass(frozen=True)
class OutTensor(_Spec):
    """An output buffer of the given shape; its initial contents are unspecified."""

    dtype: DType = "float32"


InputSpec = (RandTensor, RandnTensor, RandIntTensor, FullTensor, OutTensor)


def _make_tensor(spec: _Spec, device: torch.device, gen: Optional[torch.Generator]):
    dtype = spec.torch_dtype
    if device.type == "meta":
        return torch.empty(spec.shape, dtype=dtype, device=device)
    if isinstance(spec, RandTensor):
        out = torch.empty(spec.shape, dtype=dtype, device=device)
        return out.uniform_(spec.low, spec.high, generator=gen)
    if isinstance(spec, RandnTensor):
        out = torch.empty(spec.shape, dtype=dtype, device=device)
        return out.normal_(spec.mean, spec.std, generator=gen)
    if isinstance(spec, RandIntTensor):
        wide = torch.randint(
            spec.low, spec.high, spec.shape, generator=gen, device=device, dtype=torch.int64
        )
        return wide.to(dtype)
    if isinstance(spec, FullTensor):
        return torch.full(spec.shape, spec.value, dtype=dtype, device=device)
    return torch.empty(spec.shape, dtype=dtype, device=device)


def materialize_test(test: Dict[str, Any], device: Union[str, torch.device], seed: int):
    """Turn one generated test dict into concrete ``solve`` keyword arguments on ``device``.

    Specs become tensors drawn from one ``torch.Generator`` seeded with ``seed`` (in key
    order, so a seed always replays the same inputs); tensors are moved to ``device`` (a tensor
    already there is kept, not copied); scalars pass through. On the ``meta`` device every
    tensor is shape-only, which checks shapes without allocating memory.

    Args:
        test: name -> tensor, spec or scalar, as a challenge generator returns it.
        device: torch device for the tensors ("cuda", "cpu", "meta").
        seed: seed for the random specs.

    Returns:
        A new dict with the same keys in the same order.
    """
    device = torch.device(device)
    gen = None
    if device.type != "meta" and any(isinstance(v, InputSpec) for v in test.values()):
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
    out = {}
    for key, value in test.items():
        if isinstance(value, InputSpec):
            out[key] = _make_tensor(value, device, gen)
        elif isinstance(value, torch.Tensor):
            out[key] = value.to(device)
        else:
            out[key] = value
    return out


class ChallengeBase(ABC):
    """One challenge: a reference, the ``solve`` signature and the test generators.

    Class attributes: ``name`` (display name), ``atol`` and ``rtol`` (the tolerance of
    ``torch.allclose`` against the reference), ``num_gpus`` and ``access_tier`` ("free").
    """

    name: str
    atol: float
    rtol: float
    num_gpus: int
    access_tier: str

    def __init__(self, device: str = "cuda", **attributes):
        # older public challenges pass their attributes here: name=..., atol=..., rtol=...
        self.device = device
        for key, value in attributes.items():
            setattr(self, key, value)

    @abstractmethod
    def reference_impl(self, *args, **kwargs):
        """Compute the expected result into the "out" tensors, given ``solve``'s arguments."""

    @abstractmethod
    def get_solve_signature(self) -> Dict[str, tuple]:
        """``solve``'s parameters in order: name -> (ctypes type, "in" | "out" | "inout")."""

    @abstractmethod
    def generate_example_test(self) -> Dict[str, Any]:
        """The example shown in ``challenge.html``: one dict of ``solve`` keyword arguments."""

    @abstractmethod
    def generate_functional_test(self):
        """A list of dicts of ``solve`` keyword arguments checked for correctness."""

    @abstractmethod
    def generate_performance_test(self) -> Dict[str, Any]:
        """One dict of ``solve`` keyword arguments (tensors or specs) used for timing."""

    def reference_impl_jax(self, *args, **kwargs):
        """Optional: the reference in JAX. Takes the inputs without the "out" parameters
        (arrays and scalars, in signature order) and returns the output array.

        Raises:
            NotImplementedError: the challenge has no JAX reference.
        """
        raise NotImplementedError(f"{type(self).__name__} has no JAX reference")
