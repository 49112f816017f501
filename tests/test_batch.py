"""run_challenge.py batch on the CPU: the same verdicts as single runs, error lines for bad SPEC
lines, a killed batch resumed without redoing finished work, and a small batch on a local Ray
cluster. Small "run" actions keep the CPU cost low."""

import hashlib
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from judge import cli
from judge.batch import run_batch
from judge.batch_spec import parse_spec
from judge.challenges import REPO_ROOT
from judge.history import History
from judge.progress import BatchProgress, timing_progress

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SOLUTION_96 = REPO_ROOT / "solutions" / "96_int8_kv_cache_attention" / "solution.pytorch.py"
# what each submission is judged with: challenge 96, the example test ("run")
SUBMISSIONS = {
    "wrong": FIXTURES / "wrong_result.pytorch.py",
    "writes-input": FIXTURES / "writes_input.pytorch.py",
    "raises": FIXTURES / "raises.pytorch.py",
    "no-solve": FIXTURES / "missing_solve.pytorch.py",
    "plain": SOLUTION_96,
}


def console() -> Console:
    return Console(width=200, force_terminal=False, record=True)


def write_spec(path: Path, entries) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def read_lines(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verdicts(report: dict):
    """(build error?, {test: verdict}) of a JSON report."""
    return bool(report["build_error"]), {t["name"]: t["verdict"] for t in report["tests"]}


def test_batch_gets_the_verdicts_of_single_runs(tmp_path):
    single = {}
    for name, path in SUBMISSIONS.items():
        report_path = tmp_path / f"{name}.json"
        code = cli.main(
            ["96", "--device", "cpu", "--action", "run", "--solution", str(path)]
            + ["--json", str(report_path), "--db", str(tmp_path / "single.sqlite")]
        )
        single[name] = (code, json.loads(report_path.read_text()))
    entries = [
        {"id": name, "challenge": 96, "solution": str(path), "action": "run"}
        for name, path in SUBMISSIONS.items()
    ]
    # the plain solution once more, as inline source without a language field
    entries.append({"id": "inline", "challenge": "96", "source": SOLUTION_96.read_text()})
    entries[-1]["action"] = "run"
    out = tmp_path / "results.jsonl"
    spec = write_spec(tmp_path / "spec.jsonl", entries)
    code = run_batch(spec, out, console(), device="cpu", jobs=2, db=tmp_path / "batch.sqlite")
    assert code == cli.ExitCode.TEST_FAILED  # four of the six fail
    lines = {line["id"]: line for line in read_lines(out)}
    assert sorted(lines) == sorted(entries_id["id"] for entries_id in entries)
    for name, (single_code, report) in single.items():
        line = lines[name]
        assert line["exit_code"] == single_code, name
        assert verdicts(line) == verdicts(report), name
        assert set(report) <= set(line), "a result line is the JSON report plus id"
    assert verdicts(lines["inline"]) == verdicts(single["plain"][1])
    inline = Path(lines["inline"]["solution"])
    assert inline.parent == tmp_path / "results.jsonl.sources" and inline.is_file()
    assert inline.read_text() == SOLUTION_96.read_text()
    expected = {"wrong": "WRONG ANSWER", "writes-input": "INPUT MODIFIED"}
    expected.update({"raises": "RUNTIME ERROR", "plain": "PASS", "inline": "PASS"})
    for name, verdict in expected.items():
        assert verdicts(lines[name])[1] == {"example": verdict}, name
    assert verdicts(lines["no-solve"]) == (True, {})
    with History(tmp_path / "batch.sqlite") as history:
        rows = history.runs("96_int8_kv_cache_attention")
    assert sorted(r.submission_id for r in rows) == sorted(lines)
    assert {r.source for r in rows} == {"batch"}
    with History(tmp_path / "single.sqlite") as history:
        rows = history.runs("96_int8_kv_cache_attention")
    assert len(rows) == len(SUBMISSIONS) and {r.source for r in rows} == {"single"}
    by_path = {r.solution_path: r for r in rows}
    digest = hashlib.sha256(SOLUTION_96.read_bytes()).hexdigest()
    assert by_path[str(SOLUTION_96)].solution_hash == digest


def test_bad_spec_lines_get_error_lines_not_tracebacks(tmp_path):
    spec = tmp_path / "spec.jsonl"
    good = {"challenge": 96, "solution": str(SOLUTION_96), "action": "run"}
    spec.write_text(
        "{not json\n"
        + json.dumps(["a", "list"])
        + "\n"
        + json.dumps({"id": "typo", "challenge": 96, "solutoin": "x.py"})
        + "\n"
        + json.dumps({"id": "missing", "challenge": 96, "solution": "nowhere.cu"})
        + "\n"
        + json.dumps({"id": "both", **good, "source": "def solve(): pass"})
        + "\n"
        + json.dumps({"id": "chal", **good, "challenge": 12345})
        + "\n"
        + json.dumps({"id": "lang", **good, "language": "fortran"})
        + "\n"
        + json.dumps({"id": "act", **good, "action": "explode"})
        + "\n"
        + json.dumps({"id": "what", "challenge": 96, "source": "just some words"})
        + "\n"
    )
    out = tmp_path / "results.jsonl"
    shown = console()
    code = run_batch(spec, out, shown, device="cpu", db=tmp_path / "h.sqlite")
    assert code == cli.ExitCode.TEST_FAILED
    lines = {line["id"]: line for line in read_lines(out)}
    assert all(line["exit_code"] == 2 and "tests" not in line for line in lines.values())
    assert "not JSON" in lines["line-1"]["error"] and lines["line-1"]["spec_line"] == 1
    assert "not a JSON object" in lines["line-2"]["error"]
    assert "solutoin" in lines["typo"]["error"]
    assert "nowhere.cu" in lines["missing"]["error"]
    assert "exactly one of solution" in lines["both"]["error"]
    assert "12345" in lines["chal"]["error"]
    assert "fortran" in lines["lang"]["error"]
    assert "explode" in lines["act"]["error"]
    assert "language" in lines["what"]["error"]
    assert "Traceback" not in shown.export_text()


def test_folder_spec_takes_the_challenge_from_numbered_folders(tmp_path):
    (tmp_path / "95_alice").mkdir()
    (tmp_path / "95_alice" / "kernel.pytorch.py").write_text("import torch\n")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "guess.py").write_text("import triton\n")
    (tmp_path / "loose" / "notes.md").write_text("not a submission\n")
    (tmp_path / "loose" / "__pycache__").mkdir()
    (tmp_path / "loose" / "__pycache__" / "x.cu").write_text("")
    without = {s.id: s for s in parse_spec(tmp_path, None, "submit", tmp_path / "src")}
    assert sorted(without) == ["95_alice/kernel.pytorch.py", "loose/guess.py"]
    assert without["95_alice/kernel.pytorch.py"].challenge.number == 95
    assert "--challenge" in without["loose/guess.py"].error
    with_option = {s.id: s for s in parse_spec(tmp_path, "96", "run", tmp_path / "src")}
    assert with_option["loose/guess.py"].challenge.number == 96
    assert with_option["loose/guess.py"].language == "triton"
    assert with_option["95_alice/kernel.pytorch.py"].challenge.number == 95


