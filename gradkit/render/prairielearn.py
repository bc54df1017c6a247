"""The report as PrairieLearn's external grader ``results.json``.

PrairieLearn's documented fields ("External Grading", "Grading results"): ``gradable``,
``score`` (0 to 1), ``message``, ``output``, ``images`` (``{"label", "url"}`` with data URLs),
``format_errors`` when not gradable, and ``tests``, each with ``name``, ``description``,
``points``, ``max_points``, ``message``, ``output`` and ``images``. The whole file must stay under
1 MB.

One test per check, with the check's points; a wrong gradient's test carries its heat maps and
the training test its loss curve and predictions, as PNG data URLs drawn from the report's
numbers. A submission that could not be graded at all (gradkit's own failure, or a file that
could not be read, parsed or loaded) is ``gradable: false``: no points, and the student keeps the
attempt. Everything comes from the report; nothing here computes a score.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from gradkit.render._shared import diagnoses_for, first_line, where
from gradkit.report import Check, Report

#: PrairieLearn's limit on results.json
MAX_BYTES = 1_000_000
#: the submission's own printing in the output, at most this many characters
MAX_PRINTED = 4000


def render(report: Report, *, images: bool = True) -> str:
    """``results.json`` text for this report (safe to print: ``untrusted.json_document``:
    ``##[`` in a message was a workflow command under GitHub Actions)."""
    from gradkit.render.untrusted import json_document

    return json_document(json.dumps(results(report, images=images), indent=1))


def results(report: Report, *, images: bool = True) -> dict[str, Any]:
    """``results.json`` as a dict; images are dropped (and the output says so) if they would
    take the file over ``MAX_BYTES``. Starts from ``untrusted.prepared``: the submission's
    control characters are shown as escapes in PrairieLearn's text, never passed on as they are."""
    from gradkit.render.untrusted import prepared

    report = prepared(report, "prairielearn")
    out = _results(report, images)
    if images and len(json.dumps(out, indent=1).encode()) > MAX_BYTES:
        out = _results(report, False)
        out["output"] += "\n\n(The plots were left out: with them the results exceed " \
                         "PrairieLearn's 1 MB limit.)"
    return out


def gradable(report: Report) -> bool:
    """False when nothing of the submission could be graded: gradkit failed, or the file could
    not be read, parsed or loaded (the load check errored)."""
    if report.error is not None:
        return False
    load = next((c for c in report.checks if c.id == "load"), None)
    return load is None or load.status != "error"


def _results(report: Report, images: bool) -> dict[str, Any]:
    if not gradable(report):
        load = next((c for c in report.checks if c.id == "load"), None)
        reason = "gradkit itself failed on this submission; this is not a verdict on your " \
            "code" if report.error else (load.message if load else "it could not be loaded")
        return {"gradable": False, "format_errors": [reason],
                "message": "Your submission could not be graded: " + first_line(reason),
                "output": _output(report)}
    pictures = _pictures(report) if images else {}
    return {
        "gradable": True,
        "score": round(report.score / report.max_score, 6) if report.max_score else 0.0,
        "message": _verdict(report),
        "output": _output(report),
        "tests": [_test(report, check, pictures.get(check.id, [])) for check in report.checks],
    }


def _verdict(report: Report) -> str:
    verdict = "every check passed" if report.passed else "some checks failed"
    return f"gradkit: {verdict} · {report.score:g} / {report.max_score:g} points"


def _test(report: Report, check: Check, images: list[dict[str, str]]) -> dict[str, Any]:
    lines = []
    if check.message:
        lines.append(check.message)
    if check.location is not None:
        lines.append(f"Where: {where(check.location)}"
                     + (f": {check.location.code}" if check.location.code else ""))
    for d in diagnoses_for(report, check):
        lines.append(f"{d.code} {d.title}: {d.message}"
                     + (f" (at {where(d.location)})" if d.location else ""))
    if check.status in ("fail", "error") and check.hint:
        lines.append(f"Try: {check.hint}")
    test: dict[str, Any] = {
        "name": check.id, "description": check.title,
        "points": check.points, "max_points": check.max_points,
        "message": "\n".join(lines) if lines else "passed",
        "output": _comparisons(check),
    }
    if images:
        test["images"] = images
    return test


def _comparisons(check: Check, limit: int = 12) -> str:
    """The failed comparisons' numbers, one line each (the first ``limit``)."""
    failed = [c for c in check.comparisons if not c.passed]
    lines = [f"{check.cases_passed} of {check.cases_run} case(s) passed"] if check.cases_run \
        else []
    for c in failed[:limit]:
        step = f" step {c.step}" if c.step else ""
        numbers = ""
        if c.worst_index is not None and c.actual_at_worst is not None:
            numbers = (f": at {tuple(c.worst_index)} {c.actual_at_worst:.6g}, expected "
                       f"{c.expected_at_worst:.6g}")
        tolerance = f" (atol {c.tolerance.atol:g}, rtol {c.tolerance.rtol:g})" if c.tolerance \
            else ""
        lines.append(f"{c.case}{step}: {c.quantity}{numbers or ': ' + c.message}{tolerance}")
    if len(failed) > limit:
        lines.append(f"... and {len(failed) - limit} more comparison(s) outside tolerance")
    return "\n".join(lines)


def _output(report: Report) -> str:
    parts = [_verdict(report) if gradable(report) else "gradkit could not grade this "
             "submission.", f"Graded {report.submission.path} on {len(report.cases)} cases with "
             f"gradkit {report.gradkit_version}."]
    for d in report.diagnoses:
        at = f"\n  at {where(d.location)}" + (f": {d.location.code}" if d.location and
                                              d.location.code else "") if d.location else ""
        parts.append(f"{d.code} {d.title}\n  {d.message}{at}")
    printed = (report.output.stdout + report.output.stderr).strip()
    if printed:
        parts.append("Your code printed:\n" + printed[:MAX_PRINTED]
                     + ("\n..." if len(printed) > MAX_PRINTED else ""))
    return "\n\n".join(parts)


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _pictures(report: Report) -> dict[str, list[dict[str, str]]]:
    """Check id -> its images, drawn from ``report.plots``."""
    if not report.plots.gradients and report.plots.training is None:
        return {}
    from gradkit.render import plots  # matplotlib: only when there is something to draw

    out: dict[str, list[dict[str, str]]] = {}
    for picture in report.plots.gradients:
        where_step = f", step {picture.step}" if picture.step is not None else ""
        out.setdefault(f"gradient.{picture.parameter}", []).append({
            "label": f"{picture.quantity} in case {picture.case}{where_step}: expected, yours, "
                     "and the difference (the outlined entry differs most)",
            "url": _png(plots.gradient_heatmaps(picture, fmt="png"))})  # type: ignore[arg-type]
    curve = report.plots.training
    if curve is not None:
        out["training"] = [
            {"label": f"Loss during the training loop ({curve.loss}): yours and the "
                      "reference's",
             "url": _png(plots.loss_curves(curve, fmt="png"))},  # type: ignore[arg-type]
            {"label": "Predictions after training, against the labels",
             "url": _png(plots.predictions(curve, fmt="png"))}]  # type: ignore[arg-type]
    return out

