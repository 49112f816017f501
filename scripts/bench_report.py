"""The report of scripts/benchmark.py: its records, the rooflines of challenge 99, the
editorial targets and the markdown, all pure (no GPU): benchmark.py measures, this renders.

Units: times in ms (printed as us), bandwidths in GB/s (1e9 bytes/s), arithmetic in TFLOP/s
(1e12 FLOP/s); "% of the floor" is 100 x floor time / median time.
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

CHALLENGES = ("95", "96", "97", "98", "99")  # the challenges the benchmark covers
SWEPT = ("cuda", "triton")  # the languages the sweeps time
MATMUL_SIZE = 8192  # the peaks' square operands

# The matrix-product peaks measured in the run: key -> (what, operand dtype, allow_tf32)
PEAKS = {
    "fp32": ("CUDA cores (fp32)", torch.float32, False),
    "tf32": ("tensor cores (tf32)", torch.float32, True),
    "fp16": ("tensor cores (fp16)", torch.float16, False),
}

# 99's arithmetic per entry (a file of solutions/99_*/, else the baselines' label), the
# products each multiply-add takes and the peak they run at: the compute floor is
# products * FLOPs / peak. editorial.cu splits every fp32 operand into two fp16 halves and sums
# three fp16 tensor-core products (its header: "fp16x3"); editorial.triton.py does the same in
# tf32 (tl.dot's input_precision="tf32x3"). Everything else multiplies in fp32 on CUDA cores:
# the reference and torch.compile run with allow_tf32 off, solution.jax.py asks for
# precision="highest", the other solutions use plain fp32 arithmetic.
MLA_ARITHMETIC: Dict[str, Tuple[str, int, str]] = {
    "editorial.cu": ("fp16x3", 3, "fp16"),
    "editorial.triton.py": ("tf32x3", 3, "tf32"),
}
FP32_ARITHMETIC = ("fp32", 1, "fp32")


@dataclass(frozen=True)
class Floor:
    """The read floor at one size: ``medians_ms`` is each read kernel's median GPU span (ms)
    over ``nbytes``; the fastest kernel sets the floor. ``skipped``: "name: reason" for each
    read kernel left out."""

    nbytes: int
    medians_ms: Dict[str, float]
    skipped: Tuple[str, ...] = ()

    @property
    def kernel(self) -> str:
        """The read kernel that set the floor: the fastest."""
        return min(self.medians_ms, key=self.medians_ms.get)

    @property
    def ms(self) -> float:
        """The floor: the fastest read kernel's median, in ms."""
        return self.medians_ms[self.kernel]

    @property
    def gbps(self) -> float:
        """The floor's bandwidth in GB/s (1e9 bytes/s)."""
        return self.nbytes / self.ms / 1e6


@dataclass
class Entry:
    """One timed way to solve a challenge at one shape: a baseline (``file`` and ``language``
    None) or a file of solutions/<challenge>/. ``status`` is "ok" or "WRONG" after the check
    ("-" before), ``ms`` the median GPU span in ms, ``call(kwargs)`` runs it."""

    label: str
    file: Optional[str] = None
    language: Optional[str] = None
    status: str = "-"
    ms: float = math.nan
    call: Optional[Callable] = field(default=None, repr=False)

    def share(self, floor_ms: float) -> float:
        """% of a floor: 100 * floor / median."""
        return 100.0 * floor_ms / self.ms


@dataclass(frozen=True)
class Roofline:
    """99's two floors for one entry, in ms: the bandwidth floor (its bytes at the read
    floor's speed: the floor's median at the same bytes) and the compute floor of its
    ``arithmetic``."""

    arithmetic: str
    bandwidth_ms: float
    compute_ms: float

    @property
    def binding_ms(self) -> float:
        return max(self.bandwidth_ms, self.compute_ms)

    @property
    def binds(self) -> str:
        return "compute" if self.compute_ms >= self.bandwidth_ms else "bandwidth"


def compute_floor_ms(flops: int, products: int, peak_tflops: float) -> float:
    """The time ``flops`` operations take when each multiply-add costs ``products`` matrix
    products at ``peak_tflops`` (TFLOP/s): products * flops / peak, in ms."""
    return products * flops / (peak_tflops * 1e12) * 1e3


def roofline(name: str, flops: int, bandwidth_ms: float, peaks: Dict[str, float]) -> Roofline:
    """The floors of 99's entry ``name`` (a solution's file name or a baseline's label) by
    MLA_ARITHMETIC; ``peaks`` maps PEAKS' keys to TFLOP/s."""
    arithmetic, products, peak = MLA_ARITHMETIC.get(name, FP32_ARITHMETIC)
    compute_ms = compute_floor_ms(flops, products, peaks[peak])
    return Roofline(f"{arithmetic} on {PEAKS[peak][0]}", bandwidth_ms, compute_ms)


