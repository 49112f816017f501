"""Likely causes of a failed test, read from the failure's pattern: one line each, with the fix.

Wrong answers (``diagnose_outputs``), checked in this order, the first that fits is reported:

- a missing tail: the mismatches are exactly the positions past the last full block of a
  length that is not a multiple of the block (``head_dim`` 40 computed in blocks of 32);
- unwritten elements: elements still hold the NaN (for integers, the minimum) the judge
  filled the output with, bit for bit, so ``solve`` never wrote them (a NaN computed on the
  GPU or an x86 CPU has other bits);
- softmax without max subtraction: the output is NaN/Inf where, and only where, the reference
  computed with ``exp(x) / sum(exp(x))`` overflows too (the scores are large);
- a GQA head mapping of ``h % num_kv_heads``: applies when the inputs have ``num_q_heads`` and
  ``num_kv_heads``; the reference recomputed with query head ``h`` reading KV head
  ``h % num_kv_heads`` matches the output (GQA reads KV head ``h // group``);
- TF32 rounding: small relative errors (median 2e-5 to 2e-3) on almost every element, what a
  matrix product with float32 operands rounded to TF32's 10-bit mantissa gives (``tl.dot`` on
  sm_80 and newer, torch with ``allow_tf32``).

Runtime errors (``diagnose_error``): known messages of Triton and torch, e.g. a ``tl.arange``
whose length is not a power of two.

Nothing here is specific to a challenge: the reference is re-run on the test's own inputs.
"""

import contextlib
import re
from typing import Dict, List, Optional

import torch

from judge.compare import compare_output
from judge.signature import Param

TF32_MEDIAN = (2e-5, 2e-3)  # median relative error of TF32 products in attention outputs
TF32_MAX = 0.1  # large scores amplify the rounding of Q and K through the softmax
FP32_NOISE = 2e-6  # relative error float32 accumulation stays below
TF32_SPREAD = 0.85  # fraction of elements past float32 noise: "almost all"
TF32_MAX_BIAS = 0.6  # |mean error| / rms error: rounding errors take both signs
TF32_MAX_CORRELATION = 0.7  # |corr(error, expected)|: rounding is not a scale factor
MIN_BLOCK = 4

TF32_FIX = {
    "triton": 'tl.dot(a, b, input_precision="ieee") (Triton uses TF32 on sm_80 and newer)',
    "pytorch": "torch.backends.cuda.matmul.allow_tf32 = False (and cudnn.allow_tf32), or "
    "float32 elementwise products",
    "jax": 'precision="highest" on jnp.dot/einsum (the default rounds to TF32 on GPUs)',
    "cuda": "float32 FMA instead of TF32 MMA, or 3xTF32 (split each operand into big + small)",
    "cute": "a float32 MMA or FMA instead of TF32, or 3xTF32",
}


def diagnose_outputs(
    challenge,
    params: List[Param],
    inputs: Dict[str, object],
    expected: Dict[str, torch.Tensor],
    actual: Dict[str, torch.Tensor],
    language: Optional[str] = None,
    include_passing: bool = False,
) -> Dict[str, str]:
    """The likely cause of each failed output, where a known pattern fits.

    Args:
        challenge: the loaded challenge (``reference_impl``, ``atol``, ``rtol``).
        params: its signature.
        inputs: the test's keyword arguments as generated (tensors on the judge's device,
            scalars); not modified.
        expected: output name -> the reference's output.
        actual: output name -> the submission's output (same shape and dtype).
        language: the submission's language, to name the fix in its terms.
        include_passing: check outputs within tolerance too (to show a pattern does not fire
            on correct outputs).

    Returns:
        Output name -> one line: the likely cause and the fix. Outputs that passed or fit no
        pattern are left out.
    """
    found = {}
    reruns = _Reruns(challenge, params, inputs)
    for name, got in actual.items():
        want = expected[name].detach().cpu()
        got = got.detach().cpu()
        if got.shape != want.shape or got.dtype != want.dtype:
            continue
        bad = _mismatches(got, want, challenge.atol, challenge.rtol)
        if not (include_passing or bool(bad.any())):
            continue
        for check in (_missing_tail, _unwritten, _softmax_overflow, _gqa_mapping, _tf32):
            try:
                line = check(name, got, want, bad, inputs, reruns, challenge, language)
            except Exception:  # a diagnosis is a hint: never let it fail the judging
                line = None
            if line:
                found[name] = line
                break
    return found


def _mismatches(got, want, atol, rtol) -> torch.Tensor:
    a, e = got.to(torch.float64), want.to(torch.float64)
    return ~torch.isfinite(a) | ((a - e).abs() > atol + rtol * e.abs())


