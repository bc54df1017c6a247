"""The terminal view: diagnoses first, then a table of checks, then what to look at.

``summary`` builds the content as plain data (testable without a terminal); ``render`` writes it
with rich. Colour follows rich's detection (NO_COLOR, a pipe) unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradkit.render._shared import diagnoses_for, where
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
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(highlight=False)
    sub = report.submission
    console.print(f"[bold]gradkit {report.gradkit_version}[/] · {escape(sub.path)}"
                  + (f" · sha256 {sub.sha256[:12]}" if sub.sha256 else ""))
    if report.error:
        console.print(f"[magenta]{escape(report.error)}[/]")
    for d in report.diagnoses:
        colour = {"error": "red", "warning": "yellow", "info": "cyan"}[d.severity]
        console.print()
        console.print(f"[bold {colour}]{d.code}[/] [bold]{escape(d.title)}[/]")
        console.print(f"  {escape(d.message)}")
        if d.location is not None:
            console.print(f"  at {escape(where(d.location))}"
                          + (f": [cyan]{escape(d.location.code)}[/]" if d.location.code else ""))
        console.print(f"  [dim]{escape(_evidence(d))}more: gradkit explain {d.code}[/]")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name in ("check", "", "points", "what to look at"):
        table.add_column(name, overflow="fold")
    for row in rows(report):
        table.add_row(row.check_id, f"[{row.colour}]{row.mark}[/]", row.points,
                      escape(row.look_at) or f"[dim]{escape(row.title)}[/]")
    console.print()
    console.print(table)
    failing = [c for c in report.checks if c.status in ("fail", "error")]
    for c in failing:
        if not (c.hint or c.location) or (c.location is None and diagnoses_for(report, c)):
            continue  # a diagnosis above already says what to try
        line = f"[bold]{c.id}[/]: "
        if c.location is not None:
            line += f"at {escape(where(c.location))} "
        console.print(line + f"[dim]try:[/] {escape(c.hint)}")
    found = [i for i in report.intermediates if i.status != "not_found"]
    if found:
        parts = []
        for i in report.intermediates:
            mark = {"match": "[green]ok[/]", "mismatch": "[red]wrong[/]",
                    "not_found": "[dim]not found[/]"}[i.status]
            alias = f" (as {i.found_as})" if i.found_as and i.found_as != i.name else ""
            parts.append(f"{i.name}{escape(alias)} {mark}")
        console.print()
        console.print("intermediates: " + " · ".join(parts))
    if report.output.stdout.strip() or report.output.stderr.strip():
        console.print(f"[dim]the submission printed {len(report.output.stdout)} characters to "
                      f"stdout and {len(report.output.stderr)} to stderr (see --format json)[/]")
    text, colour = headline(report)
    for gap in report.isolation.exposed:  # said plainly: the run was less confined than usual
        console.print(f"[bold yellow]less confined than the default:[/] {escape(gap)}")
    console.print()
    console.print(f"[bold {colour}]{text}[/] · {report.duration_seconds:.1f} s · "
                  f"{len(report.cases)} cases · isolation: {escape(report.isolation.user or report.isolation.process)}")