@dataclass(frozen=True)
class PeerRow:
    """A FlashInfer peer's result: its median (ms) and the floor at its own bytes, or why it
    was skipped."""

    label: str
    ms: Optional[float] = None
    floor: Optional[Floor] = None
    skipped: Optional[str] = None


@dataclass
class Table:
    """One challenge at its performance shape: ``rows`` are the entries (the reference and
    torch.compile first), ``moved`` the bytes a call moves, ``flops`` 99's operation count,
    ``rooflines`` 99's floors per entry label."""

    number: str
    name: str
    sizes: str
    moved: int
    floor: Floor
    rows: List[Entry]
    flops: Optional[int] = None
    rooflines: Dict[str, Roofline] = field(default_factory=dict)
    peers: List[PeerRow] = field(default_factory=list)

    def baseline_ms(self, label: str) -> float:
        """The median (ms) of the baseline ``label`` (NaN where it is missing)."""
        return next((e.ms for e in self.rows if e.label == label), math.nan)


@dataclass
class Point:
    """One sweep point: the swept size's ``value``, tokens per sequence (97: their mean), the
    bytes moved, the floor there and the solutions' entries (99: their rooflines)."""

    value: int
    tokens: int
    moved: int
    floor: Floor
    rows: List[Entry]
    rooflines: Dict[str, Roofline] = field(default_factory=dict)


def us(ms: float) -> str:
    """A time in ms as microseconds, one decimal."""
    return f"{ms * 1e3:.1f}"


def hbm_share(nbytes: int, ms: float, hbm_gbps: Optional[float]) -> List[str]:
    """The "% of HBM peak" cell (none where the peak is unknown)."""
    return [] if hbm_gbps is None else [f"{100 * nbytes / ms / 1e6 / hbm_gbps:.1f}%"]


def floor_note(floor: Floor) -> str:
    """One line: every read kernel's median (us) at the floor's size, which one set the floor,
    and the kernels judge.floor left out."""
    kernels = ", ".join(f"{name} {us(ms)} us" for name, ms in sorted(floor.medians_ms.items()))
    note = f"Read kernels over the same bytes: {kernels}; the floor is {floor.kernel}'s."
    return note + "".join(f" Left out: {reason}." for reason in floor.skipped)


def table_lines(table: Table, hbm_gbps: Optional[float]) -> List[str]:
    """The markdown of one challenge's main table, its roofline table (99) and its peers."""
    hbm = [] if hbm_gbps is None else ["% of HBM peak"]
    reference_ms = table.baseline_ms("PyTorch reference")
    compiled_ms = table.baseline_ms("torch.compile(reference)")
    header = ["entry", "check", "median (us)", "GB/s", "% of floor"] + hbm
    header += ["vs reference", "vs torch.compile"]
    lines = [
        f"### {table.number} {table.name} ({table.sizes}; {table.moved / 1e6:.1f} MB moved)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * (len(header) - 2),
    ]
    floor_row = Entry(f"floor: {table.floor.kernel}", status="-", ms=table.floor.ms)
    for e in table.rows + [floor_row]:
        if math.isnan(e.ms):  # did not build or raised: its status says why
            lines.append("| " + " | ".join([e.label, e.status] + ["-"] * (len(header) - 2)) + " |")
            continue
        cells = [e.label, e.status, us(e.ms), f"{table.moved / e.ms / 1e6:.0f}"]
        cells += [f"{e.share(table.floor.ms):.1f}%"] + hbm_share(table.moved, e.ms, hbm_gbps)
        cells += [f"{reference_ms / e.ms:.2f}x", f"{compiled_ms / e.ms:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", floor_note(table.floor), ""]
    if table.rooflines:
        lines += roofline_lines(table)
    if table.peers:
        lines += peer_lines(table.peers, hbm_gbps)
    return lines


