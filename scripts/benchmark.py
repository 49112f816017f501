"""Side-by-side timings of every way to solve challenges 95-99, on one GPU, in one run.

    python scripts/benchmark.py [--challenges 95,96,97,98,99] [--budget SECONDS] [--no-sweep]

For each challenge, at its performance shape: the PyTorch reference, torch.compile of the
reference, other PyTorch formulations (SDPA with enable_gqa for 95), every file in
solutions/<challenge>/ whose toolchain is installed, and the read floor: every read kernel of
judge.floor over the same number of bytes, the fastest of them setting the floor. Each entry
is checked against the reference once, then timed with the judge's timing module
(judge/timing.py: GPU spans from CUPTI, L2 evicted by reading, SEM-based stopping) over enough
copies of its inputs to cover the L2 cache four times. Bytes moved are the challenge's
``get_bytes_moved`` where it has one (97 counts the attended tokens only), else every tensor
argument once; each row gives its share of the floor and of the HBM peak (from NVML).

Challenge 99 is bound by arithmetic: its rows also give a compute floor, the FLOPs of
``get_flops`` times the products its arithmetic takes over a peak measured in the same run
(torch.matmul of 8192 x 8192 operands in fp32 on CUDA cores, tf32 and fp16 on tensor cores),
and which of the two floors binds. Where FlashInfer imports, its decode kernels at the same
shapes are timed too (scripts/peers.py). Then sweeps (scripts/bench_shapes.py) of the CUDA and
Triton solutions over lengths and batch sizes, and last the editorial targets, each met or
not.

Writes docs/benchmarks/<gpu>.md (all five challenges with sweeps; a subset run writes
<gpu>-<numbers>[-no-sweep].md) and a plot beside it, and prints the tables. Submissions run in
this process, without the judge's worker: trusted code only.
"""

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent))
if str(SCRIPTS) not in sys.path:
    sys.path.insert(1, str(SCRIPTS))  # bench_shapes and peers, beside this file
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX shares the GPU with torch

import bench_shapes  # noqa: E402
import peers  # noqa: E402
import torch  # noqa: E402
from bench_report import (  # noqa: E402
    CHALLENGES,
    MATMUL_SIZE,
    PEAKS,
    SWEPT,
    Entry,
    Floor,
    PeerRow,
    Point,
    Table,
    header_lines,
    plot,
    report_stem,
    roofline,
    sweep_lines,
    table_lines,
    target_lines,
    targets,
)

from judge.challenges import REPO_ROOT, find_challenge, load_challenge  # noqa: E402
from judge.floor import hbm_peak_gbps, read_kernels  # noqa: E402
from judge.languages import LANGUAGES, detect_language  # noqa: E402
from judge.session import bytes_moved  # noqa: E402  (as the judge counts them)
from judge.signature import parse_signature  # noqa: E402
from judge.timing import CACHE_DIR, time_calls  # noqa: E402

from core.challenge_base import materialize_test  # noqa: E402  # isort: skip

SOLUTIONS = REPO_ROOT / "solutions"
L2_COVER = 4  # input sets together cover this many times the L2 cache
OUT_DIR = REPO_ROOT / "docs" / "benchmarks"


def load_solution(path: Path, params):
    """Build and load a solution in this process; returns call(kwargs)."""
    language = LANGUAGES[detect_language(path)]
    artifact = language.build(path, params, CACHE_DIR / "builds")
    return language.load(artifact, params, "cuda")


def solution_entry(label: str, path: Path, params) -> Entry:
    """An Entry for the solution file ``path``, built and loaded (load_solution); a build or
    load error makes it a row whose status says so ("error: ...", no call), not a crash."""
    language = detect_language(path)
    try:
        return Entry(label, path.name, language, call=load_solution(path, params))
    except Exception as exc:
        return Entry(label, path.name, language, status=failure(exc))


def sdpa_gqa(Q, K, V, output, batch_size, num_q_heads, num_kv_heads, cache_len, head_dim):
    """95 through torch's scaled_dot_product_attention with enable_gqa (fp32: math path)."""
    out = torch.nn.functional.scaled_dot_product_attention(Q.unsqueeze(2), K, V, enable_gqa=True)
    output.copy_(out.squeeze(2))


