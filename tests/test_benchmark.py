"""scripts/benchmark.py's CPU-side pieces: the sweep shapes (97's paged cases above all), the
bytes moved, the read floor's bookkeeping, 99's compute floors, the targets' met/not-met
logic, the report's HBM column, the FlashInfer peers' page layouts and failure rows, and the
command line. Nothing here needs a GPU: the timer and the read kernels are stand-ins."""

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from core.challenge_base import materialize_test

from judge.challenges import find_challenge, load_challenge
from judge.signature import parse_signature

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"
_spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)  # puts scripts/ on sys.path: the modules beside it import
shapes = benchmark.bench_shapes
peers = benchmark.peers
report = sys.modules["bench_report"]

BLOCK = 16


@pytest.fixture(scope="module")
def paged():
    return load_challenge(find_challenge("97"), "cpu")


def challenge_of(number):
    return load_challenge(find_challenge(number), "cpu")


# -- 97's sweep cases ---------------------------------------------------------------------


def sweep_points_97():
    return [(axis, value) for axis in shapes.SWEEPS["97"] for value in axis.values]


@pytest.mark.parametrize("axis, value", sweep_points_97(), ids=lambda x: getattr(x, "name", x))
def test_97_sweep_cases_are_valid_paged_inputs(paged, axis, value):
    spec = shapes.sweep_spec("97", paged, axis, value)
    batch = value if axis.name == "batch_size" else 32
    mean = axis.tokens_at(value)
    lengths = spec["seq_lens"].tolist()
    table = spec["block_table"]
    num_blocks = spec["num_blocks"]
    assert len(lengths) == spec["batch_size"] == batch
    assert abs(sum(lengths) / batch - mean) <= 0.01 * mean
    assert spec["K_cache"].shape == spec["V_cache"].shape == (num_blocks, BLOCK, 8, 128)
    assert spec["Q"].shape == spec["output"].shape == (batch, 32, 128)
    assert table.dtype == spec["seq_lens"].dtype == torch.int32
    assert table.shape == (batch, spec["max_blocks_per_seq"])
    used = []
    for b, length in enumerate(lengths):
        pages = math.ceil(length / BLOCK)
        row = table[b].tolist()
        assert all(0 <= block < num_blocks for block in row[:pages]), f"sequence {b}"
        assert row[pages:] == [-1] * (len(row) - pages), f"sequence {b}: -1 past its pages"
        used += row[:pages]
    assert len(set(used)) == len(used), "a block serves two sequences"
    assert num_blocks - len(used) == 3  # the challenge's spare blocks: the pool fits the pages
    assert used != sorted(used), "blocks in pool order, not a random permutation"
    # the challenge's reference takes it: its assertions check every shape and dtype
    paged.reference_impl(**materialize_test(spec, "meta", seed=0))


def test_97_length_range_follows_the_performance_test(paged):
    perf = paged.generate_performance_test()
    module = sys.modules[type(paged).__module__]
    assert shapes.paged_length_range(32, module.PERF_MEAN_LEN) == (
        module.PERF_MIN_LEN,
        module.PERF_MAX_LEN,
    )
    assert perf["seq_lens"].float().mean() == module.PERF_MEAN_LEN
    # one sequence is the mean; small batches still hold their total
    assert shapes.paged_length_range(1, 4096)[1] == 4096
    lengths = shapes.paged_case(paged, 2, 4096)["seq_lens"].tolist()
    assert sum(lengths) == 8192 and min(lengths) >= 256


