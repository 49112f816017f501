"""Tracebacks as a submission's author needs them: the submission's own frames first, the
error from the frame where it was raised, Triton's compile and interpreter errors at the
kernel's line; and the frame of a challenge file that needs CUDA on a machine without it."""

import linecache
import re
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import List, Optional

MAX_FRAMES = 8
# what torch raises when a tensor is put on "cuda" without a usable GPU
CUDA_UNAVAILABLE = (
    "Torch not compiled with CUDA enabled",
    "Found no NVIDIA driver",
    "No CUDA GPUs are available",
    "no CUDA-capable device",
)


LIBRARIES = ("triton", "torch", "jax", "jaxlib", "cutlass", "numpy")


def _library_dirs() -> List[str]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in LIBRARIES:  # wherever they were installed (a PYTHONPATH folder, say)
        module = sys.modules.get(name)
        if getattr(module, "__file__", None):
            dirs.add(str(Path(module.__file__).parent))
    return sorted(d for d in dirs if d)


def _chain(exc: BaseException) -> List[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain = [exc]
    while len(chain) < 6:
        inner = chain[-1].__cause__ or (
            None if chain[-1].__suppress_context__ else chain[-1].__context__
        )
        if inner is None or inner in chain:
            break
        chain.append(inner)
    return chain


def _own(frame: traceback.FrameSummary, foreign: List[str]) -> bool:
    name = frame.filename
    return not name.startswith("<") and not any(name.startswith(d) for d in foreign)


def _kernel_frame(exc: BaseException, foreign: List[str]) -> Optional[traceback.FrameSummary]:
    """For a Triton ``CompilationError``: the frame of the kernel line it names. Its line
    number counts from the kernel's ``def``, which is looked up in the submission's files."""
    src, node = getattr(exc, "src", None), getattr(exc, "node", None)
    if not isinstance(src, str) or not hasattr(node, "lineno") or exc.__traceback__ is None:
        return None
    kernel = re.match(r"\s*def\s+(\w+)", src)
    if kernel is None:
        return None
    # the innermost of the submission's files first: the one whose code launched the kernel
    files = [f.filename for f in traceback.extract_tb(exc.__traceback__) if _own(f, foreign)]
    for filename in dict.fromkeys(reversed(files)):
        lines = linecache.getlines(filename)
        for number, text in enumerate(lines, 1):
            if re.match(rf"\s*def\s+{kernel.group(1)}\s*\(", text):
                line = number + node.lineno - 1
                code = lines[line - 1].strip() if line <= len(lines) else ""
                return traceback.FrameSummary(
                    filename, line, kernel.group(1), lookup_line=False, line=code
                )
    return None


def describe_exception(exc: BaseException, judge_dir: str) -> str:
    """The text of a RUNTIME ERROR: the submission's frames (outermost first, the kernel's
    line for a Triton compile or interpreter error among them), then the error itself, then
    the library frame that raised it.

    Args:
        exc: what the call raised.
        judge_dir: the judge package's folder; its frames are left out.

    Returns:
        A few lines of text, without a trailing newline.
    """
    if isinstance(exc, SystemExit):
        return f"solve called exit({exc.code!r})"
    foreign = [judge_dir] + _library_dirs()
    chain = _chain(exc)
    frames: List[traceback.FrameSummary] = []
    for link in chain:
        frames.extend(traceback.extract_tb(link.__traceback__))
        kernel = _kernel_frame(link, foreign)
        if kernel is not None:
            frames.append(kernel)
    own = [f for f in frames if _own(f, foreign)]
    if not own:  # nothing of the submission's: the last frames outside the judge
        own = [f for f in frames if not f.filename.startswith(judge_dir)][-3:]
    root = chain[-1]
    text = "".join(traceback.format_list(own[-MAX_FRAMES:]))
    message = getattr(root, "error_message", None) if hasattr(root, "src") else None
    if message:
        text += f"{type(root).__module__}.{type(root).__name__}: {message}\n"
    else:
        text += "".join(traceback.format_exception_only(type(root), root))
    raised = traceback.extract_tb(root.__traceback__)
    if raised and not _own(raised[-1], foreign) and raised[-1] not in own:
        where = _short_path(raised[-1].filename)
        text += f"  (raised in {where}:{raised[-1].lineno}, in {raised[-1].name})\n"
    return text.strip()


def _short_path(filename: str) -> str:
    """A library file's path from its package on, e.g. ``triton/language/semantic.py``."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    return filename


def cuda_required(exc: BaseException, challenge_file: Path) -> Optional[str]:
    """When ``exc`` is torch saying CUDA is unavailable and a frame of ``challenge_file``
    made the call: ``"FILE:LINE: CODE"`` naming that frame; else None."""
    chain = _chain(exc)
    if not any(phrase in str(link) for link in chain for phrase in CUDA_UNAVAILABLE):
        return None
    target = str(Path(challenge_file).resolve())
    for link in chain:
        for frame in reversed(traceback.extract_tb(link.__traceback__)):
            if str(Path(frame.filename).resolve()) == target:
                return f"{challenge_file}:{frame.lineno}: {(frame.line or '').strip()}"
    return None
