"""Finding and loading challenge folders in the public LeetGPU layout."""

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

REPO_ROOT = Path(__file__).resolve().parent.parent
CHALLENGES_DIR = REPO_ROOT / "challenges"
DIFFICULTIES = ("easy", "medium", "hard")
FOLDER_PATTERN = re.compile(r"^(\d+)_(\w+)$")


class ChallengeNotFound(LookupError):
    """No challenge folder matches what the user asked for."""


class ChallengeLoadError(RuntimeError):
    """A challenge folder exists but its ``challenge.py`` cannot be imported or instantiated."""


@dataclass(frozen=True)
class ChallengeFolder:
    """A challenge folder: ``challenges/<difficulty>/<number>_<slug>/``."""

    path: Path

    @property
    def number(self) -> int:
        return int(FOLDER_PATTERN.match(self.path.name).group(1))

    @property
    def slug(self) -> str:
        return FOLDER_PATTERN.match(self.path.name).group(2)

    @property
    def difficulty(self) -> str:
        return self.path.parent.name

    @property
    def starter_dir(self) -> Path:
        return self.path / "starter"


def list_challenges(root: Path = CHALLENGES_DIR) -> List[ChallengeFolder]:
    """All challenge folders under ``root``, sorted by number."""
    folders = []
    for difficulty in DIFFICULTIES:
        for path in sorted((root / difficulty).glob("*")):
            if FOLDER_PATTERN.match(path.name) and (path / "challenge.py").is_file():
                folders.append(ChallengeFolder(path))
    return sorted(folders, key=lambda f: f.number)


def find_challenge(query: Union[str, Path], root: Path = CHALLENGES_DIR) -> ChallengeFolder:
    """Resolve a folder path, a number ("95") or a name ("decode_phase_attention").

    Raises:
        ChallengeNotFound: nothing matches; the message lists what exists.
    """
    path = Path(query)
    if path.is_dir():
        if (path / "challenge.py").is_file() and FOLDER_PATTERN.match(path.resolve().name):
            return ChallengeFolder(path.resolve())
        raise ChallengeNotFound(f"{path} is not a challenge folder (no challenge.py in it)")
    text = str(query).strip().lower()
    for folder in list_challenges(root):
        if text in (str(folder.number), folder.slug, folder.path.name):
            return folder
    known = ", ".join(f"{f.number} ({f.slug})" for f in list_challenges(root)) or "none"
    raise ChallengeNotFound(f"no challenge matches {query!r}; known challenges: {known}")


def load_challenge_module(folder: Union[ChallengeFolder, Path]):
    """Import a folder's ``challenge.py`` as its own module.

    Raises:
        ChallengeLoadError: the file fails to import or defines no ``Challenge`` class.
    """
    path = Path(getattr(folder, "path", folder))
    module_name = f"challenge_{path.name}"
    spec = importlib.util.spec_from_file_location(module_name, path / "challenge.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report, never crash
        raise ChallengeLoadError(f"{path / 'challenge.py'} failed to import: {exc!r}") from exc
    if not hasattr(module, "Challenge"):
        raise ChallengeLoadError(f"{path / 'challenge.py'} defines no class Challenge")
    return module


def load_challenge(folder: Union[ChallengeFolder, Path], device: str = "cuda"):
    """Instantiate a folder's ``Challenge`` on ``device``.

    Both constructor styles of the public set work: ``Challenge(device=...)`` and the older
    ``Challenge()`` whose ``__init__`` passes ``name=..., atol=...`` to the base class.

    Raises:
        ChallengeLoadError: import or construction failed.
    """
    cls = load_challenge_module(folder).Challenge
    try:
        try:
            challenge = cls(device=device)
        except TypeError:
            challenge = cls()
    except Exception as exc:
        raise ChallengeLoadError(f"Challenge() failed in {folder}: {exc!r}") from exc
    challenge.device = device
    return challenge


def functional_test_names(challenge, count: int) -> List[str]:
    """Names of the functional tests: the challenge's ``get_functional_test_names()`` when it
    has one (and it gives ``count`` names), else ``functional_1`` ... ``functional_<count>``."""
    names: Optional[List[str]] = None
    getter = getattr(challenge, "get_functional_test_names", None)
    if callable(getter):
        names = list(getter())
    if names is None or len(names) != count:
        names = [f"functional_{i + 1}" for i in range(count)]
    return names
