"""The bandwidth floor (judge/floor.py, judge.timing.read_floor) on the CPU: which read kernels
are kept, the Triton read kernel under Triton's interpreter, the CUDA one's build, the choice
of the fastest and its cache, and the HBM peak in the roofline."""

import ctypes
import importlib.util
import json

import pytest
import torch
from conftest import requires_nvcc

from judge import floor, timing
from judge.languages import LANGUAGES
from judge.signature import parse_signature
from judge.timing import Roofline, Sample, Timing

requires_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed"
)


@pytest.fixture
def cpu_buffers(monkeypatch):
    """read_kernels on the CPU: buffers of ones in host memory, synchronize a no-op."""
    monkeypatch.setattr(floor, "read_buffer", lambda nbytes: torch.ones(3, floor.ROW_FLOATS))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)


@requires_triton
def test_the_triton_read_kernel_reads_every_element():
    buffer = torch.ones(5, floor.ROW_FLOATS)
    call, total = floor._triton_read(buffer)
    call()
    assert total() == buffer.numel()
    buffer[4, -1] = 0.0  # the last element: the tail of the last program's slice
    buffer[0, 0] = 0.0
    call()
    assert total() == buffer.numel() - 2


@requires_triton
def test_kernels_that_fail_or_misread_are_left_out_with_their_reason(cpu_buffers, monkeypatch):
    def no_nvcc(buffer):
        raise RuntimeError("nvcc is not on PATH\nsecond line")

    monkeypatch.setattr(floor, "_cuda_read", no_nvcc)
    skipped = []
    kept = floor.read_kernels(1 << 20, skipped)
    assert [k.name for k in kept] == ["torch row sum", "Triton one-wave read"]
    assert skipped == ["CUDA float4 one-wave read: RuntimeError: nvcc is not on PATH"]

    def half_read(buffer):  # a "read kernel" that skips half the buffer
        return (lambda: None), (lambda: buffer.numel() / 2)

    monkeypatch.setattr(floor, "_cuda_read", half_read)
    skipped = []
    kept = floor.read_kernels(1 << 20, skipped)
    assert "CUDA float4 one-wave read" not in [k.name for k in kept]
    assert skipped == ["CUDA float4 one-wave read: read a sum of 24576, not 49152"]


@requires_nvcc
def test_the_cuda_read_kernel_builds_for_hopper(tmp_path):
    params = parse_signature(
        {
            "input": (ctypes.POINTER(ctypes.c_float), "in"),
            "output": (ctypes.POINTER(ctypes.c_float), "out"),
            "n": (ctypes.c_int, "in"),
        }
    )
    assert LANGUAGES["cuda"].build(floor.READ_SOURCE, params, tmp_path).is_file()


class FakeProps:
    name, total_memory = "Fake GPU", 1 << 30


def test_the_floor_is_the_fastest_kernel_and_is_cached(tmp_path, monkeypatch):
    medians_ms = {"torch row sum": 0.5, "CUDA float4 one-wave read": 0.4, "slow read": 0.8}
    kernels = [floor.ReadKernel(name, lambda name=name: name) for name in medians_ms]
    measured = []

    def fake_read_kernels(nbytes, skipped):
        skipped.append("Triton one-wave read: RuntimeError: Triton is not installed")
        return kernels

    def fake_time_calls(call, budget_s):
        measured.append(call())
        return Timing.from_samples([Sample(medians_ms[call()], 1.0, 0.0)] * 10)

    monkeypatch.setattr(timing, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: FakeProps())
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(floor, "read_kernels", fake_read_kernels)
    monkeypatch.setattr(floor, "hbm_peak_gbps", lambda: 4917.0)
    monkeypatch.setattr(timing, "time_calls", fake_time_calls)

    found = timing.read_floor(nbytes=2_000_000_000)
    assert found.kernel == "CUDA float4 one-wave read"
    assert found.gbps == pytest.approx(2e9 / 0.4e-3 / 1e9)  # 5000 GB/s
    assert found.per_kernel_gbps["slow read"] == pytest.approx(2500.0)
    assert found.skipped == ["Triton one-wave read: RuntimeError: Triton is not installed"]
    assert found.hbm_peak_gbps == 4917.0
    assert sorted(measured) == sorted(medians_ms)

    measured.clear()
    assert timing.read_floor(nbytes=2_000_000_000) == found and measured == [], "cached"
    cached = json.loads((tmp_path / "bandwidth.json").read_text())
    assert [entry["kernel"] for entry in cached.values()] == ["CUDA float4 one-wave read"]
    medians_ms["torch row sum"] = 0.1
    assert timing.read_floor(refresh=True, nbytes=2_000_000_000).kernel == "torch row sum"


def test_a_cache_of_the_single_kernel_floor_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: FakeProps())
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    # what the judge cached before the floor had several kernels: a bare number
    (tmp_path / "bandwidth.json").write_text(json.dumps({timing._device_key(): 4100.0}))
    monkeypatch.setattr(
        floor, "read_kernels", lambda nbytes, skipped: [floor.ReadKernel("torch row sum", None)]
    )
    monkeypatch.setattr(floor, "hbm_peak_gbps", lambda: None)
    monkeypatch.setattr(
        timing,
        "time_calls",
        lambda call, budget_s: Timing.from_samples([Sample(1.0, 1.0, 0.0)] * 10),
    )
    assert timing.read_floor(nbytes=4_000_000_000).gbps == pytest.approx(4000.0)


def test_roofline_against_the_floor_and_the_hbm_peak():
    roof = Roofline.of(4_000_000_000, 1.0, 4000.0, "torch row sum", 5000.0)
    assert roof.percent_of_streaming_read == pytest.approx(100.0)
    assert roof.percent_of_hbm_peak == pytest.approx(80.0) and not roof.suspicious
    assert Roofline.of(4_000_000_000, 1.0, 4000.0).percent_of_hbm_peak is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the peak is known")
def test_no_hbm_peak_without_a_gpu():
    assert floor.hbm_peak_gbps() is None
