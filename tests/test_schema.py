"""The report's JSON Schema is pinned: a change to the format must be a deliberate one.

If a test here fails because you changed the report on purpose: bump FORMAT_VERSION in
gradkit/report.py (migrating older reports in Report.migrate), then regenerate the pinned copy:

    gradkit schema > tests/data/report.schema.json
"""

from __future__ import annotations

import json

import jsonschema

from conftest import EXAMPLES, ROOT
from gradkit.report import FORMAT_VERSION, Report

PINNED = ROOT / "tests" / "data" / "report.schema.json"
HOW = ("bump FORMAT_VERSION in gradkit/report.py (and migrate older reports in Report.migrate), "
       "then regenerate the pinned schema: gradkit schema > tests/data/report.schema.json")


def pinned() -> dict:
    return json.loads(PINNED.read_text())


def test_the_report_schema_is_the_pinned_one():
    current = Report.model_json_schema(mode="serialization")
    assert current == pinned(), f"The report's JSON Schema changed. If that is deliberate, {HOW}."


def test_the_pinned_schema_carries_the_current_format_version():
    version = pinned()["properties"]["format_version"]
    assert FORMAT_VERSION in (version.get("const"), version.get("default")), \
        f"FORMAT_VERSION is {FORMAT_VERSION} but the pinned schema is for {version}: {HOW}."


def test_gradkit_schema_prints_it(gradkit_cli):
    result = gradkit_cli("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == Report.model_json_schema(mode="serialization")


def test_json_reports_are_valid_against_it(check_json):
    """The schema describes what `--format json` writes, computed score and verdict included."""
    for path in (EXAMPLES / "correct.py", EXAMPLES / "buggy" / "global_biases.py"):
        report, _ = check_json(path)
        jsonschema.validate(report, pinned())
        assert {"score", "max_score", "passed"} <= set(report)
