"""The worker's confinement, its reply channel and the timing-path guard, alone and against the
hostile fixtures end to end (on the CPU, and on the GPU where there is one)."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_judge import DEVICES, FIXTURES, SOLUTIONS, judge

import judge as judge_package
from judge import sandbox
from judge.challenges import REPO_ROOT
from judge.channel import (
    CorruptReply,
    ReplyReader,
    ReplyTimeout,
    WorkerGone,
    encode_reply,
)
from judge.integrity import TimingPathGuard

LANDLOCK, SECCOMP, MISSING = sandbox.probe()
requires_sandbox = pytest.mark.skipif(
    not (LANDLOCK and SECCOMP), reason=f"this machine cannot confine a worker: {MISSING}"
)


# -- the reply channel ----------------------------------------------------------------------


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    yield ReplyReader(read_fd), write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_well_formed_reply_is_read(pipe):
    reader, fd = pipe
    os.write(fd, encode_reply(7, "timed", gpu_ms=0.25, event_ms=0.3, tail_ms=0.01))
    assert reader.read(7, 1.0) == ("timed", {"gpu_ms": 0.25, "event_ms": 0.3, "tail_ms": 0.01})


@pytest.mark.parametrize(
    "line, why",
    [
        (b"\x80\x04garbage\n", "not JSON"),
        (b"[1, 2]\n", "not an object"),
        (b'{"seq": 7, "tag": "faster"}\n', "unknown reply tag"),
        (b'{"seq": 8, "tag": "done"}\n', "answers request 8"),
        (b'{"seq": 7, "tag": "done", "extra": 1}\n', "has the fields"),
        (b'{"seq": 7, "tag": "sync_tail", "ms": "0.1"}\n', "ms is str"),
        (b'{"seq": true, "tag": "done"}\n', "answers request True"),
    ],
)
def test_a_malformed_or_foreign_reply_is_corrupt(pipe, line, why):
    reader, fd = pipe
    os.write(fd, line)
    with pytest.raises(CorruptReply, match=why):
        reader.read(7, 1.0)


def test_an_endless_line_is_corrupt_not_a_hang(pipe):
    reader, fd = pipe

    def flood():
        try:
            while True:
                os.write(fd, b"x" * 65536)
        except OSError:  # the reader's end closed
            pass

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    with pytest.raises(CorruptReply, match="longer than"):
        reader.read(7, 10.0)
    os.close(reader.fd)
    writer.join(timeout=5)


def test_half_a_reply_times_out_at_the_deadline(pipe):
    reader, fd = pipe
    os.write(fd, b'{"seq": 7, "tag": "do')  # no newline ever comes
    started = time.monotonic()
    with pytest.raises(ReplyTimeout):
        reader.read(7, 0.3)
    assert 0.25 < time.monotonic() - started < 2.0


def test_a_closed_pipe_is_a_dead_worker(pipe):
    reader, fd = pipe
    os.close(fd)
    with pytest.raises(WorkerGone):
        reader.read(7, 1.0)


def test_bytes_nobody_asked_for_are_seen(pipe):
    reader, fd = pipe
    assert not reader.pending()
    os.write(fd, encode_reply(3, "done"))
    assert reader.pending()


# -- the timing-path guard -------------------------------------------------------------------


def test_the_guard_sees_no_change_when_nothing_changed():
    assert TimingPathGuard().changes() == []


def test_the_guard_names_each_kind_of_tampering(monkeypatch):
    import torch

    import judge.timing

    guard = TimingPathGuard()

    def nothing():
        return None

    monkeypatch.setattr(judge.timing, "DeviceActivity", type("Fake", (), {}))
    monkeypatch.setattr(time, "perf_counter", lambda: 0.0)
    monkeypatch.setattr(torch.Tensor, "sum", lambda self, *a, **k: self, raising=False)
    monkeypatch.setattr(judge.timing.time_once, "__code__", nothing.__code__)
    found = "\n".join(guard.changes())
    assert "judge.timing.DeviceActivity was replaced" in found
    assert "time.perf_counter was replaced" in found
    assert "Tensor.sum now shadows the inherited one" in found
    assert "judge.timing.time_once was rewritten in place" in found


def test_the_guard_sees_a_trace_hook():
    guard = TimingPathGuard()
    sys.setprofile(lambda *args: None)
    try:
        assert any("profile hook" in change for change in guard.changes())
    finally:
        sys.setprofile(None)


# -- the confinement ---------------------------------------------------------------------------


def _in_a_confined_child(scratch: Path, attempts) -> dict:
    """Fork, confine the child by a policy for ``scratch``, run each attempt; return
    {name: "ok" or the error's class name}."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        results = {}
        try:
            results["applied"] = sandbox.confine(sandbox.Policy.for_scratch(scratch), "require")
            for name, attempt in attempts.items():
                try:
                    attempt()
                    results[name] = "ok"
                except OSError as exc:
                    results[name] = type(exc).__name__
        finally:
            os.write(write_fd, repr(results).encode())
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd) as answer:
        return eval(answer.read())  # our own child's repr of a dict of strings


