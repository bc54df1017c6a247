"""The report as JSON: exactly the pydantic model, with its computed score and verdict."""

from __future__ import annotations

from gradkit.report import Report


def render(report: Report) -> str:
    return report.model_dump_json(indent=2)
