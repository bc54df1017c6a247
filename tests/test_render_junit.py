"""The JUnit view: valid against the schema CI systems read, one test case per check.

The schema is Jenkins' junit-10.xsd as pytest vendors it for its own junitxml tests
(tests/data/junit-10.xsd, MIT licence in its header); xmlschema validates against it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import xmlschema

from conftest import EXAMPLES, ROOT
from gradkit.api import check
from gradkit.render import junit
from gradkit.report import Output


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit-10.xsd"))


@pytest.fixture(scope="module")
def reports(sandbox, tmp_path_factory):
    folder = tmp_path_factory.mktemp("junit")
    crash = folder / "crashes.py"
    crash.write_text("def train_neural_net(X, Y, weights=None, learning_rate=1.0):\n"
                     "    return 1 / 0\n"
                     "def neural_net_predict(X, weights):\n"
                     "    print('about to fail \\x00\\x1b[31m <&>')\n"
                     "    raise ValueError('no <prediction> & no \"luck\"')\n")
    paths = {"correct": EXAMPLES / "correct.py",
             "buggy": EXAMPLES / "buggy" / "predict_returns_C.py",
             "crash": crash,
             "notebook": EXAMPLES / "notebook.ipynb"}
    return {name: check(path, sandbox=sandbox) for name, path in paths.items()}


def parse(text: str, schema: xmlschema.XMLSchema) -> ET.Element:
    schema.validate(text)
    return ET.fromstring(text)


@pytest.mark.parametrize("name", ["correct", "buggy", "crash", "notebook"])
def test_valid_with_one_test_case_per_check(reports, schema, name):
    report = reports[name]
    root = parse(junit.render(report), schema)
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(report.checks) == int(suite.get("tests")) == int(root.get("tests"))
    assert [c.get("name") for c in cases] == [c.id for c in report.checks]
    failures = [c for c in cases if c.find("failure") is not None]
    errors = [c for c in cases if c.find("error") is not None]
    assert len(failures) == int(suite.get("failures")) == \
        sum(c.status == "fail" for c in report.checks)
    assert len(errors) == int(suite.get("errors")) == \
        sum(c.status == "error" for c in report.checks)
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert float(properties["score"]) == pytest.approx(report.score)
    assert properties["passed"] == str(report.passed).lower()


def test_a_correct_submission_has_no_failures(reports, schema):
    suite = parse(junit.render(reports["correct"]), schema).find("testsuite")
    assert suite.get("failures") == "0" and suite.get("errors") == "0"


def test_failures_carry_their_messages(reports, schema):
    report = reports["buggy"]
    suite = parse(junit.render(report), schema).find("testsuite")
    predict = next(c for c in suite.findall("testcase") if c.get("name") == "predict")
    failure = predict.find("failure")
    assert failure.get("message") == report.check("predict").message.splitlines()[0]
    assert "try: " + report.check("predict").hint in failure.text


def test_errors_keep_the_students_exception_and_output_escaped(reports, schema):
    report = reports["crash"]
    text = junit.render(report)
    suite = parse(text, schema).find("testsuite")
    predict = next(c for c in suite.findall("testcase") if c.get("name") == "predict")
    assert 'no <prediction> & no "luck"' in predict.find("error").get("message")
    gradient = next(c for c in suite.findall("testcase") if c.get("name") == "gradient.V")
    assert "ZeroDivisionError" in gradient.find("error").text
    assert "crashes.py:2" in gradient.find("error").text  # where it raised
    out = suite.find("system-out").text
    assert "about to fail \\x00\\x1b[31m <&>" in out  # control characters made printable


def test_gradkit_own_error_is_one_more_error_case(reports, schema):
    report = reports["correct"].model_copy(update={
        "error": "gradkit failed: RuntimeError: worker\x07 lost", "checks": [],
        "output": Output(stdout="\x0c")})
    suite = parse(junit.render(report), schema).find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["gradkit"] and suite.get("errors") == "1"
    assert "worker\\x07 lost" in cases[0].find("error").get("message")


def test_cli_prints_junit_and_exits_with_the_verdict(gradkit_cli, schema, tmp_path):
    out = tmp_path / "junit.xml"
    result = gradkit_cli("check", EXAMPLES / "buggy" / "predict_returns_C.py", "--format",
                         "junit", "--output", out)
    assert result.exit_code == 1
    assert out.read_text().strip() == result.stdout.strip()
    suite = parse(out.read_text(), schema).find("testsuite")
    assert suite.get("failures") == "1"
