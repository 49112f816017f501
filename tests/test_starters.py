"""Starters build or import on this machine and leave the output wrong."""

import importlib.util
import os
import subprocess

import pytest
import torch
from conftest import requires_nvcc

from judge.languages.base import import_solve
from judge.languages.cute import compile_solve
from judge.languages.mojo import RELEASE, MojoLanguage, mojo_command
from judge.signature import parse_signature


def import_file(path):
    spec = importlib.util.spec_from_file_location(f"starter_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def poisoned_example(challenge):
    test = challenge.generate_example_test()
    test["output"] = torch.full_like(test["output"], float("nan"))
    return test


@pytest.mark.parametrize("language", ["pytorch", "triton"])
def test_python_starters_run_and_do_not_solve(folder, challenge, language):
    if language == "triton":
        pytest.importorskip("triton", reason="the triton extra is not installed")
    module = import_file(folder.starter_dir / f"starter.{language}.py")
    test = poisoned_example(challenge)
    module.solve(**test)
    assert torch.isnan(test["output"]).all(), "a starter must not write the output"


def test_jax_starter_runs_and_returns_no_output(folder, challenge):
    jnp = pytest.importorskip("jax.numpy", reason="the jax extra is not installed")
    module = import_file(folder.starter_dir / "starter.jax.py")
    test = challenge.generate_example_test()
    signature = challenge.get_solve_signature()
    args = {
        k: jnp.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v
        for k, v in test.items()
        if signature[k][1] == "in"
    }
    assert module.solve(**args) is None


def test_cute_starter_compiles(folder, challenge):
    pytest.importorskip(
        "cutlass.cute", reason="the cute extra (nvidia-cutlass-dsl) is not installed"
    )
    path = folder.starter_dir / "starter.cute.py"
    params = parse_signature(challenge.get_solve_signature())
    compiled = compile_solve(import_solve(path), params, challenge.generate_example_test(), path)
    assert callable(compiled)


@requires_nvcc
def test_cuda_starter_compiles(folder, tmp_path):
    library = tmp_path / "starter.so"
    result = subprocess.run(
        [
            "nvcc",
            "-shared",
            "-Xcompiler",
            "-fPIC",
            "-arch=sm_90",
            "-o",
            str(library),
            str(folder.starter_dir / "starter.cu"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    symbols = subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True).stdout
    assert " T solve" in symbols, "solve must be exported with C linkage"


@pytest.mark.skipif(
    MojoLanguage().missing_toolchain() is not None,
    reason=f"Mojo {RELEASE} is not installed (pip install -e .[mojo])",
)
def test_mojo_starter_builds_for_hopper(folder, tmp_path):
    library = tmp_path / "libstarter.so"
    result = subprocess.run(
        [
            mojo_command(),
            "build",
            "--emit",
            "shared-lib",
            "--target-accelerator",
            "sm_90",
            str(folder.starter_dir / "starter.mojo"),
            "-o",
            str(library),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MODULAR_TELEMETRY": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert library.stat().st_size > 0
