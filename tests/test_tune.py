"""scripts/tune.py's CPU-side pieces: its command line (one known challenge, files that exist
and whose language the judge can tell), the printout against the floor, and its refusal to run
without a GPU. The timing itself is scripts/benchmark.py's (tests/test_benchmark.py)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "tune.py"
_spec = importlib.util.spec_from_file_location("tune", SCRIPT)
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)
report = tune.benchmark.sys.modules["bench_report"]
EDITORIAL = (
    Path(__file__).resolve().parent.parent / "solutions/98_fp8_kv_cache_attention/editorial.cu"
)


def test_the_command_line_takes_one_challenge_and_existing_files(tmp_path):
    triton_file = tmp_path / "variant.triton.py"
    triton_file.write_text("import triton\n")
    args = tune.parse_args(["98", str(EDITORIAL), str(triton_file), "--budget", "0.5"])
    assert args.challenge == "98" and args.files == [EDITORIAL, triton_file]
    assert args.budget == 0.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["42", str(EDITORIAL)], "unknown challenge(s) 42"),
        (["97,98", str(EDITORIAL)], "one challenge number, not 97,98"),
        (["98", "no/such/file.cu"], "no/such/file.cu: no such file"),
        (["98"], "the following arguments are required: files"),
    ],
)
def test_bad_arguments_get_a_usage_error_that_names_them(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tune.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_file_of_no_known_language_is_refused(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a kernel\n")
    with pytest.raises(SystemExit):
        tune.parse_args(["98", str(notes)])
    assert "cannot tell its language" in capsys.readouterr().err


def test_each_row_gives_its_median_and_share_of_the_floor():
    floor = report.Floor(268_435_456, {"CUDA float4 one-wave read": 0.060, "torch sum": 0.070})
    rows = [
        report.Entry("a.cu", status="ok", ms=0.075),
        report.Entry("b.cu", status="WRONG", ms=0.120),
        report.Entry("c.cu", status="error: CompileError: nvcc failed"),
    ]
    lines = tune.result_lines("98", floor, rows)
    assert lines[0] == "floor 98: 60.0 us (CUDA float4 one-wave read, 4474 GB/s)"
    assert lines[1].split() == ["a.cu", "ok", "75.0", "us", "80.0%"]
    assert lines[2].split() == ["b.cu", "WRONG", "120.0", "us", "50.0%"]
    assert lines[3].split()[:2] == ["c.cu", "error:"] and "us" not in lines[3].split()


def test_without_a_gpu_it_stops_with_a_message(monkeypatch, capsys):
    monkeypatch.setattr(tune.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["98", str(EDITORIAL)])
    assert exit_info.value.code == 2 and "no CUDA device" in capsys.readouterr().err
