"""Comparing a submission's output with the reference output, element by element, and
inputs with their copies bit by bit."""

from dataclasses import asdict, dataclass
from typing import List, Optional

import torch


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors hold the same bytes (shape and dtype included): unlike
    ``torch.equal``, a NaN equals the same NaN, and -0.0 differs from 0.0, so an input that
    holds NaN is not reported as modified, and one a submission overwrote with -0.0 is."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


@dataclass
class Comparison:
    """How one output tensor compares with the expected one under ``atol``/``rtol``.

    An element matches when ``|actual - expected| <= atol + rtol * |expected|`` (the rule of
    ``torch.isclose``) and ``actual`` is finite.
    """

    name: str
    passed: bool
    max_abs_error: float
    max_rel_error: float
    mismatches: int
    numel: int
    first_mismatch: Optional[List[int]] = None  # index into the output's shape
    expected_value: Optional[float] = None
    actual_value: Optional[float] = None
    reason: str = ""
    diagnosis: Optional[str] = None  # the likely cause and fix (judge.diagnose), if known

    def to_dict(self) -> dict:
        return asdict(self)


def compare_output(
    name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float
) -> Comparison:
    """Compare one output tensor with its expected value.

    Fails on: a shape or dtype change, any NaN or Inf (outputs are poisoned with NaN, so an
    unwritten element shows as NaN), any element outside tolerance, and an all-zero output
    where the expected output is not all zero (which tolerance alone could let through for
    tiny expected values).
    """
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return Comparison(
            name,
            False,
            float("inf"),
            float("inf"),
            expected.numel(),
            expected.numel(),
            reason=f"output is {tuple(actual.shape)} {actual.dtype}, expected "
            f"{tuple(expected.shape)} {expected.dtype}",
        )
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    finite = torch.isfinite(a)
    diff = torch.where(finite, (a - e).abs(), torch.full_like(a, float("inf")))
    bad = ~finite | (diff > atol + rtol * e.abs())
    rel = diff / e.abs().clamp_min(torch.finfo(torch.float32).tiny)
    count = int(bad.sum())
    result = Comparison(
        name,
        count == 0,
        float(diff.max()) if diff.numel() else 0.0,
        float(rel.max()) if rel.numel() else 0.0,
        count,
        e.numel(),
    )
    if count:
        flat = int(bad.flatten().nonzero()[0])
        result.first_mismatch = (
            list(torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else []
        )
        result.first_mismatch = [int(i) for i in result.first_mismatch]
        result.expected_value = float(e.flatten()[flat])
        result.actual_value = float(a.flatten()[flat])
        non_finite = int((~finite).sum())
        result.reason = (
            f"{non_finite} NaN/Inf elements (unwritten or overflowed)"
            if non_finite
            else f"{count} of {e.numel()} elements outside atol={atol:g}, rtol={rtol:g}"
        )
    elif e.numel() and bool((a == 0).all()) and not bool((e == 0).all()):
        result.passed = False
        result.reason = "output is all zeros but the expected output is not"
    return result
