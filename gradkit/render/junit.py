"""The report as JUnit XML, the format CI systems read (Jenkins, GitLab, GitHub test reporters).

One ``<testsuite>`` per report and one ``<testcase>`` per check, so the counts match the report:
a failed check is a ``<failure>``, a check that could not run (the code raised, crashed or timed
out) an ``<error>``, a skipped check ``<skipped>``. When gradkit itself failed there is one more
test case, ``gradkit``, with the error. Valid against the Jenkins ``junit-10.xsd`` schema.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gradkit.render._shared import diagnoses_for, first_line, where
from gradkit.render.untrusted import prepared, xml_document, xml_text
from gradkit.report import Check, Report

ELEMENT = {"fail": "failure", "error": "error", "skipped": "skipped"}
#: characters XML 1.0 cannot hold are written as \xNN (as pytest's junitxml does)
_xml_text = xml_text


def _suite_name(report: Report) -> str:
    return f"gradkit {report.submission.path}"


def _classname(report: Report) -> str:
    stem = report.submission.path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return "gradkit." + (re.sub(r"[^\w-]", "_", stem) or "submission")


def render(report: Report) -> str:
    """The report as a JUnit XML document (``<testsuites>`` with one ``<testsuite>``).

    Text is escaped by the XML library; what XML 1.0 cannot hold is written visibly first, and
    the document is made safe to print last (``untrusted.xml_document``)."""
    report = prepared(report, "xml")
    counts = {status: sum(c.status == status for c in report.checks)
              for status in ("fail", "error", "skipped")}
    errors = counts["error"] + (1 if report.error else 0)
    tests = len(report.checks) + (1 if report.error else 0)
    time = f"{report.duration_seconds:.3f}"
    root = ET.Element("testsuites", name="gradkit", tests=str(tests),
                      failures=str(counts["fail"]), errors=str(errors), time=time)
    suite = ET.SubElement(root, "testsuite", name=_xml_text(_suite_name(report)),
                          tests=str(tests), failures=str(counts["fail"]), errors=str(errors),
                          skipped=str(counts["skipped"]), time=time)
    properties = ET.SubElement(suite, "properties")
    for name, value in [("score", f"{report.score:g}"), ("max_score", f"{report.max_score:g}"),
                        ("passed", str(report.passed).lower()),
                        ("submission", report.submission.path),
                        ("sha256", report.submission.sha256 or ""),
                        ("diagnoses", " ".join(d.code for d in report.diagnoses)),
                        ("gradkit_version", report.gradkit_version),
                        ("format_version", report.format_version)]:
        ET.SubElement(properties, "property", name=name, value=_xml_text(value))
    classname = _classname(report)
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname=classname, name=check.id)
        element = ELEMENT.get(check.status)
        if element is not None:
            outcome = ET.SubElement(case, element, type=check.status,
                                    message=_xml_text(first_line(check.message) or check.title))
            outcome.text = _xml_text(_details(report, check))
    if report.error:
        case = ET.SubElement(suite, "testcase", classname=classname, name="gradkit")
        error = ET.SubElement(case, "error", type="gradkit",
                              message=_xml_text(first_line(report.error)))
        error.text = _xml_text(report.error)
    if report.output.stdout:
        ET.SubElement(suite, "system-out").text = _xml_text(report.output.stdout)
    if report.output.stderr:
        ET.SubElement(suite, "system-err").text = _xml_text(report.output.stderr)
    ET.indent(root)
    return xml_document('<?xml version="1.0" encoding="utf-8"?>\n'
                        + ET.tostring(root, encoding="unicode"))


def _details(report: Report, check: Check) -> str:
    lines = [f"{check.title}: {check.points:g} / {check.max_points:g} points"
             + (f", {check.cases_passed} of {check.cases_run} cases passed"
                if check.cases_run else "")]
    if check.message:
        lines.append(check.message)
    if check.location is not None:
        lines.append(f"at {where(check.location)}"
                     + (f": {check.location.code}" if check.location.code else ""))
    for d in diagnoses_for(report, check):
        at = f" at {where(d.location)}" if d.location else ""
        lines.append(f"{d.code} {d.title}{at}: {d.message} (more: gradkit explain {d.code})")
    if check.hint:
        lines.append(f"try: {check.hint}")
    return "\n".join(lines)
