"""The submission languages, one adapter module each, and how a file's language is inferred."""

import re
from pathlib import Path
from typing import Dict, Optional

from judge.languages.base import BuildError, Language
from judge.languages.cuda import CudaLanguage
from judge.languages.cute import CuteLanguage
from judge.languages.jax import JaxLanguage
from judge.languages.mojo import MojoLanguage
from judge.languages.pytorch import PyTorchLanguage
from judge.languages.triton import TritonLanguage

LANGUAGES: Dict[str, Language] = {
    lang.name: lang
    for lang in (
        CudaLanguage(),
        PyTorchLanguage(),
        TritonLanguage(),
        JaxLanguage(),
        CuteLanguage(),
        MojoLanguage(),
    )
}
__all__ = ["BuildError", "LANGUAGES", "Language", "detect_language"]


def detect_language(path: Path) -> Optional[str]:
    """The language of a submission file: by suffix (``.cu``, ``.mojo``, ``.triton.py``...),
    then for plain ``.py`` files by what they import. None when undecidable."""
    name = path.name
    for lang in LANGUAGES:
        if name.endswith(f".{lang}.py"):
            return lang
    if name.endswith(".cu"):
        return "cuda"
    if name.endswith(".mojo") or name.endswith(".🔥"):
        return "mojo"
    if not name.endswith(".py") or not path.is_file():
        return None
    text = path.read_text(errors="replace")
    imports = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", text, re.M))
    for module, lang in (("cutlass", "cute"), ("triton", "triton"), ("jax", "jax")):
        if module in imports:
            return lang
    return "pytorch" if "torch" in imports else None
