"""The challenge checker passes both challenges and catches broken copies."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from judge.challenges import REPO_ROOT, find_challenge
from judge.checker import check_challenge
from judge.scaffold import create_challenge, next_free_number

CHECKER = [sys.executable, str(REPO_ROOT / "scripts" / "check_challenge.py")]


def test_both_challenges_pass(folder):
    assert check_challenge(folder.path) == []


def test_cli_passes_both_challenges():
    paths = [str(find_challenge(n).path) for n in ("95", "96")]
    result = subprocess.run(CHECKER + paths, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def broken(folder, tmp_path):
    """A copy of the challenge folder in a scratch challenges/ tree, to break."""
    copy = tmp_path / "challenges" / "medium" / folder.path.name
    shutil.copytree(folder.path, copy)
    return copy


def edit(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def findings_for(copy: Path):
    return [str(f) for f in check_challenge(copy)]


def break_performance_bullet(page: Path) -> str:
    """Change the last value of the page's last bullet (the performance line) to 64 (or 65
    where it is 64); return that bullet's last `<code>name</code> = value</li>` as it was."""
    text = page.read_text()
    end = text.rindex("</li>")
    start = text.rindex("<code>", 0, end)
    value = text[text.index("= ", start) + 2 : end]
    edit(page, f"= {value}</li>", "= 65</li>" if value == "64" else "= 64</li>")
    return text[start : end + len("</li>")]


def test_wrong_performance_bullet_fails_with_the_exact_fix(broken):
    original = break_performance_bullet(broken / "challenge.html")
    (finding,) = findings_for(broken)
    assert "challenge.html" in finding and "last Constraints bullet" in finding
    assert original in finding


def test_second_comment_in_a_starter_fails(broken):
    edit(
        broken / "starter" / "starter.pytorch.py",
        "    pass",
        "    # TODO: write the kernel\n    pass",
    )
    (finding,) = findings_for(broken)
    assert "starter.pytorch.py" in finding and "has 2 comments" in finding


def test_second_comment_in_cuda_and_mojo_starters_fails(broken):
    edit(broken / "starter" / "starter.cu", "{}", "{\n    // launch here\n}")
    edit(broken / "starter" / "starter.mojo", "    pass", "    # launch here\n    pass")
    findings = findings_for(broken)
    assert len(findings) == 2 and all("has 2 comments" in f for f in findings)


def test_wrong_example_output_in_html_fails(broken):
    page = broken / "challenge.html"
    text = page.read_text()
    output_block = text[text.index("<strong>Output</strong>") :]
    first = output_block.split("\\begin{bmatrix}")[1].split("&")[0].strip()
    edit(page, f"\\begin{{bmatrix}} {first} &", "\\begin{bmatrix} 9.9999 &")
    (finding,) = findings_for(broken)
    assert "reference output output" in finding


def test_starter_with_wrong_parameters_fails(broken):
    starter = broken / "starter" / "starter.cu"
    last_int = re.findall(r"\bint (\w+)", starter.read_text())[-1]
    edit(starter, f"int {last_int}", "int d")
    (finding,) = findings_for(broken)
    assert "starter.cu" in finding and "'d'" in finding


def test_missing_starter_and_too_few_functional_tests_fail(broken):
    (broken / "starter" / "starter.mojo").unlink()
    edit(
        broken / "challenge.py",
        "case in FUNCTIONAL_CASES]\n\n    def generate_perf",
        "case in FUNCTIONAL_CASES[:3]]\n\n    def generate_perf",
    )
    findings = findings_for(broken)
    assert any("starter.mojo: missing" in f for f in findings)
    assert any("returned 3 tests" in f for f in findings)


def test_reference_that_rejects_a_test_is_reported_not_raised(broken):
    edit(broken / "challenge.py", "def generate_example_test", "def _unused")
    edit(broken / "challenge.py", "def get_functional_test_names", "def generate_example_test")
    findings = findings_for(broken)
    assert any("the example test is a list" in f for f in findings)


def test_cli_exit_codes_and_file_arguments(broken):
    break_performance_bullet(broken / "challenge.html")
    result = subprocess.run(
        CHECKER + [str(broken / "challenge.html")], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "fix: make it exactly" in result.stdout
    assert subprocess.run(CHECKER, capture_output=True).returncode == 2
    assert subprocess.run(CHECKER + ["/no/such/folder"], capture_output=True).returncode == 2


def test_new_challenge_takes_the_next_number_and_passes(tmp_path):
    root = tmp_path / "challenges"
    shutil.copytree(find_challenge("96").path, root / "medium" / "96_int8_kv_cache_attention")
    assert next_free_number(root) == 97
    folder = create_challenge("rms_norm", "easy", root)
    assert folder == root / "easy" / "97_rms_norm"
    assert check_challenge(folder) == []
    with pytest.raises(ValueError, match="lower_snake_case"):
        create_challenge("RMS Norm", "easy", root)
