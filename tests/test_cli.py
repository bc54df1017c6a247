"""The `gradkit` command: every output format on a correct and a failing example, the exit codes,
and the commands instructors script (`grade`, `schema`)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from conftest import EXAMPLES
from gradkit.cli import FORMATS, renderer

EXAMPLE_VERDICTS = [(EXAMPLES / "correct.py", 0),
                    (EXAMPLES / "buggy" / "sign_error_dLdP.py", 1),
                    (EXAMPLES / "notebook.ipynb", 1)]


def parse(fmt: str, text: str):
    """The score each format states, read back from its own text."""
    if fmt == "json":
        return json.loads(text)["score"]
    if fmt == "gradescope":
        return json.loads(text)["score"]
    if fmt == "html":
        return float(text.split('data-score="')[1].split('"')[0])
    if fmt == "prairielearn":  # a fraction of the maximum, which is 100 here
        return round(json.loads(text)["score"] * 100, 4)
    if fmt == "junit":
        suite = ET.fromstring(text).find("testsuite")
        return float(next(p.get("value") for p in suite.iter("property")
                          if p.get("name") == "score"))
    return float(text.split("score ")[1].split(" /")[0])  # terminal: "PASSED · score 100 / 100"


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("path, code", EXAMPLE_VERDICTS,
                         ids=[p.name for p, _ in EXAMPLE_VERDICTS])
def test_every_format_states_the_same_score_and_exits_with_the_verdict(gradkit_cli, fmt, path,
                                                                       code, tmp_path):
    out = tmp_path / "report.json"
    result = gradkit_cli("check", path, "--format", fmt, "--no-color", "--output", out)
    assert result.exit_code == code, result.stderr
    reference = json.loads(out.read_text()) if fmt in ("terminal", "json") else None
    score = parse(fmt, result.stdout)
    if reference is not None:
        assert score == pytest.approx(reference["score"], abs=5e-4)
    assert (score == 100) == (code == 0)


def test_every_format_is_a_renderer_of_the_report():
    for name, target in FORMATS.items():
        if target is not None:
            assert callable(renderer(name)), name


def test_help_lists_the_ways_in(gradkit_cli):
    result = gradkit_cli("--help")
    for command in ("check", "grade", "schema", "explain"):
        assert command in result.stdout
    check_help = gradkit_cli("check", "--help").stdout
    assert "gradescope" in check_help and "junit" in check_help and "--visibility" in check_help
    grade_help = gradkit_cli("grade", "--help").stdout
    assert "--jobs" in grade_help and "Exit code 0 when the batch completed" in \
        " ".join(grade_help.split())


@pytest.mark.parametrize("args", [
    ("check", "x.py", "--format", "xml"),
    ("check", "x.py", "--visibility", "never"),
    ("check", "x.py", "--points", "gradient=3"),
    ("grade",),
    ("grade", "no/such/folder"),
    ("grade", ".", "--jobs", "0"),
])
def test_usage_errors_exit_2(gradkit_cli, args):
    assert gradkit_cli(*args).exit_code == 2


def test_a_missing_file_is_a_failed_check_not_a_usage_error(gradkit_cli, tmp_path):
    result = gradkit_cli("check", tmp_path / "nothing.py", "--format", "junit")
    assert result.exit_code == 1
    assert 'name="load"' in result.stdout