def entries(number: str, challenge, params, with_baselines: bool) -> List[Entry]:
    """Everything timed on one challenge: the baselines (with_baselines), then every file of
    its solutions folder whose toolchain is installed (only SWEPT languages without them)."""
    found = []
    if with_baselines:
        compiled = torch.compile(challenge.reference_impl)
        found.append(Entry("PyTorch reference", call=lambda kw: challenge.reference_impl(**kw)))
        found.append(Entry("torch.compile(reference)", call=lambda kw: compiled(**kw)))
        if number == "95":
            found.append(Entry("PyTorch SDPA, enable_gqa", call=lambda kw: sdpa_gqa(**kw)))
    for path in sorted(next(SOLUTIONS.glob(f"{number}_*")).glob("*.*")):
        language = detect_language(path)
        if language not in LANGUAGES or (not with_baselines and language not in SWEPT):
            continue
        missing = LANGUAGES[language].missing_toolchain()
        if missing:
            print(f"skipping {path.name}: {missing}")
            continue
        found.append(solution_entry(f"{path.name} ({language})", path, params))
    return found


def failure(exc: Exception) -> str:
    """An entry's status after ``exc``: "error: <type>: <first line>" (no "|", for markdown)."""
    lines = str(exc).strip().splitlines()
    text = f"error: {type(exc).__name__}" + (f": {lines[0][:160]}" if lines else "")
    return text.replace("|", "/")


