"""Scaffold a challenge folder with the next free number: python scripts/new_challenge.py NAME.

    python scripts/new_challenge.py paged_attention --difficulty hard

writes challenges/hard/<next number>_paged_attention/ with a template challenge.py,
challenge.html and the six starters, which passes scripts/check_challenge.py as it is.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from judge.challenges import CHALLENGES_DIR, DIFFICULTIES  # noqa: E402
from judge.scaffold import create_challenge  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="lower_snake_case name, e.g. paged_attention")
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="medium")
    parser.add_argument("--root", type=Path, default=CHALLENGES_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        folder = create_challenge(args.name, args.difficulty, args.root)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created {folder}")
    print("next: edit challenge.py and challenge.html, then run")
    print(f"  python scripts/check_challenge.py {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
