"""Check challenge folders against the challenge format: python scripts/check_challenge.py PATH...

A PATH may be a challenge folder or any file inside one (as pre-commit passes them).
Exits 0 when every folder passes, 1 when any has findings, 2 on bad usage.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from judge.checker import check_challenge  # noqa: E402


def challenge_folder(path: Path):
    """The challenge folder holding ``path`` (itself or a parent with challenge.py), or None."""
    for candidate in [path, *path.parents]:
        if (candidate / "challenge.py").is_file() and candidate.parent.parent.name == "challenges":
            return candidate
    return None


def main(argv) -> int:
    console = Console(highlight=False)
    if not argv:
        console.print("usage: python scripts/check_challenge.py PATH...", style="red")
        return 2
    folders = []
    for arg in argv:
        path = Path(arg).resolve()
        folder = challenge_folder(path) if path.exists() else None
        if path.exists() and folder is None and path.is_dir():
            console.print(f"{arg}: not a challenge folder (no challenge.py)", style="red")
            return 2
        if not path.exists():
            console.print(f"{arg}: no such file or folder", style="red")
            return 2
        if folder is not None and folder not in folders:
            folders.append(folder)
    failed = 0
    for folder in folders:
        findings = check_challenge(folder)
        if findings:
            failed += 1
            console.print(f"[red]FAIL[/red] {folder} ({len(findings)} findings)")
            for finding in findings:
                console.print(f"  {finding}", soft_wrap=True)
        else:
            console.print(f"[green]ok[/green]   {folder}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
