"""The report as Gradescope's ``results.json`` (the autograder specification's output format).

One test per check, numbered by check group (``gradient.V`` is 3.1, ``gradient.I`` 3.2, ...),
with the check's points, a ``passed``/``failed`` status and a markdown ``output`` that says what
is wrong, where, and what to try; diagnosis codes go in ``extra_data``. The top-level ``score`` is
the report's. Which tests students see is a setting: ``visibility`` maps a check id, a check
group or ``"*"`` to one of Gradescope's visibility values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Optional

from gradkit.render._shared import diagnoses_for, first_line, where
from gradkit.render.untrusted import (json_document, markdown_block, markdown_code,
                                      markdown_text, prepared)
from gradkit.report import Check, Report

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
#: the submission's own printing shown to students, at most this many characters
MAX_PRINTED = 4000


def render(report: Report, *, visibility: Optional[Mapping[str, str]] = None,
           stdout_visibility: str = "hidden", output_format: str = "md",
           submission: Any = None) -> str:
    """``results.json`` text for this report (safe to print: ``untrusted.json_document``)."""
    return json_document(json.dumps(
        results(report, visibility=visibility, stdout_visibility=stdout_visibility,
                output_format=output_format, submission=submission), indent=2))


def results(report: Report, *, visibility: Optional[Mapping[str, str]] = None,
            stdout_visibility: str = "hidden", output_format: str = "md",
            submission: Any = None) -> dict[str, Any]:
    """``results.json`` as a dict. ``visibility``: check id, group or ``"*"`` -> visibility.

    Text from the submission is literal in the markdown: escaped, or in code spans and blocks
    that it cannot close (``untrusted.markdown_*``); ``extra_data`` holds it as plain data.
    ``output_format="html"``: the top-level output is the visual report
    (``gradkit.render.html.fragment``, quoting ``submission``'s lines when it is the graded
    file; its template escapes every string); the tests' outputs stay markdown."""
    if output_format not in ("md", "html"):
        raise ValueError(f"output_format {output_format!r}: use 'md' or 'html'")
    markdown = prepared(report, "markdown")
    visibility = dict(visibility or {})
    for key, value in [*visibility.items(), ("stdout_visibility", stdout_visibility)]:
        if value not in VISIBILITIES:
            raise ValueError(f"visibility {value!r} for {key!r}: use one of "
                             f"{', '.join(VISIBILITIES)}")
    tests = [_test(markdown, check, number, visibility)
             for check, number in zip(markdown.checks, numbers(markdown.checks))]
    return {
        "score": report.score,
        "execution_time": max(0, math.ceil(report.duration_seconds)),
        "output": _summary(markdown) if output_format == "md" else _html(report, submission),
        "output_format": output_format,
        "test_output_format": "md",
        "stdout_visibility": stdout_visibility,
        "extra_data": {
            "gradkit_version": report.gradkit_version,
            "format_version": report.format_version,
            "submission_sha256": report.submission.sha256,
            "max_score": report.max_score,
            "passed": report.passed,
            "diagnoses": [d.code for d in report.diagnoses],
            "error": prepared(report, "json").error,
        },
        "tests": tests,
    }


def _html(report: Report, submission: Any) -> str:
    from gradkit.render import html  # jinja2 and matplotlib: only for this view

    return html.fragment(report, submission)


def numbers(checks: list[Check]) -> list[str]:
    """Gradescope test numbers: one per check group, ``N.M`` within a group of several."""
    groups: list[str] = []
    for check in checks:
        if check.group not in groups:
            groups.append(check.group)
    sizes = {g: sum(c.group == g for c in checks) for g in groups}
    seen: dict[str, int] = {}
    out = []
    for check in checks:
        seen[check.group] = seen.get(check.group, 0) + 1
        major = groups.index(check.group) + 1
        out.append(str(major) if sizes[check.group] == 1 else f"{major}.{seen[check.group]}")
    return out


def visibility_of(check: Check, visibility: Mapping[str, str]) -> str:
    return visibility.get(check.id) or visibility.get(check.group) or visibility.get("*") or \
        "visible"


def _md(text: str) -> str:
    return markdown_text(text)


def _code(text: str) -> str:
    return markdown_code(text)


def _test(report: Report, check: Check, number: str, visibility: Mapping[str, str]
          ) -> dict[str, Any]:
    diagnoses = diagnoses_for(report, check)
    passed = check.status in ("pass", "skipped")
    return {
        "name": f"{check.title} ({check.id})",
        "number": number,
        "score": check.points,
        "max_score": check.max_points,
        "status": "passed" if passed else "failed",
        "output": _test_output(check, diagnoses),
        "output_format": "md",
        "visibility": visibility_of(check, visibility),
        "tags": [check.group],
        "extra_data": {"check": check.id, "status": check.status,
                       "cases_passed": check.cases_passed, "cases_run": check.cases_run,
                       "diagnoses": [d.code for d in diagnoses]},
    }


def _test_output(check: Check, diagnoses) -> str:
    mark = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skipped": "SKIPPED"}[check.status]
    parts = [f"**{mark}** · {check.points:g} / {check.max_points:g} points"
             + (f" · {check.cases_passed} of {check.cases_run} cases" if check.cases_run else "")]
    if check.message:
        parts.append(_md(check.message))
    if check.location is not None:
        line = f"**Where:** {_code(where(check.location))}"
        if check.location.code:
            line += f": {_code(check.location.code)}"
        parts.append(line)
    for d in diagnoses:
        parts.append(_diagnosis(d))
    if check.status not in ("pass", "skipped") and check.hint:
        parts.append(f"**Try:** {_md(check.hint)}")
    return "\n\n".join(parts)


def _diagnosis(d) -> str:
    text = f"**{d.code} {_md(d.title)}:** {_md(d.message)}"
    if d.location is not None:
        text += f" At {_code(where(d.location))}"
        text += f": {_code(d.location.code)}" if d.location.code else ""
    return text + f" (more: {_code('gradkit explain ' + d.code)})"


def _summary(report: Report) -> str:
    if report.error:
        return ("## gradkit could not grade this submission\n\n"
                "The grader itself failed; this is not a verdict on your code. Your instructor "
                "can see the details.\n\n" + _code(first_line(report.error)))
    verdict = "every check passed" if report.passed else "some checks failed"
    parts = [f"## gradkit: {verdict} · {report.score:g} / {report.max_score:g}",
             f"Graded {_code(report.submission.path)} on {len(report.cases)} cases with gradkit "
             f"{report.gradkit_version} (torch {report.torch_version})."]
    if report.diagnoses:
        parts.append("### What looks wrong")
        parts.append("\n".join(f"- {_diagnosis(d)}" for d in report.diagnoses))
    failed = [c for c in report.checks if c.status not in ("pass", "skipped")]
    if failed:
        parts.append("### Checks that failed")
        lines = []
        for c in failed:
            at = f" at {_code(where(c.location))}" if c.location else ""
            lines.append(f"- **{c.id}** ({c.points:g} / {c.max_points:g}){at}: "
                         f"{_md(first_line(c.message))}")
        parts.append("\n".join(lines))
    printed = (report.output.stdout + report.output.stderr).strip()
    if printed:
        shown = printed[:MAX_PRINTED] + ("\n..." if len(printed) > MAX_PRINTED else "")
        parts.append("### Your code printed\n\n" + markdown_block(shown))
    return "\n\n".join(parts)