def test_97_cases_differ_by_seed_and_leave_the_global_rng_alone(paged):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = shapes.paged_case(paged, 8, 1024, seed=1)
    second = shapes.paged_case(paged, 8, 1024, seed=2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(
        shapes.paged_case(paged, 8, 1024, seed=1)["block_table"], first["block_table"]
    )
    assert not torch.equal(first["block_table"], second["block_table"])


def test_batch_sweeps_hold_the_performance_tests_length():
    perf_length = {
        "95": challenge_of("95").generate_performance_test()["cache_len"],
        "97": sys.modules[type(challenge_of("97")).__module__].PERF_MEAN_LEN,
        "99": challenge_of("99").generate_performance_test()["cache_len"],
    }
    for number, axes in shapes.SWEEPS.items():
        for axis in axes:
            if axis.name == "batch_size":
                assert axis.tokens == perf_length[number], number
            else:
                assert axis.tokens is None and axis.tokens_at(2048) == 2048


@pytest.mark.parametrize("number", ["95", "96", "98", "99"])
def test_resized_sweep_points_change_only_the_swept_size(number):
    challenge = challenge_of(number)
    perf = challenge.generate_performance_test()
    for axis in shapes.SWEEPS[number]:
        for value in axis.values:
            spec = shapes.sweep_spec(number, challenge, axis, value)
            assert spec[axis.name] == value
            changed = {k for k in perf if isinstance(perf[k], int) and perf[k] != spec[k]}
            assert changed <= {axis.name}
            challenge.reference_impl(**materialize_test(spec, "meta", seed=0))


# -- bytes moved --------------------------------------------------------------------------


def test_97_bytes_moved_counts_only_the_attended_tokens(paged):
    spec = shapes.paged_case(paged, 5, 40, seed=3, q_heads=4, kv_heads=2, head_dim=16)
    kwargs = materialize_test(spec, "cpu", seed=0)
    params = parse_signature(paged.get_solve_signature())
    # tokens counted through the block table: every page's occupied slots
    tokens = 0
    for b, row in enumerate(kwargs["block_table"].tolist()):
        length = int(kwargs["seq_lens"][b])
        for j, block in enumerate(row):
            if block >= 0:
                tokens += min(BLOCK, length - j * BLOCK)
    row_bytes = 2 * 16 * 4  # kv_heads x head_dim float32
    small = ("Q", "output", "block_table", "seq_lens")
    expected = 2 * tokens * row_bytes + sum(kwargs[n].nbytes for n in small)
    assert benchmark.bytes_moved(paged, kwargs, params) == expected
    every_tensor = sum(kwargs[p.name].nbytes for p in params if p.is_pointer)
    assert expected < every_tensor  # the spare blocks and the last pages' empty slots


def test_bytes_moved_without_get_bytes_moved_is_every_tensor_once():
    challenge = challenge_of("95")
    kwargs = materialize_test(challenge.generate_performance_test(), "meta", seed=0)
    params = parse_signature(challenge.get_solve_signature())
    b, hq, hkv, s, d = 4, 32, 8, 16384, 128
    assert benchmark.bytes_moved(challenge, kwargs, params) == 4 * (
        2 * b * hq * d + 2 * b * hkv * s * d
    )


# -- the read floor -----------------------------------------------------------------------


def test_floor_times_each_kernel_over_its_own_buffers_and_takes_the_fastest():
    made, timed = [], {}
    speed = {"torch row sum": 3.0, "CUDA float4 one-wave read": 2.0, "Triton one-wave read": 2.5}

    def kernels(nbytes):
        made.append(nbytes)
        buffer = len(made)
        return [SimpleNamespace(name=n, call=(n, buffer)) for n in speed]

    def timer(calls, budget_s):
        name = calls[0][0]
        timed[name] = calls
        return speed[name]

    floor = benchmark.measure_floor(1000, 3, 0.5, kernels=kernels, timer=timer)
    assert made == [1000, 1000, 1000]
    assert set(timed) == set(speed)
    for name, calls in timed.items():
        assert calls == [(name, 1), (name, 2), (name, 3)]  # one call per buffer, rotated
    assert floor.kernel == "CUDA float4 one-wave read" and floor.ms == 2.0
    assert floor.gbps == pytest.approx(1000 / 2e-3 / 1e9)


# -- 99's compute floor -------------------------------------------------------------------


def test_99_compute_floor_at_the_performance_shape():
    challenge = challenge_of("99")
    kwargs = materialize_test(challenge.generate_performance_test(), "meta", seed=0)
    flops = challenge.get_flops(**kwargs)
    assert flops == 2 * 16 * 128 * 8192 * (512 + 64) + 2 * 16 * 128 * 8192 * 512
    peaks = {"fp32": 60.0, "tf32": 400.0, "fp16": 800.0}  # TFLOP/s
    bandwidth_ms = 0.075
    cases = {
        "editorial.cu": 3 * flops / 800e12,
        "editorial.triton.py": 3 * flops / 400e12,
        "solution.cu": flops / 60e12,
        "torch.compile(reference)": flops / 60e12,
    }
    for name, seconds in cases.items():
        r = report.roofline(name, flops, bandwidth_ms, peaks)
        assert r.compute_ms == pytest.approx(seconds * 1e3), name
        assert r.binding_ms == pytest.approx(max(seconds * 1e3, bandwidth_ms))
        assert r.binds == "compute"
    assert report.roofline("editorial.cu", flops, bandwidth_ms, peaks).arithmetic.startswith(
        "fp16x3"
    )
    slow_memory = report.roofline("editorial.cu", flops, 1.0, peaks)
    assert slow_memory.binds == "bandwidth" and slow_memory.binding_ms == 1.0


# -- the targets --------------------------------------------------------------------------


def entry(file, language, ms, status="ok"):
    return report.Entry(f"{file} ({language})", file, language, status, ms)


def baselines(compile_ms):
    return [
        report.Entry("PyTorch reference", status="ok", ms=2 * compile_ms),
        report.Entry("torch.compile(reference)", status="ok", ms=compile_ms),
    ]


def floor_of(ms):
    return report.Floor(10**8, {"torch row sum": ms * 1.1, "CUDA float4 one-wave read": ms})


def table(number, rows, floor_ms=1.0, compile_ms=10.0):
    return report.Table(number, "x", "", 10**8, floor_of(floor_ms), baselines(compile_ms) + rows)


def point(value, tokens, rows, floor_ms=1.0):
    return report.Point(value, tokens, 10**8, floor_of(floor_ms), rows)


def find(rows, number, *words):
    hits = [t for t in rows if t.challenge == number and all(w in t.what for w in words)]
    assert len(hits) == 1, (words, [t.what for t in rows])
    return hits[0]


def test_editorial_targets_at_the_performance_test_and_over_the_sweeps():
    tables = {
        "95": table(
            "95",
            [
                entry("editorial.cu", "cuda", 1 / 0.96),
                entry("editorial.triton.py", "triton", 1 / 0.84),
            ],
        )
    }
    shares = {1024: 0.81, 2048: 0.85, 4096: 0.91, 8192: 0.95}
    sweeps = {
        ("95", "cache_len"): [
            point(
                n,
                n,
                [
                    entry("editorial.cu", "cuda", 1 / s),
                    entry("editorial.triton.py", "triton", 1 / 0.9),
                ],
            )
            for n, s in shares.items()
        ],
        ("95", "batch_size"): [point(1, 16384, [entry("editorial.cu", "cuda", 1 / 0.93)])],
    }
    rows = benchmark.targets(tables, sweeps)
    perf_cu = find(rows, "95", "editorial.cu,", "performance test")
    assert perf_cu.met is True and perf_cu.measured == "96.0%" and perf_cu.target == ">= 95%"
    assert find(rows, "95", "editorial.triton.py,", "performance test").met is False  # 84 < 85
    long_cu = find(rows, "95", "editorial.cu,", ">= 4K")
    assert long_cu.met is True and long_cu.measured.startswith("91.0% (cache_len=4096)")
    short_cu = find(rows, "95", "editorial.cu,", "1K-2K")
    assert short_cu.met is True and short_cu.measured.startswith("81.0% (cache_len=1024)")
    assert find(rows, "95", "editorial.triton.py,", ">= 4K").met is True

    sweeps[("95", "cache_len")][2] = point(4096, 4096, [entry("editorial.cu", "cuda", 1 / 0.89)])
    long_cu = find(benchmark.targets(tables, sweeps), "95", "editorial.cu,", ">= 4K")
    assert long_cu.met is False and "cache_len=4096" in long_cu.measured

    sweeps[("95", "cache_len")][0] = point(
        1024, 1024, [entry("editorial.cu", "cuda", 0.5, "WRONG")]
    )
    short_cu = find(benchmark.targets(tables, sweeps), "95", "editorial.cu,", "1K-2K")
    assert short_cu.met is False and "WRONG" in short_cu.measured

    no_sweep = benchmark.targets(tables, {})
    assert find(no_sweep, "95", "editorial.cu,", ">= 4K").met is None
    assert find(no_sweep, "95", "editorial.cu,", "performance test").met is True


def test_best_solution_targets_skip_wrong_entries():
    rows = [
        entry("editorial.cu", "cuda", 1 / 0.92),
        entry("fast_but_wrong.cu", "cuda", 1 / 0.99, "WRONG"),
        entry("editorial.triton.py", "triton", 1 / 0.75),
        entry("solution.triton.py", "triton", 1 / 0.20),
    ]
    result = benchmark.targets({"97": table("97", rows, compile_ms=4.0)}, {})
    cuda = find(result, "97", "best cuda")
    assert "editorial.cu" in cuda.what and cuda.measured == "92.0%" and cuda.met is True
    triton = find(result, "97", "best triton")
    assert "editorial.triton.py" in triton.what and triton.met is False  # 75 < 80
    speedup = find(result, "97", "editorial.cu, speedup")
    assert speedup.measured == "3.7x" and speedup.met is False  # 4 / (1 / 0.92) < 5
    assert find(result, "97", "editorial.triton.py, speedup").met is False
    assert find(result, "97", "above 100%").met is True  # the 99% WRONG one is no exception
    missing = benchmark.targets({"98": table("98", [entry("editorial.cu", "cuda", 1.0)])}, {})
    assert find(missing, "98", "best triton").met is None


def test_correct_entries_above_the_floor_are_listed_at_any_shape():
    tables = {"96": table("96", [entry("editorial.cu", "cuda", 1 / 0.97)])}
    sweeps = {
        ("96", "seq_len"): [
            point(
                1024,
                1024,
                [
                    entry("editorial.cu", "cuda", 1 / 1.04),
                    entry("solution.cu", "cuda", 0.1, "WRONG"),
                ],
            ),
            point(4096, 4096, [entry("editorial.cu", "cuda", 1 / 0.99)]),
        ]
    }
    above = find(benchmark.targets(tables, sweeps), "96", "above 100%")
    assert above.met is False
    assert above.measured == "editorial.cu (cuda) at seq_len=1024 (104.0%)"
    sweeps[("96", "seq_len")][0].rows[0].ms = 1.0
    assert find(benchmark.targets(tables, sweeps), "96", "above 100%").measured == "none"


def test_mla_targets_use_the_binding_floor_and_a_3x_speedup():
    peaks = {"fp32": 60.0, "tf32": 400.0, "fp16": 800.0}
    flops = 36 * 10**9
    compute_ms = 3 * flops / 800e12 * 1e3  # 0.135 ms: binds over a 0.075 ms bandwidth floor
    rows = [entry("editorial.cu", "cuda", compute_ms / 0.72)]
    t = table("99", rows, floor_ms=0.075, compile_ms=3.5 * compute_ms / 0.72)
    t.rooflines = {e.label: report.roofline(e.file or e.label, flops, 0.075, peaks) for e in t.rows}
    result = benchmark.targets({"99": t}, {})
    binding = find(result, "99", "binding floor")
    assert binding.met is True and binding.measured == "72.0%" and "compute" in binding.what
    assert find(result, "99", "speedup").met is True  # 3.5x >= 3x
    rows[0].ms = compute_ms / 0.65
    assert find(benchmark.targets({"99": t}, {}), "99", "binding floor").met is False


def test_target_lines_say_yes_no_and_n_a():
    rows = [
        report.Target("95", "a", "1%", ">= 2%", False),
        report.Target("95", "b", "3%", ">= 2%", True),
        report.Target("95", "c", "not run", ">= 2%", None),
    ]
    lines = report.target_lines(rows)
    assert lines[2] == "| challenge | what | measured | target | met |"
    assert [line.rsplit("|", 2)[1].strip() for line in lines[4:]] == ["no", "yes", "n/a"]


# -- the report ---------------------------------------------------------------------------


def test_main_table_gives_the_hbm_share_only_where_the_peak_is_known():
    t = report.Table(
        "95",
        "Decode",
        "",
        4_800_000_000,
        floor_of(1.25),
        baselines(10.0) + [entry("editorial.cu", "cuda", 2.0)],
    )
    with_peak = report.table_lines(t, hbm_gbps=4800.0)
    assert "% of HBM peak" in with_peak[2]
    row = next(line for line in with_peak if line.startswith("| editorial.cu"))
    # 4.8 GB in 2 ms: 2400 GB/s, 50% of a 4800 GB/s peak; 1.25 / 2 of the floor
    assert "| 2400 | 62.5% | 50.0% |" in row
    floor_row = next(line for line in with_peak if line.startswith("| floor: CUDA float4"))
    assert "| 100.0% |" in floor_row
    without = report.table_lines(t, hbm_gbps=None)
    assert "HBM" not in "\n".join(without)
    assert without[2].count("|") == with_peak[2].count("|") - 1


def test_report_names_a_subset_run_apart_from_a_full_one():
    assert report.report_stem("nvidia-h200", list(report.CHALLENGES), True) == "nvidia-h200"
    assert report.report_stem("nvidia-h200", ["97", "99"], True) == "nvidia-h200-97-99"
    assert report.report_stem("nvidia-h200", list(report.CHALLENGES), False) == (
        "nvidia-h200-95-96-97-98-99-no-sweep"
    )


# -- FlashInfer peers (their CPU side) ----------------------------------------------------


def test_block_table_to_flashinfer_pages(paged):
    spec = shapes.paged_case(paged, 6, 50, seed=4, q_heads=4, kv_heads=2, head_dim=16)
    layout = peers.from_block_table(
        spec["block_table"], spec["seq_lens"], BLOCK, spec["num_blocks"]
    )
    lengths = spec["seq_lens"].tolist()
    assert layout.num_pages == spec["num_blocks"] and layout.tokens == sum(lengths)
    for b, length in enumerate(lengths):
        own = layout.indices[layout.indptr[b] : layout.indptr[b + 1]].tolist()
        pages = math.ceil(length / BLOCK)
        assert own == spec["block_table"][b, :pages].tolist()
        assert 1 <= layout.last_page_len[b] <= BLOCK
        assert (pages - 1) * BLOCK + int(layout.last_page_len[b]) == length


def test_97_peer_moves_half_the_attended_kv_bytes_of_float32(paged):
    spec = paged.generate_performance_test()
    kwargs = materialize_test(spec, "meta", seed=0)
    kwargs.update(block_table=spec["block_table"], seq_lens=spec["seq_lens"])
    (peer,) = peers.peers_for("97", kwargs)
    small = ("Q", "output", "block_table", "seq_lens")
    kv_fp32 = paged.get_bytes_moved(**kwargs) - sum(kwargs[n].nbytes for n in small)
    layout = peers.from_block_table(
        spec["block_table"], spec["seq_lens"], spec["block_size"], spec["num_blocks"]
    )
    assert peer.nbytes == kv_fp32 // 2 + 2 * kwargs["Q"].numel() * 2 + layout.nbytes


def test_consecutive_pages():
    layout = peers.consecutive_pages([16, 17, 1], 16)
    assert layout.indptr.tolist() == [0, 1, 3, 4]
    assert layout.indices.tolist() == [0, 1, 2, 3]
    assert layout.last_page_len.tolist() == [16, 1, 1]
    assert layout.num_pages == 4 and layout.tokens == 34


def test_95_same_bytes_peer_moves_95s_kv_bytes():
    challenge = challenge_of("95")
    kwargs = materialize_test(challenge.generate_performance_test(), "meta", seed=0)
    same_shapes, same_bytes = peers.peers_for("95", kwargs)
    assert "(fp16)" in same_shapes.label and "twice the tokens" in same_bytes.label
    kv_fp32 = kwargs["K"].nbytes + kwargs["V"].nbytes
    fp16_q_and_out = 2 * kwargs["Q"].numel() * 2
    pages = 4 * 2 * 16384 // 16
    tables = 4 * ((4 + 1) + pages + 4)
    assert same_bytes.nbytes == kv_fp32 + fp16_q_and_out + tables
    assert same_shapes.nbytes == kv_fp32 // 2 + fp16_q_and_out + 4 * ((4 + 1) + pages // 2 + 4)


def test_every_challenge_has_peers_labelled_with_their_dtype(paged):
    for number in report.CHALLENGES:
        challenge = paged if number == "97" else challenge_of(number)
        spec = challenge.generate_performance_test()
        kwargs = materialize_test(spec, "meta", seed=0)
        if number == "97":  # the block table and seq_lens are read on the host
            kwargs.update(block_table=spec["block_table"], seq_lens=spec["seq_lens"])
        found = peers.peers_for(number, kwargs)
        assert found, number
        for peer in found:
            assert peer.label.startswith("FlashInfer ") and peer.label.endswith(")")
            assert peer.nbytes > 0


def test_a_failing_peer_becomes_a_skipped_row(monkeypatch):
    def make(count):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(benchmark, "copies", lambda nbytes: 1)
    monkeypatch.setattr(
        peers, "peers_for", lambda number, kwargs: [peers.Peer("FlashInfer x (fp16)", 8, make)]
    )
    (row,) = benchmark.run_peers("95", {}, 0.1)
    assert row.label == "FlashInfer x (fp16)" and row.ms is None
    assert row.skipped == "RuntimeError: no kernel for this shape"
    lines = report.peer_lines([row], hbm_gbps=None)
    assert "skipped: RuntimeError: no kernel for this shape" in lines[-2]

    def broken(number, kwargs):
        raise KeyError("cache_len")

    monkeypatch.setattr(peers, "peers_for", broken)
    (row,) = benchmark.run_peers("95", {}, 0.1)
    assert row.skipped == "KeyError: 'cache_len'"


def test_missing_flashinfer_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # makes `import flashinfer` fail
    assert peers.flashinfer_missing().startswith("import flashinfer failed (ModuleNotFoundError")


# -- the command line ---------------------------------------------------------------------


def test_challenges_argument():
    assert benchmark.parse_args([]).challenges == ["95", "96", "97", "98", "99"]
    assert benchmark.parse_args(["--challenges", "99,97"]).challenges == ["97", "99"]
    assert benchmark.parse_args(["--challenges", " 96 , 96,"]).challenges == ["96"]
    args = benchmark.parse_args(["--challenges", "95", "--no-sweep", "--budget", "0.5"])
    assert args.no_sweep and args.budget == 0.5 and args.challenges == ["95"]
    assert not benchmark.parse_args([]).no_sweep


@pytest.mark.parametrize("bad", ["100", "95,x", "", ","])
def test_challenges_argument_rejects_unknown_numbers(bad, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--challenges", bad])
    assert "choose from 95,96,97,98,99" in capsys.readouterr().err


# -- entries that fail --------------------------------------------------------------------


def test_a_solution_that_fails_to_build_or_run_becomes_an_error_row(monkeypatch):
    challenge = challenge_of("95")
    params = parse_signature(challenge.get_solve_signature())

    def load_solution(path, params):
        if path.name == "editorial.cu":
            raise RuntimeError("nvcc: error | line 1\nmore")
        return lambda kwargs: None

    monkeypatch.setattr(benchmark, "load_solution", load_solution)
    found = benchmark.entries("95", challenge, params, with_baselines=False)
    assert [e.file for e in found] == [
        "editorial.cu",
        "editorial.triton.py",
        "solution.cu",
        "solution.triton.py",
    ]
    assert found[0].call is None and found[0].status == "error: RuntimeError: nvcc: error / line 1"

    def check(challenge, params, call, kwargs):
        if call is found[2].call:
            raise ValueError("illegal memory access")
        return "ok"

    monkeypatch.setattr(benchmark, "check", check)
    monkeypatch.setattr(benchmark, "time_rotating", lambda calls, budget_s: 0.5)
    benchmark.time_entries(challenge, params, found, [{}], 0.1)
    assert [e.status for e in found] == [
        "error: RuntimeError: nvcc: error / line 1",
        "ok",
        "error: ValueError: illegal memory access",
        "ok",
    ]
    assert math.isnan(found[0].ms) and math.isnan(found[2].ms) and found[1].ms == 0.5
    rows = report.table_lines(table("95", found), hbm_gbps=None)
    row = next(line for line in rows if line.startswith("| solution.cu"))
    assert (
        row
        == "| solution.cu (cuda) | error: ValueError: illegal memory access | - | - | - | - | - |"
    )
    result = benchmark.targets({"95": table("95", found)}, {})
    assert find(result, "95", "editorial.cu,", "performance test").met is False
