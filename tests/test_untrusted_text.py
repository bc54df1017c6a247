"""Untrusted text in every output: what a submission wrote is shown, never obeyed.

Three layers of tests:

- the model: every string field of the report is either marked ``Untrusted`` or listed below as
  gradkit's own words, so a new field cannot be forgotten;
- a fuzz test (hypothesis): arbitrary strings (control characters, bidi overrides, invisible
  code points, ``::``, ``##[``, newlines, CSV formula starts, markdown, HTML, rich markup) in every
  marked field of a report, through every renderer, with each output's invariants asserted;
- the real CLI on ``tests/data/hostile/hostile_text.py``: the terminal's bytes (colour off and
  forced on), stdout under ``GITHUB_ACTIONS=true`` in every format, the step summary, the JUnit
  XML against its schema, and the gradebook of a class whose files are named like formulas.

Workflow commands are parsed the way the Actions runner parses them (``ActionCommand.cs``:
``TryParseV2`` after ``TrimStart``, and the older ``##[`` anywhere in a line).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import HealthCheck, example, given, settings, strategies as st
from markdown_it import MarkdownIt
from pydantic import BaseModel

from conftest import ROOT
from gradkit import batch
from gradkit.render import (github, gradescope, json_report, junit, prairielearn, terminal,
                            untrusted)
from gradkit.render import html as html_page
from gradkit.report import (Check, Comparison, Diagnosis, Evidence, IntermediateResult, Output,
                            Report, SourceLocation, SubmissionInfo, Tolerance)

HOSTILE = ROOT / "tests" / "data" / "hostile" / "hostile_text.py"
SGR = re.compile(r"\x1b\[[0-9;]*m")

# -- the model: every string is marked, or gradkit's own -------------------------------------

#: string fields that hold only gradkit's own words, and why
TRUSTED = {
    "Tolerance.dtype": "a torch dtype name gradkit chose",
    "Comparison.case": "a case id from gradkit's cases",
    "Comparison.actual_dtype": "the dtype of a tensor gradkit rebuilt (one of the wire's dtypes)",
    "Check.id": "gradkit's check ids", "Check.title": "gradkit's titles",
    "Check.hint": "gradkit's hints (grading.HINTS, policy.HINT)",
    "IntermediateResult.name": "the notebook's names (dLdP ... dLdI)",
    "Evidence.cases": "case ids",
    "Diagnosis.code": "catalogue codes", "Diagnosis.title": "catalogue titles",
    "Diagnosis.quantities": "gradkit's quantity names",
    "Diagnosis.explanation": "catalogue text",
    "CaseInfo.id": "gradkit's cases", "CaseInfo.description": "gradkit's cases",
    "CaseInfo.dtype": "gradkit's cases",
    "SubmissionInfo.sha256": "a hex digest gradkit computed",
    "Isolation.process": "written by the sandbox before the submission runs",
    "Isolation.user": "the same", "Isolation.network": "the same",
    "Isolation.filesystem": "the same", "Isolation.syscalls": "the same",
    "Isolation.limits": "the same",
    "Isolation.namespaces": "the same", "Isolation.landlock": "the same",
    "Isolation.exposed": "the same",
    "Report.gradkit_version": "gradkit's", "Report.torch_version": "the grader's torch",
    "Report.python_version": "the grader's Python",
    "Report.assignment": "the reference's assignment description",
    "GradientPicture.parameter": "a parameter name of the assignment description",
    "GradientPicture.quantity": "gradkit's words for the gradient",
    "GradientPicture.case": "a case id of gradkit's battery",
    "TrainingCurve.case": "the same",
}


def _holds_text(annotation) -> bool:
    if annotation in (str, typing.Any):
        return True
    return any(_holds_text(arg) for arg in typing.get_args(annotation))


def _models(model: type[BaseModel], seen: dict) -> dict:
    seen[model.__name__] = model
    for info in model.model_fields.values():
        stack = [info.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if annotation.__name__ not in seen:
                    _models(annotation, seen)
            stack.extend(typing.get_args(annotation))
    return seen


def test_every_string_field_is_marked_untrusted_or_known_to_be_gradkits_own():
    unclassified = []
    for name, model in _models(Report, {}).items():
        marked = set(untrusted.untrusted_fields(model))
        for field, info in model.model_fields.items():
            path = f"{name}.{field}"
            if _holds_text(info.annotation) and field not in marked and path not in TRUSTED:
                unclassified.append(path)
    assert not unclassified, (
        f"string fields {unclassified}: type them report.Untrusted if a submission can put a "
        "single character into them, else add them to TRUSTED here with the reason")


def test_the_schema_marks_untrusted_strings_and_old_reports_still_load():
    schema = Report.model_json_schema(mode="serialization")
    location = schema["$defs"]["SourceLocation"]["properties"]
    assert location["code"]["x-gradkit-untrusted"] is True
    assert "x-gradkit-untrusted" not in location["line"]
    old = Report.model_validate({"format_version": "1.0", "gradkit_version": "0.1.0",
                                 "torch_version": "2", "python_version": "3",
                                 "submission": {"path": "a.py", "kind": "py"}})
    assert old.format_version == "2.0"


def test_lone_surrogates_become_visible_escapes_json_can_carry():
    check = Check(id="load", group="load", title="t", status="error", points=0, max_points=0,
                  message="raised ValueError: \udc80")
    assert check.message == "raised ValueError: \\udc80"
    assert json.loads(json_report.render(_report(error="boom \ud800")))["error"] == \
        "boom \\ud800"


# -- each neutraliser, by example ------------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    ("\x1b[2J", "\\x1b[2J"),
    ("\x9b31m", "\\x9b31m"),
    ("a\nb\rc\td\x00\x7f", "a\\x0ab\\x0dc\\x09d\\x00\\x7f"),
    ("\u202eDESSAP", "\\u202eDESSAP"),
    ("\u200b\ufeff\u00ad", "\\u200b\\ufeff\\xad"),
    ("\u3164x\U000e0041", "\\u3164x\\U000e0041"),
    ("plain text, é, 中文, 🙂", "plain text, é, 中文, 🙂"),
])
def test_visible_shows_every_hazard_and_nothing_else(text, shown):
    assert untrusted.visible(text) == shown


@pytest.mark.parametrize("text, cell", [
    ("+A2+B2", "'+A2+B2"), ("=1+1", "'=1+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\\x09=1"), ("\r=1", "'\\x0d=1"), ("  =1", "'  =1"), ("\uff1d1+1", "'\uff1d1+1"),
    ("alice", "alice"), ("a=b", "a=b"), ("", ""),
])
def test_csv_cells_that_start_like_a_formula_are_prefixed(text, cell):
    assert untrusted.csv_cell(text) == cell


@pytest.mark.parametrize("text", ["a", "`", "``x``", "a ` b", " x", "`x` | y", "````"])
def test_a_code_span_holds_its_text_exactly(text):
    tokens = MarkdownIt("commonmark").parseInline(untrusted.markdown_code(text))[0].children
    assert [t.type for t in tokens] == ["code_inline"] and tokens[0].content == text


def test_command_safe_breaks_both_command_syntaxes_and_nothing_else():
    text = "ok\n  ::add-mask::x\n\x1b[1m::error::y\x1b[0m\r::stop-commands::z\nsee ##[add-mask]w\n"
    safe = untrusted.command_safe(text)
    assert [line for line in safe.splitlines() if runner_command(line)] == []
    assert safe.startswith("ok\n") and "\\::add-mask::x" in safe and "##\\[add-mask]" in safe
    assert untrusted.command_safe("a :: b\n") == "a :: b\n"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["::", "##[", "]", " ", "\t", "\u3000", "\n", "\r", "\x1b[1m", "\xa0"])),
    max_size=30).map("".join))
def test_no_line_of_command_safe_text_is_a_command(text):
    safe = untrusted.command_safe(text)
    assert commands_in(safe) == []
    # and it changes nothing else: undoing its two escapes gives the text back
    assert safe.replace("\\:", ":").replace("##\\[", "##[") == text or "\\" in text


# -- how the Actions runner reads a line (ActionCommand.cs) ----------------------------------

def runner_command(line: str):
    """The command the runner would run for this line of output, or None."""
    v2 = line.lstrip()
    if v2.startswith("::"):
        end = v2.find("::", 2)
        if end >= 0:
            info = v2[2:end]
            name, _, props = info.partition(" ")
            properties = {}
            for prop in (p for p in props.strip().split(",") if p):
                key, sep, value = prop.partition("=")
                if key and sep and value:
                    for token, code in (("\r", "%0D"), ("\n", "%0A"), (":", "%3A"),
                                        (",", "%2C"), ("%", "%25")):
                        value = value.replace(code, token)
                    properties[key] = value
            data = v2[end + 2:]
            for token, code in (("\r", "%0D"), ("\n", "%0A"), ("%", "%25")):
                data = data.replace(code, token)
            return name, properties, data
    if "##[" in line and "]" in line[line.index("##[") + 3:]:  # TryParse: anywhere in the line
        start = line.index("##[") + 3
        end = line.index("]", start)
        return line[start:end].split(" ")[0], {}, line[end + 1:]
    return None


def runner_lines(text: str) -> list[str]:
    """Lines as the runner reads a process's output: split at \\n, \\r and \\r\\n."""
    return re.split(r"\r\n|\r|\n", text)


