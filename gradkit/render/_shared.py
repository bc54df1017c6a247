"""What several views read the same way from a report: failing checks, and diagnoses per check.

Only selection, never scoring: every number comes from the report as it is.
"""

from __future__ import annotations

from typing import Optional

from gradkit.report import Check, Diagnosis, Report, SourceLocation

FAILED = ("fail", "error")


def failing(report: Report) -> list[Check]:
    return [c for c in report.checks if c.status in FAILED]


def _names(check: Check) -> set[str]:
    """How a diagnosis may name this check among its quantities."""
    names = {check.id, check.group}
    if check.group == "gradient":
        parameter = check.id.split(".", 1)[-1]
        names |= {f"dL/d{parameter}", f"dLd{parameter}"}
    elif check.group == "predict":
        names |= {"P", "neural_net_predict"}
    return names


def diagnoses_for(report: Report, check: Check) -> list[Diagnosis]:
    """The diagnoses that name this check (by id, group, or the gradient it grades)."""
    names = _names(check)
    return [d for d in report.diagnoses if names.intersection(d.quantities)]


def where(location: Optional[SourceLocation]) -> str:
    """``file:line``, or ``file (cell N, line M)`` in a notebook; empty without a location."""
    if location is None:
        return ""
    if location.cell is not None:
        return f"{location.file} (cell {location.cell}, line {location.cell_line})"
    return f"{location.file}:{location.line}" if location.line else location.file


def first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
