"""The report as JSON: exactly the pydantic model, with its computed score and verdict.

Untrusted strings stay data: the serialiser escapes what JSON must, and ``json_document`` writes
the characters a terminal or the Actions runner would act on as ``\\u`` escapes (same data).
"""

from __future__ import annotations

from gradkit.render.untrusted import json_document, prepared
from gradkit.report import Report


def render(report: Report) -> str:
    return json_document(prepared(report, "json").model_dump_json(indent=2))
