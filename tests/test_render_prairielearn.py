"""The PrairieLearn view: results.json per the external grader's documented fields, and the
example entrypoint in docs/prairielearn/.

Reports come from real submissions through the real sandbox; results.json is validated against a
JSON Schema written from PrairieLearn's documentation (tests/data/prairielearn-results.schema.json).
"""

from __future__ import annotations

import base64
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
from gradkit.render import prairielearn

SCHEMA = json.loads((ROOT / "tests" / "data" / "prairielearn-results.schema.json").read_text())
ENTRYPOINT = ROOT / "docs" / "prairielearn" / "run"
SYNTAX_ERROR = "def train_neural_net(X, Y, weights=None, learning_rate=1.0)\n    pass\n"
PNG = b"\x89PNG\r\n\x1a\n"


def valid(results: dict) -> dict:
    jsonschema.validate(results, SCHEMA)
    assert len(json.dumps(results).encode()) < prairielearn.MAX_BYTES
    return results


@pytest.fixture(scope="module")
def reports(sandbox, tmp_path_factory):
    broken = tmp_path_factory.mktemp("syntax") / "broken.py"
    broken.write_text(SYNTAX_ERROR)
    paths = {"correct": EXAMPLES / "correct.py",
             "buggy": EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py",
             "syntax": broken}
    return {name: check(path, sandbox=sandbox) for name, path in paths.items()}


@pytest.mark.parametrize("name", ["correct", "buggy"])
def test_results_follow_the_documentation_and_the_report(reports, name):
    report = reports[name]
    results = valid(json.loads(prairielearn.render(report)))
    assert results["gradable"] is True
    assert results["score"] == pytest.approx(report.score / report.max_score)
    assert [t["name"] for t in results["tests"]] == [c.id for c in report.checks]
    assert sum(t["points"] for t in results["tests"]) == pytest.approx(report.score)
    assert sum(t["max_points"] for t in results["tests"]) == pytest.approx(report.max_score)
    assert ("every check passed" in results["message"]) == report.passed


#: results.json shaped as PrairieLearn's documentation shows it ("Grading results"): every
#: documented field, images top-level and per test, as objects and as bare URLs
DOCUMENTED = {
    "gradable": True, "score": 0.25, "message": "Ran 2 tests.", "output": "test 1 ...\n",
    "images": [{"label": "a plot", "url": "data:image/png;base64,iVBORw0KGgo="},
               "data:image/jpeg;base64,/9j/4AAQ"],
    "tests": [
        {"name": "test 1", "description": "does a thing", "points": 1, "max_points": 1,
         "message": "fine", "output": "ok"},
        {"name": "test 2", "description": "harder", "points": 0, "max_points": 3,
         "message": "look again", "output": "not ok",
         "images": [{"label": "what it drew", "url": "data:image/gif;base64,R0lGOD=="}]}],
}


def _with(path: str, value):
    """DOCUMENTED with one field (a dotted path; digits index lists) set, or deleted when
    ``value`` is ``...``."""
    results = json.loads(json.dumps(DOCUMENTED))
    *parents, last = path.split(".")
    target = results
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is ...:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return results


def test_the_schema_takes_what_prairielearn_documents():
    jsonschema.validate(DOCUMENTED, SCHEMA)
    jsonschema.validate({"gradable": False, "format_errors": "no file"}, SCHEMA)
    jsonschema.validate({"score": 1.0}, SCHEMA)  # gradable may be left out: it means true


@pytest.mark.parametrize("path, value", [
    ("score", ...),  # gradable: the score is required
    ("score", 1.5), ("score", -0.1), ("score", "0.25"),
    ("gradable", "yes"),
    ("scores", 0.25),  # a misspelt field is refused, not ignored
    ("message", ["a", "list"]), ("output", None),
    ("images.0.url", "https://example.com/plot.png"),  # a data URL, not a request
    ("images.0.label", 3), ("images.0.caption", "x"), ("images.1", 7),
    ("tests.0.name", ...), ("tests.0.name", 1), ("tests.0.points", "1"),
    ("tests.0.max_points", ...), ("tests.0.max_score", 1), ("tests.0.points", -1),
    ("tests.1.description", False), ("tests.1.message", 0), ("tests.1.output", {}),
    ("tests.1.images", {"url": "data:image/png;base64,"}), ("tests.1.status", "failed"),
    ("tests", {"name": "test 1"}),
])
def test_the_schema_refuses_a_wrong_field_or_type(path, value):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_with(path, value), SCHEMA)