def test_interrupted_batch_resumes_without_rerunning_what_finished(tmp_path):
    names = ["wrong", "raises", "writes-input"]
    entries = [
        {"id": n, "challenge": 96, "solution": str(SUBMISSIONS[n]), "action": "run"} for n in names
    ]
    spec = write_spec(tmp_path / "spec.jsonl", entries)
    out, db = tmp_path / "results.jsonl", tmp_path / "h.sqlite"
    command = [sys.executable, str(REPO_ROOT / "run_challenge.py"), "batch", str(spec)]
    command += ["--out", str(out), "--db", str(db), "--device", "cpu", "--jobs", "1"]
    batch = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    deadline = time.monotonic() + 240
    while not (out.is_file() and out.read_text().strip()):
        assert batch.poll() is None and time.monotonic() < deadline, batch.communicate()[0]
        time.sleep(0.2)
    os.killpg(batch.pid, signal.SIGINT)
    printed = batch.communicate(timeout=60)[0]
    assert batch.returncode == cli.ExitCode.BAD_USAGE, printed
    assert "interrupted" in printed and "Traceback" not in printed
    first = {line["id"] for line in read_lines(out)}
    assert 1 <= len(first) < len(names), printed
    with History(db) as history:
        before = {r.submission_id: r.id for r in history.runs()}
    assert set(before) == first  # every result in the file is in the history, and only those

    shown = console()
    run_batch(spec, out, shown, device="cpu", db=db)
    with History(db) as history:
        after = history.runs()
    assert sorted(r.submission_id for r in after) == sorted(names)  # each judged once
    assert {r.submission_id: r.id for r in after if r.submission_id in first} == before
    lines = read_lines(out)
    assert sorted(line["id"] for line in lines) == sorted(names), "one line per submission"
    assert shown.export_text().count("(from the history)") == len(first)