def _region(mask: torch.Tensor, name: str) -> str:
    """The bounding box of ``mask``'s True elements as a slice, e.g. ``output[8:16, :]``."""
    where = mask.nonzero()
    parts = []
    for axis, size in enumerate(mask.shape):
        low, high = int(where[:, axis].min()), int(where[:, axis].max()) + 1
        parts.append(":" if (low, high) == (0, size) else f"{low}:{high}")
    if set(parts) == {":"}:
        return f"all of {name}"
    return f"{name}[{', '.join(parts)}]"


def _size_name(inputs: Dict[str, object], length: int) -> str:
    names = [k for k, v in inputs.items() if isinstance(v, int) and v == length]
    return f"{names[0]} = {length}" if len(names) == 1 else f"length {length}"


# -- the checks: each returns a line or None --------------------------------------------------


def _missing_tail(name, got, want, bad, inputs, reruns, challenge, language):
    views = [(axis, bad.movedim(axis, 0).reshape(bad.shape[axis], -1)) for axis in range(bad.dim())]
    views.reverse()  # the innermost axis first: a head_dim tail before a head tail
    if bad.dim() > 1:
        views.append((None, bad.reshape(-1, 1)))
    if not bool(bad.any()):
        return None
    for axis, rows in views:
        length = rows.shape[0]
        hit = rows.any(dim=1)
        start = int(hit.nonzero()[0])
        if start == 0 or not bool(hit[start:].all()) or float(rows[start:].float().mean()) < 0.5:
            continue
        # the block widths for which start is the end of the last full block
        blocks = [
            1 << b
            for b in range(MIN_BLOCK.bit_length() - 1, start.bit_length())
            if start % (1 << b) == 0 and length % (1 << b) and start == length >> b << b
        ]
        if not blocks:
            continue
        if axis is None:
            where, size = f"{name}.flatten()[{start}:]", f"{length} elements"
        else:
            index = [":"] * bad.dim()
            index[axis] = f"{start}:"
            where, size = f"{name}[{', '.join(index)}]", _size_name(inputs, length)
        return (
            f"only {where} is wrong: the last {length - start} positions of {size}, past the "
            f"last full block of {' or '.join(map(str, blocks))}; a missing tail: mask the last "
            f"partial block (offsets < {length}) and launch cdiv({length}, block) blocks"
        )
    return None


def _softmax_overflow(name, got, want, bad, inputs, reruns, challenge, language):
    broken = ~torch.isfinite(got.to(torch.float64)) & torch.isfinite(want.to(torch.float64))
    poison = _poison_bits(got.dtype)
    if poison is not None and got.dtype.is_floating_point:
        broken &= got.view(poison.dtype) != poison  # computed, not left unwritten
    if not bool(broken.any()):
        return None
    naive = reruns.naive_softmax()
    if naive is None or name not in naive:
        return None
    overflow = ~torch.isfinite(naive[name].to(torch.float64))
    if not bool(overflow.any()):
        return None
    inside = float((broken & overflow).sum()) / float(broken.sum())
    elsewhere = bad & ~overflow
    if inside < 0.9 or float(elsewhere.sum()) > 0.01 * float((~overflow).sum()):
        return None
    return (
        f"NaN/Inf only where the scores are large ({int(broken.sum())} elements, "
        f"{_region(broken, name)}): exp() overflows float32 past 88.7 without max "
        "subtraction; subtract the row's (running) maximum before exp, as an online softmax does"
    )


