"""Check the judge's timing against itself and against Nsight Compute, on a GPU.

    python scripts/validate_timing.py solutions/96_int8_kv_cache_attention/editorial.cu \
        solutions/95_decode_phase_attention/editorial.triton.py ...

For every solution given:
1. Runs ``run_challenge.py --action bench`` REPEATS times and prints each median and the
   spread (max - min) / min: repeated benches should agree within 2%.
2. Profiles the same solution's kernels at the performance shape under ``ncu`` (clocks left
   as they are; L2 evicted before every call by the judge's own flush, outside the profiled
   NVTX range, as in the judge) and compares the judge's median with the median of ncu's
   gpu__time_duration per call: they should agree within 5%.

Any language whose kernels ncu can see (CUDA, Triton, PyTorch, ...): the solution is built
and loaded by its own language adapter, and called once before profiling so JIT compilation
stays out. Prints one table row per solution last.
"""

import argparse
import csv
import io
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
NCU_CALLS = 7
BENCH_BUDGET_S = 3  # seconds of samples per bench
BUSY_FLUSHES = 20  # ~1 ms of reads before each profiled call


def bench_medians(solution: Path, number: str, repeats: int):
    medians = []
    for _ in range(repeats):
        report = Path(tempfile.mkdtemp()) / "bench.json"
        subprocess.run(
            [
                sys.executable,
                str(REPO / "run_challenge.py"),
                number,
                "--action",
                "bench",
                "--budget",
                str(BENCH_BUDGET_S),
                "--solution",
                str(solution),
                "--json",
                str(report),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if not report.is_file():
            sys.exit(f"bench of {solution} wrote no report")
        data = json.loads(report.read_text())
        medians.append(data["performance"]["timing"]["median_ms"])
    return medians


def ncu_driver(solution: Path, number: str):
    """Run under ncu: call solve NCU_CALLS times inside an NVTX range named 'solve'."""
    import torch

    from judge.challenges import find_challenge, load_challenge
    from judge.languages import LANGUAGES, detect_language
    from judge.signature import parse_signature
    from judge.timing import L2Flusher

    from core.challenge_base import materialize_test  # isort: skip  (needs judge first)

    challenge = load_challenge(find_challenge(number), "cuda")
    params = parse_signature(challenge.get_solve_signature())
    language = LANGUAGES[detect_language(solution)]
    call = language.load(language.build(solution, params, Path(tempfile.mkdtemp())), params, "cuda")
    kwargs = materialize_test(challenge.generate_performance_test(), "cuda", seed=0)
    flush = L2Flusher()
    call(kwargs)  # JIT compilation and autotuning stay outside the profiled ranges
    torch.cuda.synchronize()
    for _ in range(NCU_CALLS):
        for _ in range(BUSY_FLUSHES):  # keep the GPU busy, as between the judge's samples
            flush()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push("solve")
        call(kwargs)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()


def ncu_median_ms(solution: Path, number: str) -> float:
    command = [
        "ncu",
        "--clock-control",
        "none",
        "--cache-control",
        "none",
        "--nvtx",
        "--nvtx-include",
        "solve/",
        "--metrics",
        "gpu__time_duration.sum,sm__cycles_elapsed.avg.per_second",
        "--csv",
        sys.executable,
        __file__,
        str(solution),
        "--ncu-driver",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(
            f"ncu failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    out = result.stdout
    lines = [line for line in out.splitlines() if line.startswith('"')]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    durations = [
        float(r["Metric Value"].replace(",", ""))
        for r in rows
        if r["Metric Name"] == "gpu__time_duration.sum"
    ]
    clock_rows = [r for r in rows if r["Metric Name"] == "sm__cycles_elapsed.avg.per_second"]
    clocks = [float(r["Metric Value"].replace(",", "")) for r in clock_rows]
    if clocks:
        unit = clock_rows[0]["Metric Unit"]
        print(f"SM clock under ncu: median {statistics.median(clocks):.4g} {unit}")
    rows = [r for r in rows if r["Metric Name"] == "gpu__time_duration.sum"]
    unit = rows[0]["Metric Unit"]
    scale = {"ns": 1e-6, "nsecond": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0}[
        unit
    ]
    per_call = len(durations) // NCU_CALLS
    calls = [sum(durations[i * per_call : (i + 1) * per_call]) * scale for i in range(NCU_CALLS)]
    return statistics.median(calls)


def validate(solution: Path, repeats: int) -> dict:
    """Bench medians, their spread and ncu's median for one solution (times in ms)."""
    number = solution.resolve().parent.name.split("_")[0]
    medians = bench_medians(solution, number, repeats)
    ncu_ms = ncu_median_ms(solution.resolve(), number)
    judge_ms = statistics.median(medians)
    return {
        "solution": str(solution),
        "medians_ms": medians,
        "spread": (max(medians) - min(medians)) / min(medians),
        "ncu_ms": ncu_ms,
        "judge_vs_ncu": judge_ms / ncu_ms - 1,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("solutions", type=Path, nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--ncu-driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ncu_driver:
        solution = args.solutions[0].resolve()
        return ncu_driver(solution, solution.parent.name.split("_")[0])
    rows = [validate(solution, args.repeats) for solution in args.solutions]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    header = f"{'solution':<52}{'bench medians (us)':<26}{'spread':>8}{'ncu (us)':>10}"
    print(f"\n{header}{'judge/ncu':>11}")
    for row in rows:
        medians = " / ".join(f"{m * 1e3:.1f}" for m in row["medians_ms"])
        print(
            f"{row['solution'][-51:]:<52}{medians:<26}{row['spread'] * 100:>7.2f}%"
            f"{row['ncu_ms'] * 1e3:>10.1f}{row['judge_vs_ncu'] * 100:>+10.2f}%"
        )
    print("targets: spread < 2%, judge within 5% of ncu")


if __name__ == "__main__":
    main()