def commands_in(text: str) -> list[tuple]:
    return [c for c in map(runner_command, runner_lines(text)) if c is not None]


# -- a report with every marked field filled ----------------------------------------------

def _report(text: str = "x", error=None, **fill) -> Report:
    """A report that uses every model and every renderer's branches; ``text`` in every marked
    field (each ``fill[name]`` instead, where given)."""
    t = lambda name: fill.get(name, text)  # noqa: E731
    location = SourceLocation(file=t("file"), line=12, code=t("code"))
    cell = SourceLocation(file=t("file"), line=40, cell=3, cell_line=2, code=t("code"))
    comparison = Comparison(quantity=t("quantity"), case="batch5", passed=False, problem="values",
                            expected_shape=[3, 4], actual_shape=[3, 4], max_abs_error=0.5,
                            worst_index=[1, 2], expected_at_worst=1.0, actual_at_worst=1.5,
                            mismatched=3, total=12,
                            tolerance=Tolerance(dtype="float64", rtol=1e-7, atol=1e-9),
                            message=t("comparison"))
    checks = [
        Check(id="load", group="load", title="loads", status="pass", points=0, max_points=0),
        Check(id="predict", group="predict", title="predicts", status="error", points=0,
              max_points=10, message=t("message"), hint="return P", location=location,
              cases_run=3),
        Check(id="gradient.W", group="gradient", title="dL/dW", status="fail", points=5,
              max_points=15, message=t("message"), hint="look at dLdW", location=cell,
              cases_passed=1, cases_run=2, comparisons=[comparison]),
        Check(id="gradient.V", group="gradient", title="dL/dV", status="fail", points=0,
              max_points=15, message=t("message"), cases_run=2,
              comparisons=[comparison.model_copy(update={"problem": "shape",
                                                         "actual_at_worst": None})]),
        Check(id="training", group="training", title="trains", status="skipped", points=0,
              max_points=0),
    ]
    diagnoses = [Diagnosis(code="GK104", title="The loss derivative has the wrong sign",
                           message=t("diagnosis"), quantities=["dL/dW"], location=location,
                           evidence=Evidence(factor=-1.0, cases=["batch5"],
                                             details={"global": t("details")})),
                 Diagnosis(code="GK999", title="Something else", message=t("diagnosis"),
                           severity="warning", quantities=["gradient.V"])]
    intermediates = [IntermediateResult(name="dLdP", status="match", found_as=t("found_as"),
                                        matched_by="value", location=location,
                                        comparison=comparison),
                     IntermediateResult(name="dLdC", status="not_found")]
    return Report(gradkit_version="0.1.0", torch_version="2", python_version="3.11",
                  submission=SubmissionInfo(path=t("path"), kind="py", sha256="ab" * 32),
                  checks=checks, diagnoses=diagnoses, intermediates=intermediates,
                  output=Output(stdout=t("stdout"), stderr=t("stderr")), error=error,
                  duration_seconds=1.5)


