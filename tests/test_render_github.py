"""The GitHub Actions view: annotations at the lines a report names, and the job summary.

Workflow commands are parsed back the way the Actions runner reads them (properties split on
commas, values unescaped), so escaping mistakes show up as wrong files, lines or messages.
"""

from __future__ import annotations

import io
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT
from gradkit.api import check
from gradkit.render import github
from gradkit.report import Diagnosis, SourceLocation

COMMAND = re.compile(r"^::(error|warning|notice) ([^:]*)::(.*)$")


def unescape(text: str) -> str:
    return (text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":")
            .replace("%2C", ",").replace("%25", "%"))


def parse_commands(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        match = COMMAND.match(line)
        if not match:
            continue
        level, props, message = match.groups()
        fields = dict(p.split("=", 1) for p in props.split(","))
        found.append({"level": level, **{k: unescape(v) for k, v in fields.items()},
                      "message": unescape(message)})
    return found


@pytest.fixture(scope="module")
def reports(sandbox, tmp_path_factory):
    folder = tmp_path_factory.mktemp("github")
    crash = folder / "raises.py"
    crash.write_text((EXAMPLES / "correct.py").read_text().replace(
        "def train_neural_net(", "def train_neural_net(*args):\n    raise ValueError('50%, "
        "then: nothing')\n\ndef _unused(", 1))
    paths = {"correct": EXAMPLES / "correct.py", "buggy": EXAMPLES / "buggy" /
             "bias_mean_not_sum.py", "raises": crash, "notebook": EXAMPLES / "notebook.ipynb"}
    return {name: check(path, sandbox=sandbox) for name, path in paths.items()}


def raising_line(report) -> int:
    text = Path(report.submission.path).read_text()
    return next(i for i, line in enumerate(text.splitlines(), 1)
                if "raise ValueError" in line)


def test_a_correct_submission_gets_no_annotation(reports):
    assert github.commands(reports["correct"]) == ""
    assert "✅" in github.summary(reports["correct"])


def test_annotations_at_the_line_the_failing_checks_name(reports):
    report = reports["raises"]
    found = parse_commands(github.commands(report))
    located = [a for a in found if "line" in a]
    assert located, found
    assert {a["file"] for a in found} == {report.submission.path}
    assert {int(a["line"]) for a in located} == {raising_line(report)}
    assert all(a["level"] == "error" for a in found)
    assert "ValueError: 50%, then: nothing" in located[0]["message"]
    assert "gradient.V" in located[0]["title"]  # checks failing at one line share it


def test_annotations_at_the_lines_diagnoses_name(reports):
    report = reports["buggy"].model_copy(update={"diagnoses": [
        Diagnosis(code="GK101", title="bias gradient averaged", message="dL/dI is a mean",
                  quantities=["dL/dI", "dL/dJ"],
                  location=SourceLocation(file=reports["buggy"].submission.path, line=62)),
        Diagnosis(code="GK900", title="style", message="prints inside the loop",
                  severity="warning")]})
    found = parse_commands(github.commands(report, workspace=str(ROOT)))
    first = found[0]
    assert (first["level"], first["line"], first["title"]) == \
        ("error", "62", "GK101 bias gradient averaged")
    assert "gradkit explain GK101" in first["message"]
    assert found[1]["level"] == "warning" and "line" not in found[1]
    # gradient.I and gradient.J are named by the diagnosis; only `update` is left to report
    rest = found[-1]
    assert "update" in rest["message"] and "gradient.I" not in rest["message"]


def test_notebook_annotations_name_the_cell_not_a_line(reports):
    report = reports["notebook"]
    location = SourceLocation(file=report.submission.path, line=40, cell=7, cell_line=3)
    report = report.model_copy(update={"diagnoses": [Diagnosis(
        code="GK102", title="global biases", message="uses I, J", location=location)]})
    first = parse_commands(github.commands(report))[0]
    assert "line" not in first and "(cell 7, line 3)" in first["title"]


def test_paths_are_made_relative_to_the_workspace(reports):
    report = reports["raises"]
    path = Path(report.submission.path)
    assert path.is_absolute()
    found = parse_commands(github.commands(report, workspace=str(path.parent)))
    assert found and {a["file"] for a in found} == {path.name}
    elsewhere = parse_commands(github.commands(report, workspace=str(ROOT)))
    assert {a["file"] for a in elsewhere} == {path.as_posix()}


def test_no_more_annotations_than_github_shows(reports):
    many = [Diagnosis(code=f"GK{i:03d}", title="t", message=f"m{i}") for i in range(25)]
    report = reports["buggy"].model_copy(update={"diagnoses": many})
    assert len(parse_commands(github.commands(report))) == github.MAX_ANNOTATIONS


def test_summary_has_the_score_and_a_row_per_check(reports):
    report = reports["buggy"]
    text = github.summary(report)
    assert f"{report.score:g} / {report.max_score:g}" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [c.id for c in report.checks]
    assert "**fail**" in next(r for r in rows if "`gradient.I`" in r)


def test_emit_prints_annotations_and_appends_the_summary(reports, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    stream = io.StringIO()
    environ = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(ROOT)}
    github.emit(reports["raises"], stream, environ)
    github.emit(reports["correct"], stream, environ)
    assert parse_commands(stream.getvalue())
    text = summary.read_text()
    assert text.startswith("earlier step\n") and text.count("gradkit: `") == 2


def test_the_example_workflow_runs_as_written(gradkit_cli, monkeypatch, tmp_path):
    """docs/github-workflow.yml's check step, run with GitHub's environment variables."""
    workflow = (ROOT / "docs" / "github-workflow.yml").read_text()
    step = re.search(r"run: (gradkit check .*)", workflow).group(1)
    solution = tmp_path / "solution.py"
    solution.write_text((EXAMPLES / "buggy" / "predict_returns_C.py").read_text())
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    args = [a.replace("$SOLUTION", "solution.py") for a in shlex.split(step)][1:]
    result = gradkit_cli(*args)
    assert result.exit_code == 1
    annotations = parse_commands(result.stdout)
    assert annotations and annotations[0]["file"] == "solution.py"
    assert "`predict` | **fail**" in summary.read_text()
    suite = ET.parse(tmp_path / "gradkit-junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1"
