"""The terminal view: diagnoses first, then a table of checks, then what to look at.

``rows`` and ``headline`` are the content as plain data (testable without a terminal),
``renderables`` the view as rich objects, and ``render`` writes it. Colour follows rich's detection
(NO_COLOR, a pipe) unless forced. Text from the submission never reaches the terminal as itself:
see ``gradkit.render.untrusted``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradkit.render._shared import diagnoses_for, where
from gradkit.render.untrusted import command_safe, prepared, terminal_text
from gradkit.report import Check, Diagnosis, Report

MARK = {"pass": ("PASS", "green"), "fail": ("FAIL", "red"), "error": ("ERROR", "red"),
        "skipped": ("SKIP", "yellow")}


@dataclass(frozen=True)
class Row:
    check_id: str
    mark: str
    colour: str
    points: str
    title: str
    look_at: str


def _look_at(check: Check) -> str:
    """One line from the check's numbers: how many cases are wrong, and the worst element."""
    if check.status in ("pass", "skipped"):
        return ""
    worst = next((c for c in check.comparisons if not c.passed), None)
    wrong = check.cases_run - check.cases_passed
    head = f"wrong in {wrong} of {check.cases_run} case(s)" if check.cases_run else ""
    if worst is None or not head:
        text = check.message
    elif worst.problem == "values" and worst.actual_at_worst is not None:
        index = tuple(worst.worst_index or ())
        text = (f"{head} · {worst.case}: {worst.quantity} at {index} is "
                f"{worst.actual_at_worst:.4g}, expected {worst.expected_at_worst:.4g}")
    else:
        text = f"{head} · {worst.case}: {worst.message}"
    return text if len(text) <= 200 else text[:197] + "..."


def rows(report: Report) -> list[Row]:
    return [Row(c.id, *MARK[c.status], f"{round(c.points, 2):g}/{c.max_points:g}", c.title, _look_at(c))
            for c in report.checks]


def headline(report: Report) -> tuple[str, str]:
    if report.error:
        return "GRADKIT ERROR", "magenta"
    verdict = "PASSED" if report.passed else "FAILED"
    return f"{verdict} · score {report.score:g} / {report.max_score:g}", \
        "green" if report.passed else "red"


def _evidence(d: Diagnosis) -> str:
    """The numbers behind a diagnosis, in a few words ("" when there are none)."""
    parts = []
    if d.evidence.factor is not None:
        parts.append(f"factor {d.evidence.factor:.6g}")
    if d.evidence.cases:
        parts.append(f"seen in {len(d.evidence.cases)} case(s)")
    return " · ".join(parts) + " · " if parts else ""


def render(report: Report, console=None) -> None:
    """Write the terminal view to ``console`` (stdout by default).

    Every text from the report is a ``rich.text.Text`` (never markup), untrusted text through
    ``untrusted.terminal_text``; the whole view is rendered first and written through
    ``untrusted.command_safe``, so no line of it is a GitHub Actions workflow command.
    """
    from rich.console import Console

    console = console or Console(highlight=False)
    with console.capture() as captured:
        for renderable in renderables(report):
            console.print(renderable)
    console.file.write(command_safe(captured.get()))
    console.file.flush()


def renderables(report: Report) -> list:
    """The view as rich renderables, in order (``render`` prints them)."""
    from rich.table import Table
    from rich.text import Text

    report = prepared(report, "terminal")
    out: list = []
    sub = report.submission
    out.append(Text.assemble((f"gradkit {report.gradkit_version}", "bold"), " · ",
                             terminal_text(sub.path),
                             f" · sha256 {sub.sha256[:12]}" if sub.sha256 else ""))
    if report.error:
        out.append(terminal_text(report.error, "magenta", multiline=True))
    for d in report.diagnoses:
        colour = {"error": "red", "warning": "yellow", "info": "cyan"}[d.severity]
        out.append(Text())
        out.append(Text.assemble((d.code, f"bold {colour}"), " ", terminal_text(d.title, "bold")))
        out.append(Text.assemble("  ", terminal_text(d.message)))
        if d.location is not None:
            line = Text.assemble("  at ", terminal_text(where(d.location)))
            if d.location.code:
                line.append_text(Text.assemble(": ", terminal_text(d.location.code, "cyan")))
            out.append(line)
        out.append(Text.assemble("  ", terminal_text(_evidence(d), "dim"),
                                 (f"more: gradkit explain {d.code}", "dim")))
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name in ("check", "", "points", "what to look at"):
        table.add_column(name, overflow="fold")
    for row in rows(report):
        table.add_row(Text(row.check_id), Text(row.mark, style=row.colour), Text(row.points),
                      terminal_text(row.look_at) if row.look_at else
                      terminal_text(row.title, "dim"))
    out += [Text(), table]
    failing = [c for c in report.checks if c.status in ("fail", "error")]
    for c in failing:
        if not (c.hint or c.location) or (c.location is None and diagnoses_for(report, c)):
            continue  # a diagnosis above already says what to try
        line = Text.assemble((c.id, "bold"), ": ")
        if c.location is not None:
            line.append_text(Text.assemble("at ", terminal_text(where(c.location)), " "))
        line.append_text(Text.assemble(("try:", "dim"), " ", terminal_text(c.hint)))
        out.append(line)
    found = [i for i in report.intermediates if i.status != "not_found"]
    if found:
        line = Text("intermediates: ")
        for n, i in enumerate(report.intermediates):
            mark = {"match": ("ok", "green"), "mismatch": ("wrong", "red"),
                    "not_found": ("not found", "dim")}[i.status]
            alias = f" (as {i.found_as})" if i.found_as and i.found_as != i.name else ""
            line.append_text(Text.assemble(" · " if n else "", terminal_text(i.name),
                                           terminal_text(alias), " ", mark))
        out += [Text(), line]
    if report.output.stdout.strip() or report.output.stderr.strip():
        out.append(Text(f"the submission printed {len(report.output.stdout)} characters to "
                        f"stdout and {len(report.output.stderr)} to stderr (see --format json)",
                        style="dim"))
    text, colour = headline(report)
    for gap in report.isolation.exposed:  # said plainly: the run was less confined than usual
        out.append(Text.assemble(("less confined than the default:", "bold yellow"), " ",
                                 terminal_text(gap)))
    out.append(Text())
    out.append(Text.assemble((text, f"bold {colour}"),
                             f" · {report.duration_seconds:.1f} s · {len(report.cases)} cases"
                             " · isolation: ",
                             terminal_text(report.isolation.user or report.isolation.process)))
    return out