FIELDS = ("file", "code", "quantity", "comparison", "message", "diagnosis", "details", "found_as",
          "path", "stdout", "stderr")


def _marked_values(model: BaseModel, found: dict) -> dict:
    """(model, field) -> the values of every marked field in this report, at any depth."""
    marked = set(untrusted.untrusted_fields(type(model)))
    for field in type(model).model_fields:
        value = getattr(model, field)
        if field in marked:
            found.setdefault((type(model).__name__, field), []).append(value)
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, BaseModel):
                _marked_values(inner, found)
    return found


def test_the_report_used_below_fills_every_marked_field_of_every_model():
    marker = "marker"
    found = _marked_values(_report(marker, error=marker), {})
    every = {(name, field) for name, model in _models(Report, {}).items()
             for field in untrusted.untrusted_fields(model)}
    assert set(found) == every
    for (name, field), values in found.items():
        assert any(marker in json.dumps(v) for v in values), (name, field)
    assert untrusted.map_untrusted(_report(marker, error=marker), lambda text: "") \
        .model_dump_json().count("marker") == 0


# -- the invariants of each output -------------------------------------------------------------

def no_hazards(text: str, allowed: str = "\n") -> None:
    bad = {c for c in text if c not in allowed and untrusted.is_hazard(c)}
    assert not bad, f"raw hazardous characters in the output: {sorted(map(repr, bad))}"


