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
3. Measures the fixed part of each method once: a one-element add kernel under ncu and as a
   CUPTI span in this process. ncu's duration of it is longer by a constant (its launch
   processing is inside gpu__time_duration, not inside CUPTI's kernel records); the table
   gives the comparison both raw and with that constant taken off ncu's figure.

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


def null_driver():
    """Run under ncu: a one-element add kernel NCU_CALLS times, each in a range 'solve'."""
    import torch

    tiny = torch.zeros(1, device="cuda")
    tiny.add_(1)
    torch.cuda.synchronize()
    for _ in range(NCU_CALLS):
        torch.cuda.nvtx.range_push("solve")
        tiny.add_(1)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()


def null_cupti_ms() -> float:
    """The same one-element add kernel's median GPU span as the judge times it (CUPTI)."""
    import torch

    from judge.timing import time_calls

    tiny = torch.zeros(1, device="cuda")
    return time_calls(lambda: tiny.add_(1), budget_s=1.0).median_ms


def ncu_median_ms(solution: Path, number: str, driver: str = "--ncu-driver") -> float:
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
        driver,
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
    parser.add_argument("--ncu-null-driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ncu_driver:
        solution = args.solutions[0].resolve()
        return ncu_driver(solution, solution.parent.name.split("_")[0])
    if args.ncu_null_driver:
        return null_driver()
    first = args.solutions[0].resolve()
    null_ncu = ncu_median_ms(first, "", "--ncu-null-driver")
    offset_ms = null_ncu - null_cupti_ms()
    print(
        f"one-element add kernel: ncu {null_ncu * 1e3:.2f} us, {offset_ms * 1e3:.2f} us over CUPTI"
    )
    rows = [validate(solution, args.repeats) for solution in args.solutions]
    for row in rows:
        row["ncu_fixed_ms"] = offset_ms
        judge_ms = statistics.median(row["medians_ms"])
        row["judge_vs_ncu_less_fixed"] = judge_ms / (row["ncu_ms"] - offset_ms) - 1
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    header = f"{'solution':<52}{'bench medians (us)':<26}{'spread':>8}{'ncu (us)':>10}"
    print(f"\n{header}{'judge/ncu':>11}{'less fixed':>12}")
    for row in rows:
        medians = " / ".join(f"{m * 1e3:.1f}" for m in row["medians_ms"])
        print(
            f"{row['solution'][-51:]:<52}{medians:<26}{row['spread'] * 100:>7.2f}%"
            f"{row['ncu_ms'] * 1e3:>10.1f}{row['judge_vs_ncu'] * 100:>+10.2f}%"
            f"{row['judge_vs_ncu_less_fixed'] * 100:>+11.2f}%"
        )
    print("targets: spread < 2%, judge within 5% of ncu")


if __name__ == "__main__":
    main()