@requires_sandbox
def test_the_confined_worker_writes_only_its_scratch(tmp_path):
    scratch, outside = tmp_path / "scratch", tmp_path / "outside"
    scratch.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("learner's work")
    results = _in_a_confined_child(
        scratch,
        {
            "scratch": lambda: (scratch / "cache.bin").write_bytes(b"1"),
            "create": lambda: (outside / "new.txt").write_text("x"),
            "overwrite": lambda: (outside / "keep.txt").write_text("gone"),
            "delete": lambda: os.unlink(outside / "keep.txt"),
            "rename": lambda: os.rename(outside / "keep.txt", scratch / "stolen.txt"),
            "kill_parent": lambda: os.kill(os.getppid(), 0),
            "kill_everyone": lambda: os.kill(-1, 0),
            "tcp": lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
            "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            "unix": lambda: socket.socket(socket.AF_UNIX).close(),
            "signal_self": lambda: os.kill(os.getpid(), 0),
        },
    )
    assert results["applied"] == "landlock+seccomp"
    assert results["scratch"] == results["unix"] == results["signal_self"] == "ok"
    for attempt in ("create", "overwrite", "delete", "rename", "kill_parent", "kill_everyone"):
        assert results[attempt] == "PermissionError", attempt
    assert results["tcp"] == results["udp"] == "PermissionError"
    assert (outside / "keep.txt").read_text() == "learner's work"
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_require_without_a_mechanism_says_which(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_landlock_abi", lambda: (0, "the kernel refuses Landlock"))
    monkeypatch.setattr(sandbox, "_seccomp_module", lambda: (None, "libseccomp is missing"))
    with pytest.raises(sandbox.SandboxUnavailable, match="refuses Landlock.*libseccomp"):
        sandbox.confine(sandbox.Policy.for_scratch(tmp_path), "require")
    assert sandbox.confine(sandbox.Policy.for_scratch(tmp_path), "auto").startswith("none: ")
    assert sandbox.confine(sandbox.Policy.for_scratch(tmp_path), "off") == "none: --sandbox off"


def test_require_is_a_usage_error_where_the_machine_cannot_confine(monkeypatch, capsys):
    from judge import cli

    monkeypatch.setattr(cli, "probe_sandbox", lambda: (False, True, "no Landlock in this kernel"))
    solution = SOLUTIONS / "96_int8_kv_cache_attention" / "solution.pytorch.py"
    code = cli.main(["96", "--device", "cpu", "--sandbox", "require", "--solution", str(solution)])
    assert code == cli.ExitCode.BAD_USAGE
    assert "--sandbox require: no Landlock in this kernel" in capsys.readouterr().out


# -- the attacks, end to end ---------------------------------------------------------------------

ATTACKS = [
    ("writes_inherited_fds.pytorch.py", "CRASH", "the worker's replies were corrupted"),
    ("tampers_with_timing.pytorch.py", "TIMING TAMPERED", "DeviceActivity was replaced"),
    ("kills_the_judge.pytorch.py", "RUNTIME ERROR", "Operation not permitted"),
]


@requires_sandbox
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fixture, verdict, detail", ATTACKS)
def test_each_attack_gets_its_verdict_and_the_judge_its_last_line(device, fixture, verdict, detail):
    code, report, output = judge(
        "96", "--device", device, "--solution", FIXTURES / fixture, "--timeout", "30"
    )
    assert code == 1, output
    (test,) = report["tests"]
    assert (test["verdict"], report["sandbox"]) == (verdict, "landlock+seccomp"), output
    assert detail in test["detail"]
    assert output.rstrip().splitlines()[-1] == "0 passed, 1 failed"
    assert "Traceback" not in output.replace(test["detail"], "")


@requires_sandbox
@pytest.mark.parametrize("device", DEVICES)
def test_writes_outside_the_scratch_folder_change_nothing(device, tmp_path):
    submission = tmp_path / "writes_outside_scratch.pytorch.py"
    submission.write_text((FIXTURES / submission.name).read_text())
    notes = tmp_path / "learner_notes.txt"
    notes.write_text("two weeks of work")
    planted = Path(judge_package.__file__).parent / "_planted_by_a_submission.py"
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        code, report, output = judge("96", "--device", device, "--solution", submission)
        assert code == 1, output
        assert report["tests"][0]["verdict"] == "RUNTIME ERROR"
        assert "Permission denied" in report["tests"][0]["detail"]
        assert not planted.exists()
        assert notes.read_text() == "two weeks of work"
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    finally:
        planted.unlink(missing_ok=True)


@pytest.mark.parametrize("mode, expected", [("off", "none: --sandbox off"), ("auto", None)])
def test_the_report_names_the_sandbox(mode, expected):
    solution = SOLUTIONS / "96_int8_kv_cache_attention" / "solution.pytorch.py"
    code, report, output = judge("96", "--device", "cpu", "--sandbox", mode, "--solution", solution)
    assert code == 0, output
    wanted = expected or ("landlock+seccomp" if LANDLOCK and SECCOMP else report["sandbox"])
    assert report["sandbox"] == wanted
    assert f"sandbox: {wanted}" in output


def test_a_forged_reply_ahead_of_the_real_one_is_caught(tmp_path):
    """A submission that writes a well-formed "done" for a request id it guessed: ids are
    random, so the guess answers nothing and the line is corrupt."""
    forger = tmp_path / "forges_replies.pytorch.py"
    forger.write_text(
        "import os\n"
        "def solve(Q, K_int8, V_int8, k_scale, v_scale, output, num_heads, seq_len, head_dim):\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        '            os.write(fd, b\'{"seq": 1, "tag": "done"}\\n\')\n'
        "        except OSError:\n"
        "            pass\n"
    )
    code, report, output = judge("96", "--device", "cpu", "--solution", forger)
    assert code == 1 and report["tests"][0]["verdict"] == "CRASH", output
    assert "answers request 1" in report["tests"][0]["detail"]


def test_the_worker_leads_its_own_process_group(tmp_path):
    """A submission that reports its process group through its output: the worker's group is
    not the judge's, so killing it takes every child along."""
    probe = tmp_path / "reports_group.pytorch.py"
    probe.write_text(
        "import os\n"
        "def solve(Q, K_int8, V_int8, k_scale, v_scale, output, num_heads, seq_len, head_dim):\n"
        "    output.fill_(float(os.getpgid(0) == os.getpid() and os.getsid(0) == os.getpid()))\n"
    )
    code, report, output = judge("96", "--device", "cpu", "--solution", probe)
    actual = report["tests"][0]["actual"]["output"]
    assert actual[0][0] == 1.0, output


def _children(pid: int):
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    found = []
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def _stat(pid: int):
    """(state, process group) of a process, or None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else (fields[0], int(fields[2]))


def _settled_in_solve(pid: int) -> bool:
    """Past start-up (leading its own group) and asleep in the fixture's sleep loop: asleep
    at 4 of 5 looks 0.2 s apart (it wakes every 0.1 s, and a loaded machine may show it
    runnable at one look)."""
    asleep = 0
    for _ in range(5):
        stat = _stat(pid)
        if stat is None or stat[1] != pid:
            return False
        asleep += stat[0] == "S"
        time.sleep(0.2)
    return asleep >= 4


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_a_worker_does_not_outlive_a_killed_judge():
    """The worker leads its own process group, so only the kernel's parent-death signal takes
    it down with a judge killed from outside; without it the worker would sleep on in solve."""
    judge_process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "run_challenge.py"),
            "96",
            "--device",
            "cpu",
            "--solution",
            str(FIXTURES / "hangs.pytorch.py"),
            "--timeout",
            "300",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers, settled = [], False
    try:
        deadline = time.monotonic() + 240
        while not settled and time.monotonic() < deadline:
            workers = [
                c
                for c in _children(judge_process.pid)
                if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()
            ]
            settled = bool(workers) and _settled_in_solve(workers[0])
            time.sleep(0.5)
        assert settled, "the worker never reached solve"
        judge_process.kill()
        judge_process.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _stat(workers[0]) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _stat(workers[0]) is None, "the worker outlived its judge"
    finally:
        judge_process.kill()
        for worker in workers:
            try:
                os.kill(worker, 9)
            except ProcessLookupError:
                pass
