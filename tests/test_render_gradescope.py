"""The Gradescope view: results.json per the autograder specification, and the bundled autograder.

Reports come from real submissions through the real sandbox; results.json is validated against a
JSON Schema written from Gradescope's specification (tests/data/gradescope-results.schema.json).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from conftest import EXAMPLES, ROOT
from gradkit.api import check
from gradkit.render import gradescope
from gradkit.report import Diagnosis, SourceLocation

SCHEMA = json.loads((ROOT / "tests" / "data" / "gradescope-results.schema.json").read_text())
AUTOGRADER = ROOT / "docs" / "gradescope"
CRASHES_AT_IMPORT = "import torch\nraise RuntimeError('my code crashed')\n"


def valid(results: dict) -> dict:
    jsonschema.validate(results, SCHEMA)
    return results


@pytest.fixture(scope="module")
def reports(sandbox, tmp_path_factory):
    crash = tmp_path_factory.mktemp("crash") / "crashes.py"
    crash.write_text(CRASHES_AT_IMPORT)
    paths = {"correct": EXAMPLES / "correct.py",
             "buggy": EXAMPLES / "buggy" / "bias_mean_not_sum.py",
             "crash": crash}
    return {name: check(path, sandbox=sandbox) for name, path in paths.items()}


@pytest.mark.parametrize("name", ["correct", "buggy", "crash"])
def test_results_follow_the_specification_and_the_report(reports, name):
    report = reports[name]
    results = valid(json.loads(gradescope.render(report)))
    assert results["score"] == report.score
    assert [t["name"] for t in results["tests"]] == \
        [f"{c.title} ({c.id})" for c in report.checks]
    assert sum(t["score"] for t in results["tests"]) == pytest.approx(report.score)
    assert sum(t["max_score"] for t in results["tests"]) == pytest.approx(report.max_score)
    for test, c in zip(results["tests"], report.checks):
        assert test["status"] == ("passed" if c.status in ("pass", "skipped") else "failed")
        assert test["extra_data"]["check"] == c.id
    numbers = [t["number"] for t in results["tests"]]
    assert len(set(numbers)) == len(numbers)
    assert results["execution_time"] >= report.duration_seconds


def test_a_correct_submission_passes_every_test(reports):
    results = json.loads(gradescope.render(reports["correct"]))
    assert results["score"] == 100
    assert {t["status"] for t in results["tests"]} == {"passed"}
    assert "every check passed" in results["output"]


def test_a_failing_test_says_what_is_wrong_and_what_to_try(reports):
    report = reports["buggy"]
    results = json.loads(gradescope.render(report))
    by_check = {t["extra_data"]["check"]: t for t in results["tests"]}
    gradient_i = by_check["gradient.I"]
    assert gradient_i["status"] == "failed"
    assert gradient_i["score"] == report.check("gradient.I").points < 10
    assert "**FAIL**" in gradient_i["output"] and "**Try:**" in gradient_i["output"]
    assert "sum(dim=0" in gradient_i["output"]  # the check's hint
    assert by_check["gradient.W"]["status"] == "passed"
    assert "gradient.I" in results["output"]  # the summary lists what failed


def test_numbers_follow_check_groups(reports):
    results = json.loads(gradescope.render(reports["correct"]))
    by_check = {t["extra_data"]["check"]: t["number"] for t in results["tests"]}
    assert by_check["load"] == "1"
    assert [by_check[f"gradient.{p}"] for p in "VIWJ"] == ["3.1", "3.2", "3.3", "3.4"]


def test_a_crashing_submission_gets_a_zero_with_its_error(reports):
    results = json.loads(gradescope.render(reports["crash"]))
    assert results["score"] == 0
    load = results["tests"][0]
    assert load["extra_data"]["check"] == "load" and load["status"] == "failed"
    assert "RuntimeError" in load["output"] and "my code crashed" in load["output"]


def test_visibility_is_a_setting_per_check_group_or_default(reports):
    results = json.loads(gradescope.render(reports["correct"], visibility={
        "*": "after_published", "gradient": "after_due_date", "gradient.W": "hidden",
        "load": "visible"}))
    seen = {t["extra_data"]["check"]: t["visibility"] for t in valid(results)["tests"]}
    assert seen["load"] == "visible"
    assert seen["gradient.V"] == "after_due_date" and seen["gradient.W"] == "hidden"
    assert seen["training"] == "after_published"
    with pytest.raises(ValueError, match="after_due_date"):
        gradescope.render(reports["correct"], visibility={"training": "later"})


def test_diagnosis_codes_go_in_extra_data_and_the_output(reports):
    report = reports["buggy"].model_copy(update={"diagnoses": [Diagnosis(
        code="GK999", title="bias gradient averaged", message="dL/dI divides by the batch size",
        quantities=["dL/dI"], location=SourceLocation(file="bob.py", line=62,
                                                      code="dLdI = dLdA.mean(dim=0)"))]})
    results = valid(json.loads(gradescope.render(report)))
    assert results["extra_data"]["diagnoses"] == ["GK999"]
    by_check = {t["extra_data"]["check"]: t for t in results["tests"]}
    assert by_check["gradient.I"]["extra_data"]["diagnoses"] == ["GK999"]
    assert "GK999" in by_check["gradient.I"]["output"] and "bob.py:62" in \
        by_check["gradient.I"]["output"]
    assert by_check["gradient.W"]["extra_data"]["diagnoses"] == []
    assert "GK999" in results["output"]


def test_a_gradkit_error_is_not_a_verdict_on_the_student(reports):
    report = reports["correct"].model_copy(update={"error": "gradkit failed: KeyError: 'x'",
                                                   "checks": []})
    results = valid(json.loads(gradescope.render(report)))
    assert results["score"] == 0 and results["tests"] == []
    assert "not a verdict on your code" in results["output"]
    assert results["extra_data"]["error"].startswith("gradkit failed")


def test_cli_writes_results_json_with_visibility(gradkit_cli, tmp_path):
    out = tmp_path / "results.json"
    result = gradkit_cli("check", EXAMPLES / "correct.py", "--format", "gradescope",
                         "--output", out, "--visibility", "after_due_date",
                         "--visibility", "load=visible")
    assert result.exit_code == 0, result.output
    results = valid(json.loads(out.read_text()))
    assert json.loads(result.stdout) == results
    assert {t["visibility"] for t in results["tests"][1:]} == {"after_due_date"}
    assert results["tests"][0]["visibility"] == "visible"


def test_cli_rejects_an_unknown_visibility(gradkit_cli):
    result = gradkit_cli("check", EXAMPLES / "correct.py", "--format", "gradescope",
                         "--visibility", "training=soon")
    assert result.exit_code == 2
    assert "after_published" in result.stderr


# -- the bundled autograder (docs/gradescope) ------------------------------------------------

def run_autograder(tmp_path: Path, files: dict[str, str], **env: str) -> dict:
    """Run docs/gradescope/run_autograder with its /autograder paths moved under tmp_path."""
    submission = tmp_path / "submission"
    submission.mkdir()
    for name, text in files.items():
        (submission / name).write_text(text)
    environ = {**os.environ, "GRADKIT_AUTOGRADER_ROOT": str(tmp_path),
               "GRADKIT_PYTHON": sys.executable, **env}
    done = subprocess.run([str(AUTOGRADER / "run_autograder")], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return valid(json.loads((tmp_path / "results" / "results.json").read_text()))


def test_autograder_grades_a_correct_submission(tmp_path):
    results = run_autograder(tmp_path, {"notes.txt": "my solution",
                                        "solution.py": (EXAMPLES / "correct.py").read_text()},
                             GRADKIT_VISIBILITY="visible training=after_due_date")
    assert results["score"] == 100
    visibility = {t["extra_data"]["check"]: t["visibility"] for t in results["tests"]}
    assert visibility["training"] == "after_due_date" and visibility["predict"] == "visible"


def test_autograder_reports_a_crashing_submission(tmp_path):
    results = run_autograder(tmp_path, {"solution.py": CRASHES_AT_IMPORT +
                                        "def train_neural_net(X, Y, weights=None, "
                                        "learning_rate=1.0):\n    pass\n"})
    assert results["score"] == 0
    assert results["tests"][0]["status"] == "failed"
    assert "my code crashed" in results["tests"][0]["output"]


def test_autograder_without_a_solution_file_says_so(tmp_path):
    results = run_autograder(tmp_path, {"README.md": "nothing here"})
    assert results["score"] == 0 and "defines train_neural_net" in results["output"]


def test_autograder_writes_results_even_when_gradkit_cannot_start(tmp_path):
    results = run_autograder(tmp_path, {"solution.py": "x = 1\n"},
                             GRADKIT_PYTHON=shutil.which("false") or "/bin/false")
    assert results["score"] == 0 and "not a verdict on your code" in results["output"]


def test_setup_script_installs_gradkit_into_a_fresh_environment(tmp_path):
    """setup.sh as Gradescope runs it, into a new venv; torch and the other dependencies come
    from the interpreter's own site-packages (--system-site-packages), gradkit from its source."""
    base = getattr(sys, "_base_executable", sys.executable)
    if subprocess.run([base, "-c", "import pydantic, click"], capture_output=True).returncode:
        pytest.skip(f"{base} lacks gradkit's dependencies for a --system-site-packages venv")
    venv, source = tmp_path / "venv", tmp_path / "gradkit"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".ci-venv", "*.egg-info", "build", "__pycache__", ".pytest_cache",
        ".hypothesis", "gradkit-reports", "bench", ".benchmarks"))
    environ = {**os.environ, "GRADKIT_VENV": str(venv), "GRADKIT_SOURCE": str(source),
               "GRADKIT_TORCH": "", "GRADKIT_VENV_OPTIONS": "--system-site-packages",
               "GRADKIT_PIP_OPTIONS": "--no-deps", "PATH": f"{Path(base).parent}:"
               f"{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", str(AUTOGRADER / "setup.sh")], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "gradkit, version" in done.stdout
    installed = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import gradkit; print(gradkit.__file__)"], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout
    assert installed.startswith(str(venv))


def test_setup_script_says_what_is_missing(tmp_path):
    environ = {**os.environ, "GRADKIT_VENV": str(tmp_path / "venv"),
               "GRADKIT_SOURCE": str(tmp_path / "nowhere")}
    done = subprocess.run(["bash", str(AUTOGRADER / "setup.sh")], env=environ,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no gradkit to install" in done.stderr