def no_commands(text: str, own: tuple[str, ...] = ()) -> None:
    """No line is a workflow command, except the lines in ``own`` (gradkit's annotations)."""
    found = [line for line in runner_lines(text) if runner_command(line) and line not in own]
    assert not found, f"stdout lines the runner would run as commands: {found[:3]}"


def render_terminal(report: Report, colour: bool) -> str:
    from rich.console import Console

    out = io.StringIO()
    terminal.render(report, Console(file=out, force_terminal=colour, no_color=not colour,
                                    color_system="truecolor" if colour else None, width=80,
                                    highlight=False))
    return out.getvalue()


_MARKDOWN = MarkdownIt("commonmark").enable("table").enable("strikethrough")


def markdown_shape(text: str) -> list:
    """The markdown's structure: block tokens, and each inline's tokens with text runs merged."""
    shape = []
    for token in _MARKDOWN.parse(text):
        if token.type != "inline":
            shape.append(token.type)
            continue
        kinds = []
        for child in token.children or []:
            assert child.type not in ("html_inline", "image", "link_open"), \
                f"untrusted text became markup: {child.type} {child.content!r}"
            if not (child.type == "text" and kinds and kinds[-1] == "text"):
                kinds.append(child.type)
        shape.append(tuple(kinds))
    assert "html_block" not in shape
    return shape


def _benign(text: str) -> str:
    """The same shape of text, nothing in it: whitespace kept, everything else ``a``."""
    return "".join(c if c.isspace() else "a" for c in text)