def _poison_bits(dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The bit pattern the judge fills an output with (NaN, or the minimum integer)."""
    if dtype.is_floating_point:
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
        return torch.full((1,), float("nan"), dtype=dtype).view(bits)
    if dtype == torch.bool:
        return None
    return torch.full((1,), torch.iinfo(dtype).min, dtype=dtype)


def _unwritten(name, got, want, bad, inputs, reruns, challenge, language):
    poison = _poison_bits(got.dtype)
    if poison is None:
        return None
    bits = got.view(poison.dtype) if got.dtype.is_floating_point else got
    left = (bits == poison) & bad
    if not bool(left.any()):
        return None
    count, total = int(left.sum()), left.numel()
    filled = "NaN" if got.dtype.is_floating_point else "minimum integer"
    if count == total:
        return (
            f"every element of {name} still holds the {filled} the judge filled it with: "
            "solve wrote nothing there (launched no kernel, or wrote another buffer)"
        )
    return (
        f"{count} of {total} elements ({_region(left, name)}) still hold the {filled} the "
        f"judge filled {name} with: solve never wrote them; make the grid (and each "
        "program's loop) cover every element"
    )


def _gqa_mapping(name, got, want, bad, inputs, reruns, challenge, language):
    mapped = reruns.modulo_heads()
    if mapped is None or name not in mapped:
        return None
    if not compare_output(name, got, mapped[name].cpu(), challenge.atol, challenge.rtol).passed:
        return None
    q, kv = reruns.head_counts
    return (
        f"the output matches query head h reading KV head h % {kv}; GQA gives each KV head a "
        f"group of {q // kv} consecutive query heads: KV head h // {q // kv} "
        "(h // (num_q_heads // num_kv_heads))"
    )


def _tf32_rounded(x: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32's 10 mantissa bits (to nearest, ties away from zero)."""
    bits = x.to(torch.float32).contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _tf32(name, got, want, bad, inputs, reruns, challenge, language):
    a, e = got.to(torch.float64).flatten(), want.to(torch.float64).flatten()
    if not bool(torch.isfinite(a).all()) or e.numel() < 8:
        return None
    fix = TF32_FIX.get(language) or "; ".join(TF32_FIX[k] for k in ("triton", "pytorch"))
    if got.dtype == torch.float32 and bool((a != e).any()):
        # a product with one operand exact (softmax weights of 1): the output is the expected
        # value rounded to TF32
        rounded = _tf32_rounded(want.flatten()).to(torch.float64)
        moved = rounded != e  # where TF32 cannot hold the expected value
        same = (a - rounded).abs() <= 1e-6 * rounded.abs() + 1e-30
        if float(moved.double().mean()) >= 0.5 and bool(same.all()):
            return (
                f"{name} equals the expected values rounded to TF32 (10-bit mantissa): a "
                f"matrix product rounded its float32 operands to TF32; fix: {fix}"
            )
    scale = float(e.pow(2).mean().sqrt())
    if scale == 0.0:
        return None
    rel = (a - e).abs() / (e.abs() + scale)
    median, worst = float(rel.median()), float(rel.max())
    spread = float((rel > FP32_NOISE).double().mean())
    if not (TF32_MEDIAN[0] <= median <= TF32_MEDIAN[1] and worst <= TF32_MAX):
        return None
    if spread < TF32_SPREAD:
        return None
    # rounding noise: neither a common offset nor a common scale of the expected values
    # (each estimate from n elements has a spread near 1/sqrt(n): tiny outputs pass)
    error = a - e
    noise = 3.0 / e.numel() ** 0.5
    rms = float(error.pow(2).mean().sqrt())
    if abs(float(error.mean())) > max(TF32_MAX_BIAS, noise) * rms:
        return None
    if float(e.std()) > 0:
        correlation = float(torch.corrcoef(torch.stack([error, e]))[0, 1])
        if abs(correlation) > max(TF32_MAX_CORRELATION, noise):
            return None
    return (
        f"small relative errors (median {median:.1e}, max {worst:.1e}) on {spread:.0%} of the "
        "elements: the profile of float32 matrix products rounded to TF32 (10-bit mantissa); "
        f"fix: {fix}"
    )


# -- re-running the reference -----------------------------------------------------------------


class _Reruns:
    """The reference re-run on the test's inputs under another hypothesis, computed once."""

    def __init__(self, challenge, params: List[Param], inputs: Dict[str, object]):
        self.challenge, self.params, self.inputs = challenge, params, inputs
        self._cache: Dict[str, Optional[dict]] = {}
        self.head_counts = _head_counts(inputs)

    def _run(self, inputs: Dict[str, object]) -> Dict[str, torch.Tensor]:
        kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        self.challenge.reference_impl(**kwargs)
        return {p.name: kwargs[p.name].cpu() for p in self.params if p.is_pointer and p.is_output}

    def naive_softmax(self) -> Optional[dict]:
        """The outputs with every torch softmax computed as exp(x) / sum(exp(x)); None when
        the reference calls no softmax."""
        if "naive" not in self._cache:
            calls = []
            with _naive_softmax(calls):
                outputs = self._run(self.inputs)
            self._cache["naive"] = outputs if calls else None
        return self._cache["naive"]

    def modulo_heads(self) -> Optional[dict]:
        """The outputs with query head h reading KV head h % num_kv_heads; None when the
        inputs have no GQA head counts (or the query heads cannot be found in the shapes)."""
        if "modulo" not in self._cache:
            self._cache["modulo"] = self._modulo_heads()
        return self._cache["modulo"]

    def _modulo_heads(self) -> Optional[dict]:
        if self.head_counts is None:
            return None
        q, kv = self.head_counts
        group = q // kv
        # the reference maps query head j to KV head j // group; feeding it the query of head
        # h = a * kv + b at position b * group + a makes that position read KV head b = h % kv
        position = torch.tensor([(h % kv) * group + h // kv for h in range(q)])
        inverse = torch.argsort(position)
        axes = _query_head_axes(self.inputs, self.params, q, kv)
        if not axes:
            return None
        permuted = dict(self.inputs)
        for key, axis in axes.items():
            value = self.inputs[key]
            if not any(p.name == key and p.is_output for p in self.params):
                permuted[key] = value.index_select(axis, inverse.to(value.device))
        outputs = self._run(permuted)
        return {k: v.index_select(axes[k], position) for k, v in outputs.items() if k in axes}


def _head_counts(inputs: Dict[str, object]) -> Optional[tuple]:
    """``(num_q_heads, num_kv_heads)`` from integer inputs named so, when GQA applies."""

    def pick(pattern):
        found = [v for k, v in inputs.items() if isinstance(v, int) and re.search(pattern, k)]
        return found[0] if len(found) == 1 else None

    q, kv = pick(r"q_heads|query_heads|heads_q"), pick(r"kv_heads|key_value_heads|heads_kv")
    if q is None or kv is None or not (q > kv > 1) or q % kv:
        return None
    return q, kv


def _query_head_axes(inputs, params, q: int, kv: int) -> Dict[str, int]:
    """Tensor name -> its query-head axis: an axis of size ``q`` at the index where the tensors
    with KV heads have their ``kv`` axis (so a batch of the same size is not taken for it)."""
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    kv_axes = {a for v in tensors.values() for a, n in enumerate(v.shape) if n == kv}
    axes = {}
    for key, value in tensors.items():
        found = [a for a, n in enumerate(value.shape) if n == q and (a in kv_axes or not kv_axes)]
        if len(found) == 1:
            axes[key] = found[0]
    outputs = [p.name for p in params if p.is_pointer and p.is_output]
    if not any(o in axes for o in outputs) or len(axes) == len(outputs):
        return {}
    return axes


@contextlib.contextmanager
def _naive_softmax(calls: list):
    """torch's softmax functions computed without max subtraction, within the block."""

    def naive(x, dim=None, *args, dtype=None, **kwargs):
        calls.append(dim)
        x = x if dtype is None else x.to(dtype)
        e = torch.exp(x)
        return e / e.sum(dim=dim, keepdim=True)

    def method(self, dim=None, *args, dtype=None, **kwargs):
        return naive(self, dim, dtype=dtype)

    targets = [
        (torch, "softmax", naive),
        (torch.nn.functional, "softmax", naive),
        (torch.special, "softmax", naive),
        (torch.Tensor, "softmax", method),
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]
    try:
        for owner, attr, replacement in targets:
            setattr(owner, attr, replacement)
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


# -- runtime errors ---------------------------------------------------------------------------

_ERRORS = [
    (
        r"arange's range must be a power of 2",
        "tl.arange needs a power-of-two length: take the block as triton.next_power_of_2(n) "
        "and mask the positions past n",
    ),
    (
        r"M >= 16, N >= 16 and K >= 16|dot.*(?:at least|>=) 16",
        "tl.dot needs every block dimension to be at least 16: pad the blocks and mask",
    ),
    (
        r"Torch not compiled with CUDA enabled|Found no NVIDIA driver",
        'solve puts a tensor on "cuda" but this run has no GPU: allocate on the inputs\' '
        "device (device=output.device)",
    ),
    (
        r"only 0-dimensional arrays can be converted to Python scalars(?s:.*)triton",
        "Triton 3.6's interpreter needs NumPy older than 2.4: pip install -e '.[triton]'",
    ),
    (
        r"illegal memory access|misaligned address",
        "a load or store outside its buffer (or misaligned): check every index against its "
        "tensor's size, and the masks of the last partial block",
    ),
]


def diagnose_error(detail: str) -> Optional[str]:
    """The likely cause and fix of a RUNTIME ERROR or CUDA ERROR from its text, or None."""
    block_pointers = re.search(r"[Bb]lock pointers have been removed|make_block_ptr", detail)
    if block_pointers:
        return _missing_construct("tl.make_block_ptr")
    for pattern, line in _ERRORS:
        if re.search(pattern, detail):
            return line
    return None


def _missing_construct(construct: str) -> str:
    try:
        import triton

        installed = f"the installed Triton {triton.__version__}"
    except ImportError:
        installed = "the installed Triton"
    return (
        f"{construct} is not in {installed}; Triton 3.6 (the GPU machines' release, and "
        "LeetGPU's) has it: pip install -e '.[triton]' installs it"
    )
