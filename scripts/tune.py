"""Time candidate solution files of one challenge against the read floor, at its performance test.

    python scripts/tune.py 98 solutions/98_fp8_kv_cache_attention/editorial.cu variant.cu
                           [--budget SECONDS]

For tuning a kernel: every FILE (any path; its language from its name or imports, as the judge
detects it) is built, checked once against the reference on the first input set ("ok" or
"WRONG"), and timed as scripts/benchmark.py times its rows: the same rotating input sets
(covering the L2 cache four times), the same GPU medians (judge/timing.py) and the same read
floor (the fastest of judge.floor's read kernels over the challenge's bytes moved). Prints one
line per file, its median in us and its share of the floor in %, after a line for the floor.
Variants timed in one run share that floor, so their ratios compare directly.

Files run in this process, without the judge's worker: trusted code only.
"""

import argparse
import math
import sys
from pathlib import Path
from typing import List, Sequence

SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))  # benchmark and the modules beside it

import benchmark  # noqa: E402
import torch  # noqa: E402
from bench_report import Entry, Floor  # noqa: E402

from judge.languages import LANGUAGES, detect_language  # noqa: E402


def existing_solution(text: str) -> Path:
    """A FILE argument: a file that exists and whose language the judge can tell."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if detect_language(path) not in LANGUAGES:
        raise argparse.ArgumentTypeError(
            f"{text}: cannot tell its language (name it .cu, .mojo or <name>.<language>.py)"
        )
    return path


def one_challenge(text: str) -> str:
    """The challenge argument: exactly one number of scripts/benchmark.py's set."""
    numbers = benchmark.parse_challenges(text)
    if len(numbers) != 1:
        raise argparse.ArgumentTypeError(f"one challenge number, not {text}")
    return numbers[0]


def parse_args(argv=None) -> argparse.Namespace:
    """challenge (a number of scripts/benchmark.py's set), files (one or more), --budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "challenge",
        type=one_challenge,
        help=f"one challenge number ({', '.join(benchmark.CHALLENGES)})",
    )
    parser.add_argument("files", nargs="+", type=existing_solution, help="solution files")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of samples per file")
    return parser.parse_args(argv)


def result_lines(number: str, floor: Floor, rows: Sequence[Entry]) -> List[str]:
    """The printout: the floor (median us, its kernel, GB/s), then per row its label, status,
    median in us and % of the floor (blank for a row that did not build or run)."""
    width = max(len(r.label) for r in rows)
    lines = [f"floor {number}: {floor.ms * 1e3:.1f} us ({floor.kernel}, {floor.gbps:.0f} GB/s)"]
    for row in rows:
        timed = not math.isnan(row.ms)
        us = f"{row.ms * 1e3:9.1f} us" if timed else " " * 12
        share = f"{row.share(floor.ms):6.1f}%" if timed else ""
        lines.append(f"{row.label:<{width}}  {row.status:<6} {us} {share}".rstrip())
    return lines


def main(argv=None):
    """Build, check and time the files asked for (module docstring); exits 2 without CUDA."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "tune.py: error: it times on a GPU, and torch sees no CUDA device here", file=sys.stderr
        )
        sys.exit(2)
    torch.backends.cuda.matmul.allow_tf32 = False
    challenge, params, sets, _, floor = benchmark.performance_setup(args.challenge, args.budget)
    rows = [benchmark.solution_entry(str(path), path, params) for path in args.files]
    benchmark.time_entries(challenge, params, rows, sets, args.budget)
    print("\n".join(result_lines(args.challenge, floor, rows)))


if __name__ == "__main__":
    main()