def test_not_gradable_needs_its_format_errors():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gradable": False, "message": "?"}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gradable": False, "format_errors": [1]}, SCHEMA)


def test_a_wrong_gradient_carries_its_heat_maps_and_training_its_curves(reports):
    report = reports["buggy"]
    results = valid(json.loads(prairielearn.render(report)))
    by_name = {t["name"]: t for t in results["tests"]}
    wrong = {p.parameter for p in report.plots.gradients}
    assert wrong == {"V", "I"}  # the hidden layer's gradients, and only those
    for name, test in by_name.items():
        pictures = test.get("images", [])
        if name in {f"gradient.{p}" for p in wrong}:
            assert len(pictures) == 1 and "expected, yours" in pictures[0]["label"]
        elif name == "training":
            assert len(pictures) == 2
            assert "(mean cross-entropy)" in pictures[0]["label"]
        else:
            assert pictures == []
    for picture in by_name["gradient.V"]["images"] + by_name["training"]["images"]:
        header, data = picture["url"].split(",", 1)
        assert header == "data:image/png;base64"
        assert base64.b64decode(data).startswith(PNG)
    # what is wrong, where, and what to try, in the failing test's message
    message = by_name["gradient.V"]["message"]
    assert "GK102" in message and "no_hidden_sigmoid_derivative.py:66" in message
    assert "Try:" in message
    assert "outside tolerance" in by_name["gradient.V"]["output"] or \
        "case(s) passed" in by_name["gradient.V"]["output"]


def test_a_file_that_cannot_be_parsed_is_not_gradable(reports):
    results = valid(json.loads(prairielearn.render(reports["syntax"])))
    assert results["gradable"] is False and "score" not in results
    assert "SyntaxError" in results["format_errors"][0] or \
        "syntax" in results["format_errors"][0].lower()


def test_images_are_dropped_when_they_would_pass_the_size_limit(reports, monkeypatch):
    monkeypatch.setattr(prairielearn, "MAX_BYTES", 20_000)
    results = prairielearn.results(reports["buggy"])
    assert all("images" not in t for t in results["tests"])
    assert "1 MB limit" in results["output"]


def test_the_cli_writes_results_json(gradkit_cli, tmp_path):
    target = tmp_path / "results.json"
    result = gradkit_cli("check", EXAMPLES / "correct.py", "--format", "prairielearn",
                         "--output", target)
    assert result.exit_code == 0
    results = valid(json.loads(target.read_text()))
    assert results["score"] == 1.0


# -- the example entrypoint (docs/prairielearn/run) ----------------------------------------

def run_entrypoint(tmp_path: Path, files: dict[str, str], **env: str) -> dict:
    """Run docs/prairielearn/run with its /grade paths moved under tmp_path."""
    student = tmp_path / "student"
    student.mkdir()
    for name, text in files.items():
        (student / name).write_text(text)
    environ = {**os.environ, "GRADKIT_GRADE_ROOT": str(tmp_path),
               "GRADKIT_PYTHON": sys.executable, **env}
    done = subprocess.run([str(ENTRYPOINT)], env=environ, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return valid(json.loads((tmp_path / "results" / "results.json").read_text()))


def test_entrypoint_grades_a_buggy_submission(tmp_path):
    source = (EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py").read_text()
    results = run_entrypoint(tmp_path, {"notes.txt": "my solution", "solution.py": source})
    assert results["gradable"] is True and 0 < results["score"] < 1
    assert any(t.get("images") for t in results["tests"])


def test_entrypoint_without_a_solution_file_says_so(tmp_path):
    results = run_entrypoint(tmp_path, {"README.md": "nothing here"})
    assert results["gradable"] is False
    assert "defines train_neural_net" in results["format_errors"][0]


def test_entrypoint_writes_results_even_when_gradkit_cannot_start(tmp_path):
    results = run_entrypoint(tmp_path, {"solution.py": "x = 1\n"},
                             GRADKIT_PYTHON=shutil.which("false") or "/bin/false")
    assert results["gradable"] is False
    assert "not a verdict on your code" in results["message"]