def roofline_lines(table: Table) -> List[str]:
    """99's roofline table: per entry its arithmetic, achieved TFLOP/s (get_flops over the
    median), the bandwidth, compute and binding floors (us), which binds, and the entry's % of
    the binding floor."""
    lines = [
        f"{table.number} is bound by arithmetic: {table.flops / 1e9:.1f} GFLOP a call "
        "(get_flops). The compute floor is the arithmetic's products x FLOPs / the peak "
        "measured for it; the bandwidth floor is the read floor at the same bytes.",
        "",
        "| entry | arithmetic | TFLOP/s | bandwidth floor (us) | compute floor (us) | "
        "binding floor (us) | binds | % of binding floor |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for e in table.rows:
        r = table.rooflines[e.label]
        if math.isnan(e.ms):
            lines.append(f"| {e.label} | {r.arithmetic} | - | {us(r.bandwidth_ms)} | ")
            lines[-1] += f"{us(r.compute_ms)} | {us(r.binding_ms)} | {r.binds} | {e.status} |"
            continue
        lines.append(
            f"| {e.label} | {r.arithmetic} | {table.flops / e.ms / 1e9:.1f} | "
            f"{us(r.bandwidth_ms)} | {us(r.compute_ms)} | {us(r.binding_ms)} | {r.binds} | "
            f"{e.share(r.binding_ms):.1f}% |"
        )
    return lines + [""]


def peer_lines(rows: List[PeerRow], hbm_gbps: Optional[float]) -> List[str]:
    """The FlashInfer peers' table: median (us), MB moved, % of the floor at the peer's own
    bytes (and of the HBM peak, GB/s, where known), or "skipped: <reason>"."""
    hbm = [] if hbm_gbps is None else ["% of HBM peak"]
    header = ["peer", "median (us)", "MB moved", "% of the floor at its own bytes"] + hbm
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        if row.skipped:
            cells = [row.label, f"skipped: {row.skipped}"] + [""] * (len(header) - 2)
        else:
            nbytes = row.floor.nbytes
            cells = [row.label, us(row.ms), f"{nbytes / 1e6:.1f}"]
            cells += [f"{100 * row.floor.ms / row.ms:.1f}% (floor: {row.floor.kernel})"]
            cells += hbm_share(nbytes, row.ms, hbm_gbps)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines + [""]


def sweep_lines(number: str, name: str, points: List[Point], hbm_gbps: Optional[float]):
    """One sweep's markdown: per point the floor, then each solution's median (us), % of the
    floor and (99) % of its binding floor; WRONG marks a failed check."""
    labels = [e.label for e in points[0].rows]
    binding = " [% of binding floor]" if points[0].rooflines else ""
    hbm = "" if hbm_gbps is None else " (% of HBM peak)"
    lines = [
        f"#### {number}: {name} sweep (median us (% of floor){binding})",
        "",
        f"| {name} | floor (us) | floor GB/s{hbm} | floor kernel | " + " | ".join(labels) + " |",
        "|---:|---:|---:|---|" + "---:|" * len(labels),
    ]
    for p in points:
        gbps = f"{p.floor.gbps:.0f}"
        if hbm_gbps is not None:
            gbps += f" ({100 * p.floor.gbps / hbm_gbps:.0f}%)"
        cells = [str(p.value), us(p.floor.ms), gbps, p.floor.kernel]
        for e in p.rows:
            if math.isnan(e.ms):
                cells.append(e.status)
                continue
            cell = f"{us(e.ms)} ({e.share(p.floor.ms):.0f}%)"
            if p.rooflines:
                cell += f" [{e.share(p.rooflines[e.label].binding_ms):.0f}%]"
            cells.append(cell if e.status == "ok" else f"{cell} {e.status}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


@dataclass(frozen=True)
class Target:
    """One editorial target; ``met`` None where this run did not measure it."""

    challenge: str
    what: str
    measured: str
    target: str
    met: Optional[bool]


# at the performance test: (challenge, file, minimum % of the floor)
EDITORIAL_SHARE = [
    ("95", "editorial.cu", 95),
    ("95", "editorial.triton.py", 85),
    ("96", "editorial.cu", 95),
    ("96", "editorial.triton.py", 85),
]
# over the sweeps: (challenge, file, which points, minimum % of the floor); 1K-2K: under 4K
LONG, SHORT = ">= 4K tokens", "1K-2K tokens"
SWEEP_SHARE = [
    ("95", "editorial.cu", LONG, 90),
    ("95", "editorial.cu", SHORT, 80),
    ("95", "editorial.triton.py", LONG, 80),
    ("96", "editorial.cu", LONG, 90),
    ("96", "editorial.cu", SHORT, 80),
    ("96", "editorial.triton.py", LONG, 80),
]
BEST_SHARE = {"97": {"cuda": 90, "triton": 80}, "98": {"cuda": 90, "triton": 80}}
SPEEDUP = 5  # best CUDA and Triton over torch.compile, 95-98
MLA_BINDING, MLA_SPEEDUP = 70, 3  # 99's editorial.cu: % of its binding floor, over compile


def _find(rows: List[Entry], file: str) -> Optional[Entry]:
    return next((e for e in rows if e.file == file), None)


def _best(rows: List[Entry], language: str) -> Optional[Entry]:
    """The fastest correct entry in ``language``, or None."""
    timed = [e for e in rows if e.status == "ok" and e.language == language]
    return min(timed, key=lambda e: e.ms) if timed else None


def _share_target(number, what, entry, floor_ms, goal) -> Target:
    if entry is None:
        return Target(number, what, "not run", f">= {goal}%", None)
    if entry.status != "ok":
        return Target(number, what, entry.status, f">= {goal}%", False)
    share = entry.share(floor_ms)
    return Target(number, what, f"{share:.1f}%", f">= {goal}%", share >= goal)


def _speedup_target(number, entry, compiled_ms, goal) -> Target:
    what = f"{entry.file}, speedup over torch.compile"
    speedup = compiled_ms / entry.ms
    ok = entry.status == "ok" and speedup >= goal
    return Target(number, what, f"{speedup:.1f}x", f">= {goal}x", ok)


def _sweep_target(number, file, which, goal, sweeps) -> Target:
    """The lowest % of the floor of ``file`` over the sweep points of ``number`` in
    ``which`` (LONG or SHORT): a WRONG point fails it."""
    what = f"{file}, lowest % of the floor in the sweeps at {which}"
    found = []
    for (swept, name), points in sweeps.items():
        for p in points:
            if swept == number and (p.tokens >= 4096) == (which == LONG):
                entry = _find(p.rows, file)
                if entry is not None:
                    found.append((entry, p.floor.ms, f"{name}={p.value}"))
    if not found:
        return Target(number, what, "not run", f">= {goal}%", None)
    wrong = [where for e, _, where in found if e.status != "ok"]
    if wrong:
        return Target(number, what, "WRONG at " + ", ".join(wrong), f">= {goal}%", False)
    share, where = min((e.share(floor_ms), where) for e, floor_ms, where in found)
    return Target(number, what, f"{share:.1f}% ({where})", f">= {goal}%", share >= goal)


def _above_floor(number, table: Table, sweeps) -> Target:
    """Every correct entry faster than the floor, at the performance test or any sweep point."""
    seen = [(e, table.floor.ms, "performance test") for e in table.rows]
    for (swept, name), points in sweeps.items():
        if swept == number:
            seen += [(e, p.floor.ms, f"{name}={p.value}") for p in points for e in p.rows]
    above = [
        f"{e.label} at {where} ({e.share(floor_ms):.1f}%)"
        for e, floor_ms, where in seen
        if e.status == "ok" and e.share(floor_ms) > 100
    ]
    what = "correct entries above 100% of the floor, any shape"
    return Target(number, what, "; ".join(above) or "none", "none", not above)


def targets(tables: Dict[str, Table], sweeps: Dict[Tuple[str, str], List[Point]]) -> List[Target]:
    """The editorial targets, from this run's tables and sweeps: those of the challenges
    in ``tables`` only; a criterion the run did not measure (no sweep) has ``met`` None."""
    rows = []
    for number, table in sorted(tables.items()):
        for swept, file, goal in EDITORIAL_SHARE:
            if swept == number:
                entry = _find(table.rows, file)
                what = f"{file}, % of the floor, performance test"
                rows.append(_share_target(number, what, entry, table.floor.ms, goal))
        rows += [_sweep_target(*t, sweeps) for t in SWEEP_SHARE if t[0] == number]
        rows += _table_targets(number, table)
        rows.append(_above_floor(number, table, sweeps))
    return rows


def _table_targets(number: str, table: Table) -> List[Target]:
    """The best-solution, speedup and (99) binding-floor criteria at the performance test."""
    rows = []
    compiled_ms = table.baseline_ms("torch.compile(reference)")
    if number == "99":
        editorial = _find(table.rows, "editorial.cu")
        what = "editorial.cu, % of its binding floor"
        if editorial is None:
            return [Target(number, what, "not run", f">= {MLA_BINDING}%", None)]
        binding = table.rooflines[editorial.label]
        what += f" ({binding.binds}-bound; {binding.arithmetic})"
        rows.append(_share_target(number, what, editorial, binding.binding_ms, MLA_BINDING))
        return rows + [_speedup_target(number, editorial, compiled_ms, MLA_SPEEDUP)]
    for language, goal in BEST_SHARE.get(number, {}).items():
        best = _best(table.rows, language)
        what = f"best {language}" + (f" ({best.file})" if best else "") + ", % of the floor"
        rows.append(_share_target(number, what, best, table.floor.ms, goal))
    for language in SWEPT:
        best = _best(table.rows, language)
        if best is not None:
            rows.append(_speedup_target(number, best, compiled_ms, SPEEDUP))
    return rows


def target_lines(rows: List[Target]) -> List[str]:
    """The targets table: challenge, what, measured, target, met (yes, no, or n/a where not
    measured)."""
    lines = [
        "### Targets",
        "",
        "| challenge | what | measured | target | met |",
        "|---|---|---:|---:|---|",
    ]
    for t in rows:
        met = "n/a" if t.met is None else ("yes" if t.met else "no")
        lines.append(f"| {t.challenge} | {t.what} | {t.measured} | {t.target} | {met} |")
    return lines


def plot(sweeps: Dict[Tuple[str, str], List[Point]], path: Path):
    """A PNG at ``path``: per sweep, the medians (us, log scale) and the % of the floor against
    the swept size (log 2 scale), the floor in black. Needs matplotlib (the "plot" extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sweeps), 2, figsize=(11, 3.6 * len(sweeps)), squeeze=False)
    for row, ((number, name), points) in enumerate(sweeps.items()):
        xs = [p.value for p in points]
        floor = [p.floor.ms * 1e3 for p in points]
        axes[row][0].plot(xs, floor, marker="o", color="black", label="floor")
        axes[row][1].axhline(100, color="black", linewidth=0.8)
        for i, label in enumerate(e.label for e in points[0].rows):
            times = [p.rows[i].ms * 1e3 for p in points]
            shares = [p.rows[i].share(p.floor.ms) for p in points]
            axes[row][0].plot(xs, times, marker="o", label=label)
            axes[row][1].plot(xs, shares, marker="o", label=label)
        axes[row][0].set(title=f"{number}: time vs {name}", yscale="log")
        axes[row][0].set(ylabel="median (us)", xlabel=name)
        axes[row][1].set(title=f"{number}: % of floor", xlabel=name, ylim=(0, 130))
        for ax in axes[row]:
            ax.set_xscale("log", base=2)
        axes[row][0].legend(fontsize=7)
        axes[row][1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report_stem(slug: str, numbers: Sequence[str], swept: bool) -> str:
    """The report's file name without suffix: the GPU's slug for a full run, else the slug,
    the challenges and "-no-sweep" where the sweeps did not run."""
    if list(numbers) == list(CHALLENGES) and swept:
        return slug
    return "-".join([slug, *numbers] + ([] if swept else ["no-sweep"]))


def header_lines(props, args, hbm_gbps, peaks, flashinfer_note) -> List[str]:
    """The report's head: the GPU (``props``: torch's device properties), the challenges
    included and whether the sweeps ran (``args``), how times and floors are taken, the HBM
    peak (GB/s, or unknown), the matrix-product ``peaks`` (TFLOP/s) and why the FlashInfer
    peers were skipped, if they were."""
    command = "python scripts/benchmark.py"
    if list(args.challenges) != list(CHALLENGES):
        command += " --challenges " + ",".join(args.challenges)
    if args.no_sweep:
        command += " --no-sweep"
    hbm = (
        f"The HBM peak is {hbm_gbps:.0f} GB/s (NVML: 2 x memory clock x bus width)."
        if hbm_gbps is not None
        else "The HBM peak is unknown here (NVML did not give it)."
    )
    lines = [
        f"# Benchmarks on {props.name}",
        "",
        f"Challenges included: {', '.join(args.challenges)} (of {', '.join(CHALLENGES)}); "
        f"sweeps: {'no' if args.no_sweep else 'yes'}.",
        "",
        f"{time.strftime('%Y-%m-%d')}, PyTorch {torch.__version__}, {props.multi_processor_count}"
        f" SMs. Command: `{command}`. Times are medians of GPU spans (CUPTI: the first kernel's "
        "start to the last one's end, every stream) with L2 evicted before each sample "
        "(judge/timing.py). The floor is the fastest of judge.floor's read kernels over the "
        "same number of bytes, timed the same way (each table names the kernel). "
        f"{hbm} A span leaves out the host's latency before the first kernel and keeps every "
        "gap between kernels, so a call that launches several kernels from Python pays the "
        "host's launch latency between them (the reference, torch.compile and the plain "
        "PyTorch solutions do).",
        "",
    ]
    if peaks:
        measured = ", ".join(f"{PEAKS[k][0]} {v:.1f}" for k, v in peaks.items())
        lines += [
            f"Matrix-product peaks measured in this run (torch.matmul, {MATMUL_SIZE} x "
            f"{MATMUL_SIZE} operands, 2 n^3 FLOP over the median span), TFLOP/s: {measured}.",
            "",
        ]
    if flashinfer_note:
        lines += [f"FlashInfer peers skipped: {flashinfer_note}.", ""]
    return lines
