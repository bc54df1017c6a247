"""GitHub Actions: error annotations at the lines a report names, and a job summary in markdown.

``annotations`` picks what to annotate (data), ``commands`` writes them as workflow commands
(``::error file=...,line=...,title=...::message``), ``summary`` is the markdown for
``$GITHUB_STEP_SUMMARY``, and ``emit`` does both; ``gradkit check`` calls it when
``GITHUB_ACTIONS=true``. Diagnoses are annotated at their own location; failed checks at theirs
(until diagnoses name a line, a check whose code raised names the line that raised); anything
without a line becomes one annotation on the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, TextIO

from gradkit.render._shared import diagnoses_for, failing, first_line, where
from gradkit.render.untrusted import (actions_data, actions_property, markdown_code,
                                      markdown_text, prepared)
from gradkit.report import Report, SourceLocation

#: GitHub shows at most 10 errors and 10 warnings per step; keep under that
MAX_ANNOTATIONS = 10
LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


@dataclass(frozen=True)
class Annotation:
    level: str  # "error", "warning" or "notice"
    file: str
    line: Optional[int]
    title: str
    message: str


def _file(location_file: str, workspace: Optional[str]) -> str:
    """The path GitHub expects: relative to the repository's root when it can be."""
    path = Path(location_file)
    if path.is_absolute() and workspace:
        try:
            return path.relative_to(workspace).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def _line(location: Optional[SourceLocation]) -> Optional[int]:
    # a notebook's line numbers count in its joined source, not in the .ipynb file GitHub shows
    if location is None or location.cell is not None:
        return None
    return location.line


def _cell_words(location: Optional[SourceLocation]) -> str:
    if location is None or location.cell is None:
        return ""
    return f" (cell {location.cell}, line {location.cell_line})"


def annotations(report: Report, workspace: Optional[str] = None) -> list[Annotation]:
    """What to annotate: diagnoses, then failed checks; one file annotation for the rest.

    The annotations' text is the report's (untrusted parts with their controls made visible);
    ``command`` escapes it."""
    report = prepared(report, "actions")
    path = _file(report.submission.path, workspace)
    found: list[Annotation] = []
    if report.error:
        found.append(Annotation("error", path, None, "gradkit could not grade this file",
                                first_line(report.error)))
    covered: set[str] = set()
    for d in report.diagnoses:
        file = _file(d.location.file, workspace) if d.location else path
        found.append(Annotation(LEVEL[d.severity], file, _line(d.location),
                                f"{d.code} {d.title}{_cell_words(d.location)}",
                                f"{d.message} (more: gradkit explain {d.code})"))
    located: dict[tuple[str, Optional[int], str], list[str]] = {}
    for check in failing(report):
        if check.location is None:
            if diagnoses_for(report, check):
                covered.add(check.id)  # its diagnosis says it better
            continue
        covered.add(check.id)
        key = (_file(check.location.file, workspace), _line(check.location),
               first_line(check.message, 1000) + _cell_words(check.location))
        located.setdefault(key, []).append(check.id)
    for (file, line, message), ids in located.items():
        found.append(Annotation("error", file, line, f"gradkit: {', '.join(ids)} failed", message))
    rest = [c for c in failing(report) if c.id not in covered]
    if rest:
        found.append(Annotation(
            "error", path, None,
            f"gradkit: {report.score:g} / {report.max_score:g}, "
            f"{len(rest)} check(s) failed",
            "; ".join(f"{c.id}: {first_line(c.message, 200)}" for c in rest)))
    return _unique(found)[:MAX_ANNOTATIONS]


def _unique(found: list[Annotation]) -> list[Annotation]:
    seen, out = set(), []
    for a in found:
        key = (a.level, a.file, a.line, a.message)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def command(annotation: Annotation) -> str:
    """One workflow command on one line, escaped as the Actions runner unescapes it (its
    properties' ``%``, CR, LF, ``:`` and ``,``; its data's ``%``, CR and LF)."""
    props = [f"file={actions_property(annotation.file)}"]
    if annotation.line:
        props.append(f"line={int(annotation.line)}")
    props.append(f"title={actions_property(annotation.title)}")
    return f"::{annotation.level} {','.join(props)}::{actions_data(annotation.message)}"


def commands(report: Report, workspace: Optional[str] = None) -> str:
    return "".join(command(a) + "\n" for a in annotations(report, workspace))


def summary(report: Report) -> str:
    """The job summary: verdict, score, diagnoses and a table of checks, in markdown. Text from
    the report is literal there: in code spans or escaped (``untrusted.markdown_*``)."""
    report = prepared(report, "markdown")
    name = markdown_code(report.submission.path)
    if report.error:
        return (f"### gradkit: could not grade {name}\n\n"
                f"gradkit itself failed: {markdown_code(first_line(report.error))}\n")
    mark = "✅" if report.passed else "❌"
    lines = [f"### {mark} gradkit: {name} · {report.score:g} / {report.max_score:g}", ""]
    for d in report.diagnoses:
        at = f" at {markdown_code(where(d.location))}" if d.location else ""
        lines.append(f"- **{d.code} {markdown_text(d.title)}**{at}: {markdown_text(d.message)}")
    if report.diagnoses:
        lines.append("")
    lines += ["| check | result | points | what to look at |", "| --- | --- | --- | --- |"]
    for c in report.checks:
        result = {"pass": "pass", "fail": "**fail**", "error": "**error**",
                  "skipped": "skipped"}[c.status]
        look = markdown_text(first_line(c.message, 200)) if c.status in ("fail", "error") else ""
        if look and c.location is not None:
            look += f" (at {markdown_code(where(c.location), in_table=True)})"
        lines.append(f"| {markdown_code(c.id, in_table=True)} | {result} | "
                     f"{c.points:g} / {c.max_points:g} | {look} |")
    return "\n".join(lines) + "\n"


def emit(report: Report, stream: TextIO, environ: Mapping[str, str] = os.environ) -> None:
    """Write annotations to ``stream`` and append the summary to ``$GITHUB_STEP_SUMMARY``."""
    stream.write(commands(report, environ.get("GITHUB_WORKSPACE")))
    stream.flush()
    target = environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(summary(report) + "\n")
