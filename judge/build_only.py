"""``--action build``: compile and check the signature, run nothing.

CUDA and Mojo compile in ``Language.build`` already (for the visible GPU's architecture, or
sm_90a / sm_90 where none is visible). A CuTe DSL ``solve`` compiles on its first call, so
here ``cute.compile`` runs for the example test's shapes, in a child process (the
submission's Python never runs in the judge's process) with ``CUTE_DSL_ARCH=sm_90a`` where no
GPU is visible. Python languages have nothing to compile: their ``solve`` declaration is
checked, and a Triton kernel compiles at its first launch.
"""

import os
import subprocess
import sys
from pathlib import Path

from judge.challenges import REPO_ROOT
from judge.languages.base import BuildError, Language

CUTE_ARCH_WITHOUT_GPU = "sm_90a"
BUILD_FAILED = 3  # the child's exit status for a BuildError


def check_build(adapter: Language, artifact: Path, folder: Path) -> str:
    """Finish what ``--action build`` checks beyond ``adapter.build`` and say what was built.

    Args:
        adapter: the submission's language.
        artifact: what ``adapter.build`` returned.
        folder: the challenge folder.

    Returns:
        One line for the report's notes.

    Raises:
        BuildError: cute.compile rejected the submission (the message names its line).
        RuntimeError: the compile check itself failed.
    """
    if adapter.name == "cute":
        return _compile_cute(artifact, folder)
    if artifact.suffix == ".so":
        return f"built {artifact}"
    return f"{adapter.name}: solve's declaration checked; nothing to compile before it runs"


def _compile_cute(source: Path, folder: Path) -> str:
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("CUTE_DSL_ARCH", CUTE_ARCH_WITHOUT_GPU)
    result = subprocess.run(
        [sys.executable, "-m", "judge.build_only", str(source), str(folder)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    if result.returncode == BUILD_FAILED:
        raise BuildError(result.stdout.strip())
    if result.returncode != 0:
        raise RuntimeError(f"the CuTe compile check failed: {result.stderr.strip()[-2000:]}")
    arch = env.get("CUTE_DSL_ARCH", "the visible GPU")
    return f"cute.compile succeeded for the example test's shapes ({arch})"


def _main(source: str, folder: str) -> int:
    """In the child: ``cute.compile`` the submission for the example test's shapes."""
    import torch
    from core.challenge_base import materialize_test

    from judge.challenges import load_challenge
    from judge.frames import describe_exception
    from judge.languages.base import import_solve
    from judge.languages.cute import compile_solve
    from judge.signature import parse_signature

    challenge = load_challenge(Path(folder), "cpu")
    params = parse_signature(challenge.get_solve_signature())
    torch.manual_seed(0)
    example = materialize_test(challenge.generate_example_test(), "cpu", 0)
    try:
        compile_solve(import_solve(Path(source)), params, example, Path(source))
    except BuildError as error:
        print(error)
        return BUILD_FAILED
    except Exception as error:  # the module's own top-level code raised
        print(describe_exception(error, str(Path(__file__).parent)))
        return BUILD_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