def _strings_in(value) -> list[str]:
    """Every string in a parsed JSON value, keys included."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def check_every_renderer(report: Report) -> None:
    benign = untrusted.map_untrusted(report, _benign)

    # the terminal, with and without colour: the student's text is inert
    for colour in (False, True):
        shown = render_terminal(report, colour)
        no_commands(shown)
        assert "##[" not in shown
        no_hazards(SGR.sub("", shown))
        if colour:
            assert set(SGR.findall(shown)) <= set(SGR.findall(render_terminal(benign, True)))

    # JSON: the same data, nothing a terminal or the runner would act on
    text = json_report.render(report)
    no_hazards(text)
    no_commands(text)
    assert "##[" not in text
    assert json.loads(text) == json.loads(report.model_dump_json())

    # JUnit: valid XML, valid against the schema, the printed output kept as data
    text = junit.render(report)
    no_hazards(text, "\n\t")
    no_commands(text)
    JUNIT_SCHEMA.validate(text)
    suite = ET.fromstring(text).find("testsuite")
    if report.output.stdout:
        assert suite.find("system-out").text == untrusted.xml_text(report.output.stdout)

    # Gradescope: JSON as above, markdown with the same structure as with harmless text
    text = gradescope.render(report)
    no_hazards(text)
    no_commands(text)
    results, plain = json.loads(text), gradescope.results(benign)
    assert markdown_shape(results["output"]) == markdown_shape(plain["output"])
    for test, plain_test in zip(results["tests"], plain["tests"], strict=True):
        assert markdown_shape(test["output"]) == markdown_shape(plain_test["output"])
    # (with the visual report as its output: the page inside the JSON)
    text = gradescope.render(report, output_format="html")
    no_hazards(text)
    no_commands(text)
    assert "##[" not in text

    # GitHub Actions: one command per annotation, read back exactly; the summary stays markdown
    found = github.annotations(report)
    lines = github.commands(report).splitlines()
    assert len(lines) == len(found)
    for line, annotation in zip(lines, found):
        assert runner_lines(line) == [line]
        name, properties, data = runner_command(line)
        assert name == annotation.level and set(properties) <= {"file", "line", "title"}
        assert data == annotation.message and properties["file"] == annotation.file
        assert properties["title"] == annotation.title
        no_hazards(data, "\n\r")
    assert markdown_shape(github.summary(report)) == markdown_shape(github.summary(benign))

    # PrairieLearn: JSON as above, nothing the runner reads as a command (``##[`` was)
    text = prairielearn.render(report)
    no_hazards(text)
    no_commands(text)
    assert "##[" not in text
    assert json.loads(text) == json.loads(json.dumps(prairielearn.results(report)))
    for value in _strings_in(json.loads(text)):
        no_hazards(value)

    # the HTML page as `gradkit check --format html` prints it
    page = html_page.render(report)
    text = untrusted.html_document(page)
    no_hazards(text, "\n\t")
    no_commands(text)
    assert "##[" not in text
    assert untrusted.html_document(text) == text  # nothing left to escape

    # HTML text for the HTML view
    for value in (report.output.stdout, report.checks[1].message):
        html = str(untrusted.html_text(value))
        assert "<" not in html and ">" not in html
        no_hazards(html)


JUNIT_SCHEMA = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit-10.xsd"))

_PIECES = st.one_of(
    st.characters(codec="utf-8"),  # any code point UTF-8 can carry (no lone surrogates)
    st.sampled_from(["\x1b", "\x9b", "\x07", "\r", "\n", "\t", "\x00", "\x7f", "\u202e",
                     "\u2066", "\u200b", "\ufeff", "\u3164", "\u2028", "\x85", "\u3000",
                     ":", "#", "[", "]", "%", ",", "=", "+", "-", "@", "|", "`", "*", "_", "<",
                     ">", "&", "!", "$", "~", "\\", " "]),
    st.sampled_from(["::", "##[", "::add-mask::", "::stop-commands::", "%0A", "%25",
                     "\x1b[32mPASSED\x1b[0m", "\x1b]0;title\x07", "[bold red]x[/]", ":smile:",
                     "<script>", "```", "]]>", "www.x.io", "http://x.io", "\n::error::x",
                     "\r::warning::y", "\n  ##[add-mask]z", "- item", "1. item", "# head",
                     "> quote", "    code"]))
hostile_text = st.lists(_PIECES, max_size=12).map("".join)
#: always tried first: each field a different attack (hypothesis then searches around them)
KNOWN = ["\x1b[2J\x1b]0;t\x07", "a`b``c```", " `x| y` ", "\n::add-mask::m\r##[stop-commands]s",
         "<img src=x onerror=alert(1)>&amp;", "[bold green]PASSED[/]", "- 1. # > |a|b|",
         "\u202e\u200b\ufeff\u3164::error::z", "%0A%25::warning::w", "=1+1", "\t@SUM(A1)"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({name: hostile_text for name in FIELDS}),
       st.one_of(st.none(), hostile_text))
@example({name: KNOWN[i % len(KNOWN)] for i, name in enumerate(FIELDS)}, None)
@example({name: KNOWN[(i + 3) % len(KNOWN)] for i, name in enumerate(FIELDS)}, KNOWN[3])
@example({name: KNOWN[(i + 5) % len(KNOWN)] for i, name in enumerate(FIELDS)}, None)
def test_arbitrary_text_in_every_untrusted_field_is_inert_in_every_output(fill, error):
    check_every_renderer(_report(**fill, error=error))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(hostile_text, hostile_text, hostile_text), min_size=1, max_size=4))
def test_arbitrary_names_and_errors_in_the_gradebook_are_never_formulas(rows):
    out = io.StringIO()
    path = Path("/dev/null")
    made = [batch.Row(student=s, score=1.0, max=2.0, passed=False, error=e, submission=p)
            for s, e, p in rows]
    with _TemporaryFolder() as folder:
        path = folder / "gradebook.csv"
        batch.write_gradebook(made, path)
        out.write(path.read_text(encoding="utf-8"))
    read = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert len(read) == len(made)
    for row, original in zip(read, made):
        for column in batch.UNTRUSTED_COLUMNS:
            cell = row[column]
            assert cell == untrusted.csv_cell(getattr(original, column))
            assert not cell.lstrip().startswith(untrusted.FORMULA_STARTS)
            no_hazards(cell, "")
        assert row["score"] == "1" and row["max"] == "2"


class _TemporaryFolder:
    def __enter__(self) -> Path:
        import tempfile

        self.path = Path(tempfile.mkdtemp(prefix="gradkit-gradebook-"))
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# -- the real CLI on a hostile submission -----------------------------------------------------

ATTACK_WORDS = ("\x1b", "\x07", "\x9b", "\u202e", "\u3164", "\x00")


@pytest.fixture(scope="module")
def hostile_report(sandbox) -> Report:
    from gradkit.api import check

    return check(HOSTILE, sandbox=sandbox)


def test_the_hostile_submission_puts_its_attacks_into_the_report(hostile_report):
    report = hostile_report
    predict = report.check("predict")
    assert predict.status == "error"
    assert "\x1b[2J" in predict.message and "::add-mask::" in predict.message
    assert "\x1b" in report.output.stdout and "::stop-commands::" in report.output.stderr
    assert "\x1b" in predict.location.code
    assert any(i.found_as and "\u1160" in i.found_as for i in report.intermediates)
    assert not report.passed and report.error is None


@pytest.mark.parametrize("colour", ["--no-color", "--color"])
def test_terminal_bytes_hold_no_control_sequence_of_the_student(gradkit_cli, colour):
    result = gradkit_cli("check", HOSTILE, colour)
    assert result.exit_code == 1
    shown = result.stdout_bytes.decode("utf-8")
    if colour == "--no-color":
        assert "\x1b" not in shown
    no_hazards(SGR.sub("", shown))
    # what the student tried is there to read, as text
    assert "\\x1b[2J" in shown and "\\x1b]0;" in shown and "\\u1160dBdA" in shown
    assert "FAILED" in shown.splitlines()[-1] and "PASSED" not in shown.splitlines()[-1]
    green = re.findall(r"\x1b\[[0-9;]*32m([^\x1b]*)", shown)
    assert all(text.strip() in ("PASS", "ok") for text in green), green


@pytest.mark.parametrize("fmt", ["terminal", "json", "junit", "gradescope", "prairielearn",
                                 "html"])
def test_under_github_actions_only_gradkits_own_commands_reach_stdout(gradkit_cli, hostile_report,
                                                                    monkeypatch, tmp_path, fmt):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.delenv("GITHUB_WORKSPACE", raising=False)
    result = gradkit_cli("check", HOSTILE, "--format", fmt)
    assert result.exit_code == 1
    stdout = result.stdout_bytes.decode("utf-8")
    own = tuple(github.commands(hostile_report).splitlines())
    assert own and all(line in stdout.splitlines() for line in own)
    no_commands(stdout, own)
    assert "##[" not in stdout
    no_commands(result.stderr)  # the runner reads a step's stderr for commands too
    ran = commands_in(stdout)
    assert {name for name, _, _ in ran} <= {"error", "warning", "notice"}
    assert len(ran) == len(own)
    text = summary.read_text(encoding="utf-8")
    assert "<script>" not in text and "\x1b" not in text
    markdown_shape(text)


def test_junit_of_the_hostile_submission_is_valid_and_keeps_its_output(gradkit_cli, tmp_path):
    out = tmp_path / "junit.xml"
    result = gradkit_cli("check", HOSTILE, "--format", "junit", "--output", out)
    assert result.exit_code == 1
    text = out.read_text(encoding="utf-8")
    JUNIT_SCHEMA.validate(text)
    suite = ET.fromstring(text).find("testsuite")
    printed = suite.find("system-out").text
    assert "::stop-commands::pwned" in printed and "\\x1b[2J" in printed
    assert "\u202e" in printed  # data XML can hold stays as it was (as a character reference)
    assert "\u202e" not in text and "&#x202e;" in text


def test_a_class_with_formula_file_names_gets_a_gradebook_without_formulas(gradkit_cli,
                                                                         tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    names = ["+A2+B2", "=1+1", "-2+3", "@SUM(A1)"]
    for name in names:
        shutil.copy(HOSTILE, folder / f"{name}.py")
    students = [batch._safe(name) for name in names]  # "=" and "()" are not kept in names
    assert [s[0] for s in students] == ["+", "_", "-", "@"]
    result = gradkit_cli("grade", folder, "--out", tmp_path / "out", "--no-progress",
                         "--jobs", "1")
    assert result.exit_code == 0, result.output
    no_commands(result.stdout)
    with open(tmp_path / "out" / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["student"] for r in rows) == sorted(untrusted.csv_cell(s) for s in students)
    assert {r["student"] for r in rows} >= {"'+A2+B2", "'-2+3", "'@SUM_A1_"}
    for row in rows:
        for column in batch.UNTRUSTED_COLUMNS:
            assert not row[column].lstrip().startswith(untrusted.FORMULA_STARTS), row
        assert float(row["score"]) < float(row["max"])  # the wrong solution under the attack
    reports = sorted((tmp_path / "out" / "reports").glob("*.json"))
    assert [p.stem for p in reports] == sorted(students)  # the files keep the students' names
    for path in reports:  # safe to print, like --format json, and the same data
        text = path.read_text(encoding="utf-8")
        no_hazards(text)
        no_commands(text)
        saved = Report.model_validate_json(text)
        assert "\x1b[2J" in saved.check("predict").message and "\x1b[2J" in saved.output.stdout


def test_an_instructors_pytest_sees_the_students_exception_as_inert_text(sandbox):
    import torch

    from gradkit.session import StudentFunctions, SubmissionError

    student = StudentFunctions(HOSTILE, sandbox)
    weights = {"V": torch.zeros(3, 4), "I": torch.zeros(1, 4), "W": torch.zeros(4, 1),
               "J": torch.zeros(1, 1)}
    with pytest.raises(SubmissionError) as raised:
        student.predict(torch.zeros(2, 3), weights)
    message = str(raised.value)
    assert "\\x1b[2J" in message and "::stop-commands::" in message
    no_hazards(message)
    no_commands(message)
    assert "##[" not in message


def test_gradkits_own_crash_shows_hostile_text_in_its_traceback_inert():
    """Exit 3 (a gradkit bug) prints a traceback whose message may quote a submission's bytes:
    controls are shown as escapes and no line of it is a workflow command."""
    import subprocess
    import sys

    hostile = "\\x1b[2J\\x1b]0;owned\\x07\\n::add-mask::token\\n##[error]fake"
    script = ("import gradkit.cli as cli\n"
              "def boom():\n"
              f"    raise RuntimeError('{hostile}')\n"
              "cli.main = boom\n"
              "cli.run()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3
    assert "RuntimeError" in done.stderr and "\\x1b[2J" in done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert not any(line.lstrip().startswith("::") or "##[" in line
                   for line in done.stderr.splitlines())