def copies(nbytes: int) -> int:
    """How many input sets of ``nbytes`` cover L2_COVER times the L2 cache: timing rotates
    through them, so no sample finds its inputs in L2 even where they are smaller than L2.
    (With one set, the read-only L2 flush left part of such a buffer resident: on an H100,
    34 MB read at 4.4 TB/s, past HBM3's 3.35.)"""
    l2_bytes = torch.cuda.get_device_properties(None).L2_cache_size
    return max(1, -(-L2_COVER * l2_bytes // nbytes))


def input_sets(challenge, params, spec) -> List[dict]:
    """Copies of one declarative input spec on the GPU (seeds 0, 1, ...), as many as
    ``copies`` asks for."""
    first = materialize_test(spec, "cuda", seed=0)
    count = copies(bytes_moved(challenge, first, params))
    return [first] + [materialize_test(spec, "cuda", seed=i) for i in range(1, count)]


def time_rotating(calls: Sequence[Callable[[], None]], budget_s: float) -> float:
    """Median GPU span in ms, each sample taking the next of ``calls`` (zero-argument)."""
    turn = {"next": 0}

    def prepare():
        turn["next"] = (turn["next"] + 1) % len(calls)

    return time_calls(lambda: calls[turn["next"]](), prepare, budget_s=budget_s).median_ms


def measure_floor(nbytes: int, count: int, budget_s: float, kernels=None, timer=None) -> Floor:
    """The read floor at ``nbytes``: ``kernels(nbytes)`` (judge.floor.read_kernels: one
    buffer and every read kernel over it) is called ``count`` times, and each kernel name is
    timed by ``timer`` (time_rotating) rotating through its ``count`` buffers. The kernels
    judge.floor left out (did not build or misread) are kept in ``Floor.skipped``."""
    skipped: List[str] = []
    if kernels is None:

        def kernels(n):
            return read_kernels(n, skipped)

    timer = timer or time_rotating
    by_name: Dict[str, List[Callable[[], None]]] = {}
    for _ in range(count):
        for kernel in kernels(nbytes):
            by_name.setdefault(kernel.name, []).append(kernel.call)
    medians = {name: timer(calls, budget_s) for name, calls in by_name.items()}
    return Floor(nbytes, medians, tuple(dict.fromkeys(skipped)))


def check(challenge, params, call, kwargs) -> str:
    """The check's verdict: "ok" when ``call`` matches the reference within the challenge's
    tolerance on ``kwargs`` (its outputs NaN-filled first), else "WRONG"."""
    expected = dict(kwargs)
    for p in params:
        if p.is_output:
            expected[p.name] = torch.empty_like(kwargs[p.name])
            kwargs[p.name].fill_(float("nan"))
    challenge.reference_impl(**expected)
    call(kwargs)
    torch.cuda.synchronize()
    ok = all(
        torch.allclose(kwargs[p.name], expected[p.name], atol=challenge.atol, rtol=challenge.rtol)
        for p in params
        if p.is_output
    )
    return "ok" if ok else "WRONG"


def time_entries(challenge, params, found: List[Entry], sets, budget_s: float) -> None:
    """Check each entry on the first input set (which also builds and JITs it), then time it
    rotating through ``sets``; fills in status and ms. An entry that raises gets the error as
    its status and no time (after a CUDA fault, the ones after it fail the same way)."""
    for entry in found:
        if entry.call is None:  # did not build
            continue
        try:
            entry.status = check(challenge, params, entry.call, sets[0])
            calls = [lambda kw=kw, e=entry: e.call(kw) for kw in sets]
            entry.ms = time_rotating(calls, budget_s)
        except Exception as exc:
            entry.status = failure(exc)
            print(f"{entry.label}: {entry.status}")


def matmul_peaks(budget_s: float, n: int = MATMUL_SIZE) -> Dict[str, float]:
    """PEAKS' key -> TFLOP/s of torch.matmul of two random (n, n) matrices, 2 * n^3 over the
    median GPU span (judge.timing.time_calls, as every entry is timed)."""
    peaks = {}
    for key, (_, dtype, tf32) in PEAKS.items():
        a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
        out = torch.empty(n, n, device="cuda", dtype=dtype)
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            ms = time_calls(lambda: torch.matmul(a, b, out=out), budget_s=budget_s).median_ms
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        peaks[key] = 2 * n**3 / (ms * 1e-3) / 1e12
    return peaks


def mla_rooflines(rows: List[Entry], flops: int, bandwidth_ms: float, peaks) -> dict:
    """99's Roofline of every entry, by label: ``flops`` of one call (get_flops), the read
    floor ``bandwidth_ms`` (ms) at its bytes, ``peaks`` in TFLOP/s (matmul_peaks)."""
    return {e.label: roofline(e.file or e.label, flops, bandwidth_ms, peaks) for e in rows}


def run_peers(number: str, kwargs, budget_s: float) -> List[PeerRow]:
    """FlashInfer's peers of one challenge (peers.peers_for), each timed over its own input
    sets against the floor at its own bytes; any exception makes its row a skipped one."""
    try:
        found = peers.peers_for(number, kwargs)
    except Exception as exc:
        reason = failure(exc).removeprefix("error: ")
        return [PeerRow(f"FlashInfer peers of {number}", skipped=reason)]
    rows = []
    for peer in found:
        calls = []
        try:
            count = copies(peer.nbytes)
            calls = peer.make(count)
            ms = time_rotating(calls, budget_s)
            rows.append(PeerRow(peer.label, ms, measure_floor(peer.nbytes, count, budget_s)))
        except Exception as exc:
            rows.append(PeerRow(peer.label, skipped=failure(exc).removeprefix("error: ")))
        del calls  # the peer's input sets, before the next peer allocates its own
        torch.cuda.empty_cache()
    return rows


def performance_setup(number: str, budget_s: float):
    """One challenge at its performance test, on the GPU: (challenge, params, its input sets
    (input_sets), the bytes moved per call, the read floor at those bytes (measure_floor))."""
    challenge = load_challenge(find_challenge(number), "cuda")
    params = parse_signature(challenge.get_solve_signature())
    sets = input_sets(challenge, params, challenge.generate_performance_test())
    moved = bytes_moved(challenge, sets[0], params)
    return challenge, params, sets, moved, measure_floor(moved, len(sets), budget_s)


def main_table(number: str, budget_s: float, peaks, with_peers: bool) -> Table:
    """Every entry of one challenge at its performance shape, the floor and (99) rooflines."""
    challenge, params, sets, moved, floor = performance_setup(number, budget_s)
    kwargs = sets[0]
    rows = entries(number, challenge, params, with_baselines=True)
    time_entries(challenge, params, rows, sets, budget_s)
    sizes = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in kwargs.items()
        if isinstance(v, (int, float))
    )
    table = Table(number, challenge.name, sizes, moved, floor, rows)
    if number == "99":
        table.flops = challenge.get_flops(**kwargs)
        table.rooflines = mla_rooflines(rows, table.flops, floor.ms, peaks)
    if with_peers:
        table.peers = run_peers(number, kwargs, budget_s)
    return table


def sweep(number: str, axis: bench_shapes.Axis, budget_s: float, peaks) -> List[Point]:
    """The SWEPT solutions of one challenge at each point of ``axis``, each checked there."""
    challenge = load_challenge(find_challenge(number), "cuda")
    params = parse_signature(challenge.get_solve_signature())
    solutions = entries(number, challenge, params, with_baselines=False)
    points = []
    for value in axis.values:
        sets = input_sets(
            challenge, params, bench_shapes.sweep_spec(number, challenge, axis, value)
        )
        moved = bytes_moved(challenge, sets[0], params)
        floor = measure_floor(moved, len(sets), budget_s)
        rows = [Entry(e.label, e.file, e.language, e.status, call=e.call) for e in solutions]
        time_entries(challenge, params, rows, sets, budget_s)
        point = Point(value, axis.tokens_at(value), moved, floor, rows)
        if number == "99":
            flops = challenge.get_flops(**sets[0])
            point.rooflines = mla_rooflines(rows, flops, floor.ms, peaks)
        points.append(point)
        del sets
        torch.cuda.empty_cache()
    return points


def parse_challenges(text: str) -> List[str]:
    """The challenges of "97,95": ["95", "97"] (in order, each once); any number not in
    CHALLENGES is an error."""
    numbers = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(numbers - set(CHALLENGES))
    if unknown or not numbers:
        raise argparse.ArgumentTypeError(
            f"unknown challenge(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(CHALLENGES)}"
        )
    return [n for n in CHALLENGES if n in numbers]


def parse_args(argv=None) -> argparse.Namespace:
    """--challenges (a list of numbers), --budget (seconds of samples per entry), --no-sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--challenges",
        type=parse_challenges,
        default=list(CHALLENGES),
        help=f"comma-separated challenge numbers (default: {','.join(CHALLENGES)}); split a long "
        "run into several, each writing its own report",
    )
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of samples per entry")
    parser.add_argument("--no-sweep", action="store_true", help="the performance tests only")
    return parser.parse_args(argv)


def main(argv=None):
    """Run the benchmark of the challenges asked for and write the report (module docstring)."""
    args = parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    props = torch.cuda.get_device_properties(None)
    slug = re.sub(r"[^a-z0-9]+", "-", props.name.lower()).strip("-")
    stem = report_stem(slug, args.challenges, not args.no_sweep)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    hbm_gbps = hbm_peak_gbps()
    peaks = matmul_peaks(args.budget) if "99" in args.challenges else {}
    flashinfer_note = peers.flashinfer_missing()
    lines = header_lines(props, args, hbm_gbps, peaks, flashinfer_note)
    tables, sweeps = {}, {}

    def save(done: bool):
        """The report so far, rewritten after every table and sweep: a run stopped at a time
        limit leaves what it measured."""
        unfinished = [] if done else ["(Unfinished: the run had not reached its end.)", ""]
        report = lines + target_lines(targets(tables, sweeps)) + [""] + unfinished
        (OUT_DIR / f"{stem}.md").write_text("\n".join(report))
        return report

    for number in args.challenges:
        tables[number] = main_table(number, args.budget, peaks, flashinfer_note is None)
        lines += table_lines(tables[number], hbm_gbps)
        save(done=False)
        torch.cuda.empty_cache()
    if not args.no_sweep:
        for number in args.challenges:
            for axis in bench_shapes.SWEEPS[number]:
                points = sweep(number, axis, args.budget, peaks)
                sweeps[(number, axis.name)] = points
                lines += sweep_lines(number, axis.name, points, hbm_gbps) + [""]
                save(done=False)
        try:
            plot(sweeps, OUT_DIR / f"{stem}.png")
            lines += [f"![time and % of the floor against each swept size]({stem}.png)", ""]
        except ImportError as exc:  # matplotlib is the optional "plot" extra
            lines += [f"(no plot: {exc})", ""]
    print("\n".join(save(done=True)))
    print(f"\nwrote {OUT_DIR / (stem + '.md')}")


if __name__ == "__main__":
    main()