def test_local_ray_cluster_runs_a_small_batch(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    entries = [
        {"id": "wrong", "challenge": 96, "solution": str(SUBMISSIONS["wrong"]), "action": "run"},
        {"id": "plain", "challenge": 96, "solution": str(SOLUTION_96), "action": "run"},
    ]
    spec = write_spec(tmp_path / "spec.jsonl", entries)
    out, db = tmp_path / "results.jsonl", tmp_path / "h.sqlite"
    shown = console()
    options = {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 80 * 2**20}
    code = run_batch(
        spec, out, shown, device="cpu", ray_address="local", db=db, ray_options=options
    )
    assert code == cli.ExitCode.TEST_FAILED
    lines = {line["id"]: line for line in read_lines(out)}
    assert verdicts(lines["wrong"]) == (False, {"example": "WRONG ANSWER"})
    assert verdicts(lines["plain"]) == (False, {"example": "PASS"})
    # the task judged the copy Ray shipped; the report names the submitter's file
    assert lines["plain"]["solution"] == str(SOLUTION_96)
    assert "Ray: 2 tasks on the CPU" in shown.export_text()
    with History(db) as history:
        assert sorted(r.submission_id for r in history.runs()) == ["plain", "wrong"]


def test_progress_is_live_only_on_a_terminal():
    plain = Console(file=io.StringIO(), force_terminal=False, width=120)
    with BatchProgress(plain, 2, plain.is_terminal) as bar:
        bar.advance("PASS", "a")
        bar.advance("WRONG ANSWER", "b")
    assert plain.file.getvalue().splitlines() == ["[1/2] a", "[2/2] b"]
    assert bar.counts == {"PASS": 1, "WRONG ANSWER": 1}
    with timing_progress(plain, 1.0) as on_sample:
        assert on_sample is None
    live = Console(file=io.StringIO(), force_terminal=True, width=120)
    with BatchProgress(live, 2, live.is_terminal) as bar:
        bar.advance("PASS", "a")
    assert "1/2" in live.file.getvalue() and "PASS 1" in live.file.getvalue()
    with timing_progress(live, 2.0) as on_sample:
        on_sample(1)
        on_sample(2)
    assert "timing: 2 samples" in live.file.getvalue()


# -- scripts/batch_vs_single.py, the release check -----------------------------------------

_check_spec = importlib.util.spec_from_file_location(
    "batch_vs_single", REPO_ROOT / "scripts" / "batch_vs_single.py"
)
release_check = importlib.util.module_from_spec(_check_spec)
_check_spec.loader.exec_module(release_check)


def test_release_check_lists_each_fixture_under_its_challenge():
    entries = release_check.submissions([95, 96], fixtures=True)
    challenge = {Path(e["solution"]).name: e["challenge"] for e in entries if "fixtures" in e["id"]}
    # tests/fixtures/README.md: these name 95 in their docstrings, the rest are for 96
    for name in ("tf32_rounding.pytorch.py", "tf32_dot.triton.py", "gqa_modulo.pytorch.py"):
        assert challenge[name] == 95
    assert challenge["hangs.cu"] == challenge["wrong_result.mojo"] == 96
    assert "README.md" not in challenge and "int8_attention.cuh" not in challenge
    solutions_95 = sorted(
        p.name for p in (REPO_ROOT / "solutions" / "95_decode_phase_attention").iterdir()
    )
    listed_95 = sorted(
        Path(e["solution"]).name for e in entries if e["id"].startswith("solutions/95")
    )
    assert listed_95 == solutions_95
    assert [e["challenge"] for e in entries] == sorted(e["challenge"] for e in entries)
    only_96 = release_check.submissions([96], fixtures=True)
    assert only_96 and all(e["challenge"] == 96 for e in only_96)


def test_release_check_names_the_test_whose_verdict_differs():
    def report(all_negative):
        tests = [{"name": "cache_len_1_mqa", "verdict": "WRONG ANSWER"}]
        tests.append({"name": "all_negative_values", "verdict": all_negative})
        return {"build_error": None, "tests": tests, "performance": {"verdict": "PASS"}}

    batch, single = release_check.verdict_key(report("WRONG ANSWER")), release_check.verdict_key(
        report("PASS")
    )
    assert batch != single
    assert release_check.differences(batch, single) == ["all_negative_values: WRONG ANSWER / PASS"]
    assert release_check.verdict_key({"error": "no such file", "exit_code": 2}) == ("error", 2)
    assert release_check.verdict_key(None) is None


def test_release_check_judges_single_submits_with_the_batch_seeds(tmp_path):
    argv = ["--challenges", "96", "--select", "no_write.pytorch.py", "--device", "cpu"]
    assert release_check.main(argv + ["--out", str(tmp_path)]) == 0
    (batch_line,) = read_lines(tmp_path / "batch.jsonl")
    single = json.loads(
        (tmp_path / "single" / "tests__fixtures__no_write.pytorch.py.json").read_text()
    )
    assert single["seed"] == batch_line["seed"]
    assert verdicts(single) == verdicts(batch_line)
    assert set(verdicts(single)[1].values()) == {"WRONG ANSWER"}
    assert release_check.main(argv + ["--select", "nothing.py", "--out", str(tmp_path)]) == 2
