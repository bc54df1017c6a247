"""The visual views: one student's report, and a class summary, as self-contained HTML pages.

``report_view`` and ``summary_view`` pick what to show from a report (or a batch's rows) as plain
data; the jinja2 templates in ``templates/`` lay it out, with autoescaping on, so every string
that came from a submission (its source, its printed output, its file name, messages quoting it)
is text, never markup. The only markup not escaped is the SVG that ``gradkit.render.plots`` draws
from numbers. Each page carries a Content-Security-Policy that allows no request at all and no
script but the summary's own sort script (by its hash): a viewer of a page needs no network.

Nothing here computes a verdict or a score: the verdict, points and statuses are the report's.
jinja2 and matplotlib are imported with this module, which only an HTML view imports.
"""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Literal, Optional, Sequence

import jinja2
from markupsafe import Markup

from gradkit.loader import python_lines
from gradkit.render import plots, untrusted
from gradkit.render._shared import diagnoses_for, where
from gradkit.report import (Check, Comparison, Diagnosis, Report, SourceLocation,
                            TrainingCurve)

if TYPE_CHECKING:
    from gradkit.batch import Row, Summary
    from gradkit.loader import Submission

#: lines of the student's source shown on each side of a named line
CONTEXT_LINES = 3
#: the submission's printing shown on the page, at most this many characters of each stream
MAX_PRINTED = 20000

StepStatus = Literal["right", "wrong", "partial", "unknown"]
STATUS_WORDS = {"right": "right", "wrong": "wrong", "partial": "right where held",
                "unknown": "not found"}
#: report.intermediates' statuses and the localisation's (Diagnosis.evidence.details["steps"])
_FROM_INTERMEDIATES = {"match": "right", "mismatch": "wrong", "not_found": "unknown"}
_FROM_LOCALISATION = {"right": "right", "wrong": "wrong", "right where held": "partial",
                      "not held": "unknown"}
_FROM_CHECK = {"pass": "right", "fail": "wrong", "error": "wrong", "skipped": "unknown"}
MARK = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skipped": "SKIP"}

def _shown(value: object) -> object:
    """Every value a template prints, before autoescaping: a string with its hazardous
    characters (controls, bidi overrides, invisible ones: ``untrusted.is_hazard``) written as
    visible escapes (``\x1b``, ``\u202e``), newlines and tabs kept for the printed output and
    source in ``<pre>``; markup gradkit made (``Markup``) as it is. A submission's text can then
    neither hide nor reorder what the page shows."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return untrusted.visible(value, keep="\n\t")
    return value


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gradkit.render", "templates"),
    autoescape=True,  # every template, whatever its file name
    finalize=_shown,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)


# -- one student's report, as data -------------------------------------------------------------

@dataclass(frozen=True)
class SourceLine:
    number: str  # as the student sees it: the file's line, or "cell N:M" in a notebook
    text: str
    named: bool


@dataclass(frozen=True)
class DiagnosisView:
    diagnosis: Diagnosis
    where: str
    excerpt: list[SourceLine]
    evidence: list[str]


@dataclass(frozen=True)
class ChainStep:
    """One step of the backward pass as the report judged it."""

    name: str
    kind: Literal["forward", "gradient", "update"]
    status: StepStatus
    found_as: Optional[str] = None
    where: str = ""
    first_wrong: bool = False
    #: right itself, yet its value is off the reference's: it was handed an earlier mistake
    #: (the localisation's status, and the intermediate's, or the gradient check's, for an update)
    inherited: bool = False

    @property
    def words(self) -> str:
        return STATUS_WORDS[self.status]


@dataclass(frozen=True)
class Chain:
    steps: list[ChainStep]
    #: where the statuses come from: the localisation (each step from the student's own
    #: upstream values) or the intermediates alone (each against the reference)
    source: Literal["localisation", "intermediates"]

    def of(self, kind: str) -> list[ChainStep]:
        return [s for s in self.steps if s.kind == kind]

    @property
    def first_wrong(self) -> Optional[ChainStep]:
        return next((s for s in self.steps if s.first_wrong), None)


@dataclass(frozen=True)
class CheckView:
    check: Check
    mark: str
    look_at: str
    comparisons: list[Comparison]
    failed_comparisons: int


@dataclass(frozen=True)
class Picture:
    title: str
    caption: str
    svg: Markup
    name: str
    #: heat maps, drawn by the page as grids of coloured cells (instead of ``svg``)
    panels: list["plots.HeatPanel"] = field(default_factory=list)


@dataclass
class ReportView:
    report: Report
    verdict: str
    verdict_class: str
    diagnoses: list[DiagnosisView]
    chain: Optional[Chain]
    gradients: list[Picture]
    training: list[Picture]
    training_check: Optional[Check]
    checks: list[CheckView]
    stdout: str
    stderr: str
    printed_cut: bool
    notes: list[str] = field(default_factory=list)


def _excerpt(location: Optional[SourceLocation], submission: Optional["Submission"]
             ) -> list[SourceLine]:
    """The student's own lines around a named line, numbered as they would find them."""
    if location is None or location.line is None or submission is None:
        return []
    lines = python_lines(submission.source)  # numbered as Python and the report number them
    if not 1 <= location.line <= len(lines):
        return []
    first = max(1, location.line - CONTEXT_LINES)
    last = min(len(lines), location.line + CONTEXT_LINES)
    out = []
    for number in range(first, last + 1):
        origin = submission.origins.get(number)
        label = f"{origin.cell}:{origin.line}" if origin is not None else str(number)
        out.append(SourceLine(label, lines[number - 1], number == location.line))
    return out


def _evidence(d: Diagnosis) -> list[str]:
    out = []
    if d.evidence.factor is not None:
        out.append(f"yours = {d.evidence.factor:.6g} × expected")
    if d.evidence.residual is not None:
        out.append(f"fit residual {d.evidence.residual:.2g}")
    if d.evidence.cases:
        shown = ", ".join(d.evidence.cases[:4]) + (" ..." if len(d.evidence.cases) > 4 else "")
        out.append(f"seen in {len(d.evidence.cases)} case(s): {shown}")
    return out


def chain(report: Report) -> Optional[Chain]:
    """The backward pass as the report's own steps: the localisation's statuses when a diagnosis
    carries them (``evidence.details["steps"]``), else the intermediates' and the gradient
    checks'. The first wrong step is the localising diagnosis's (``details["step"]``), else the
    first step whose status is wrong."""
    found = {i.name: i for i in report.intermediates}
    localised: dict[str, str] = {}
    named_first: Optional[str] = None
    for d in report.diagnoses:
        steps = d.evidence.details.get("steps")
        if isinstance(steps, dict) and not localised:
            localised = {str(k): str(v) for k, v in steps.items()}
        step = d.evidence.details.get("step")
        if isinstance(step, str) and named_first is None:
            named_first = step
    parameters = [c.id.split(".", 1)[1] for c in report.checks if c.group == "gradient"]
    if localised:
        order = list(localised)
        status = {n: _FROM_LOCALISATION.get(s, "unknown") for n, s in localised.items()}
        source: Literal["localisation", "intermediates"] = "localisation"
    else:
        if not found and not parameters:
            return None
        order = list(found) + [f"update.{p}" for p in parameters]
        status = {n: _FROM_INTERMEDIATES[i.status] for n, i in found.items()}
        status.update({f"update.{c.id.split('.', 1)[1]}": _FROM_CHECK[c.status]
                       for c in report.checks if c.group == "gradient"})
        source = "intermediates"
    if not any(n in found for n in order) and source == "intermediates" and \
            all(status.get(n) == "unknown" for n in order):
        return None
    first = named_first if named_first in order and status.get(named_first) == "wrong" else \
        next((n for n in order if status.get(n) == "wrong"), None)
    # against the reference: each kept gradient's value, each update's gradient check
    off = {n for n, i in found.items() if i.status == "mismatch"} | \
        {f"update.{c.id.split('.', 1)[1]}" for c in report.checks
         if c.group == "gradient" and c.status in ("fail", "error")}
    steps = []
    for name in order:
        kind: Literal["forward", "gradient", "update"] = \
            "update" if name.startswith("update.") else \
            "gradient" if name in found else "forward"
        held = found.get(name)
        step_status = status.get(name, "unknown")
        steps.append(ChainStep(
            name=name, kind=kind, status=step_status,  # type: ignore[arg-type]
            found_as=held.found_as if held is not None else None,
            where=_line_words(held.location) if held is not None else "",
            first_wrong=name == first,
            inherited=source == "localisation" and step_status in ("right", "partial")
            and name in off))
    return Chain(steps, source)


def _line_words(location: Optional[SourceLocation]) -> str:
    """"line N", or "cell N, line M" in a notebook."""
    if location is None or location.line is None:
        return ""
    if location.cell is not None:
        return f"cell {location.cell}, line {location.cell_line}"
    return f"line {location.line}"


def _look_at(check: Check) -> str:
    from gradkit.render.terminal import _look_at as terminal_look_at

    return terminal_look_at(check)


def _picture_caption_gradient(p) -> str:
    row, column = p.worst_index
    step = f", step {p.step}" if p.step is not None else ""
    return (f"case {p.case}{step}: the largest difference is at ({row}, {column}), yours "
            f"{p.actual[row][column]:.6g}, expected {p.expected[row][column]:.6g} (allowed: "
            f"atol {p.tolerance.atol:g} + rtol {p.tolerance.rtol:g} × |expected|, "
            f"{p.tolerance.dtype})")


def _not_numbers(what: str, where: list[str], of: int) -> str:
    """"; your loss is not a number (NaN or infinite) at step 900, step 1000", or ""."""
    if not where:
        return ""
    if len(where) == of:
        return f"; {what} is not a number (NaN or infinite) anywhere"
    shown = ", ".join(where[:6]) + (f" and {len(where) - 6} more" if len(where) > 6 else "")
    return f"; {what} is not a number (NaN or infinite) at {shown}"


def _training_pictures(curve: Optional[TrainingCurve]) -> list[Picture]:
    """The loss curves and the final predictions, captioned with where a value is no number."""
    if curve is None:
        return []
    if curve.outputs == 1:
        rows = f"P on each row after step {curve.steps[-1]}, against its label Y"
        at = [f"row {i}" for i, v in enumerate(curve.predictions) if v is None]
    else:
        rows = (f"P on each output of each row (row.output) after step {curve.steps[-1]}, "
                "against its label Y")
        at = [f"row {i // curve.outputs} output {i % curve.outputs}"
              for i, v in enumerate(curve.predictions) if v is None]
    steps = [f"step {s}" for s, v in zip(curve.steps, curve.student_loss) if v is None]
    return [
        Picture("Loss during the training loop",
                f"case {curve.case}: {curve.loss} on the training data at steps "
                f"{curve.steps[0]} to {curve.steps[-1]}, with your function and with the "
                "reference" + _not_numbers("your loss", steps, len(curve.steps)),
                Markup(plots.loss_curves(curve)), "loss"),
        Picture("Predictions after training",
                rows + _not_numbers("your P", at, len(curve.predictions)),
                Markup(plots.predictions(curve)), "predictions")]


def report_view(report: Report, submission: Optional["Submission"] = None) -> ReportView:
    """What the page shows, read from the report. ``submission``, when given and the same file
    the report graded (same sha256), supplies the source lines around each named line."""
    if submission is not None and report.submission.sha256 not in (None, submission.sha256):
        submission = None  # another version of the file: its lines would be misleading
    if report.error:
        verdict, verdict_class = "gradkit could not grade this submission", "error"
    elif report.passed:
        verdict, verdict_class = "PASSED", "pass"
    else:
        verdict, verdict_class = "FAILED", "fail"
    diagnoses = [DiagnosisView(d, where(d.location), _excerpt(d.location, submission),
                               _evidence(d)) for d in report.diagnoses]
    gradients = [Picture(f"{p.quantity}: expected, yours, and the difference",
                         _picture_caption_gradient(p), Markup(""), f"gradient-{p.parameter}",
                         panels=plots.heat_panels(p))
                 for p in report.plots.gradients]
    training = _training_pictures(report.plots.training)
    training_check = next((c for c in report.checks if c.group == "training"), None)
    checks = [CheckView(c, MARK[c.status], _look_at(c), c.comparisons,
                        sum(not x.passed for x in c.comparisons)) for c in report.checks]
    stdout, stderr = report.output.stdout, report.output.stderr
    cut = len(stdout) > MAX_PRINTED or len(stderr) > MAX_PRINTED
    return ReportView(report=report, verdict=verdict, verdict_class=verdict_class,
                      diagnoses=diagnoses, chain=chain(report), gradients=gradients,
                      training=training, training_check=training_check, checks=checks,
                      stdout=stdout[:MAX_PRINTED], stderr=stderr[:MAX_PRINTED], printed_cut=cut)


# -- the class summary, as data ----------------------------------------------------------------

@dataclass(frozen=True)
class MistakeView:
    code: str
    title: str
    students: list[str]


@dataclass
class SummaryView:
    summary: "Summary"
    rows: Sequence["Row"]
    pictures: list[Picture]
    mistakes: list[MistakeView]
    failing: list[tuple[str, int]]
    gradebook: str
    reports: str
    #: student -> their graded file, as a path from the folder all the class's files are in
    files: dict[str, str] = field(default_factory=dict)

    @property
    def gradebook_href(self) -> str:
        """The gradebook's relative link (a "#" or "?" in its path is part of the name)."""
        return urllib.parse.quote(self.gradebook)


def report_link(reports: str, student: str) -> str:
    """The relative link to a student's HTML report: the name quoted whole (a "/" or ":" in it
    is only a character of the file name, never a path step or a scheme)."""
    return f"{urllib.parse.quote(reports)}/{urllib.parse.quote(student, safe='')}.html"


def summary_view(rows: Sequence["Row"], summary: "Summary", *, gradebook: str = "gradebook.csv",
                 reports: str = "reports") -> SummaryView:
    """What the class summary shows, read from the gradebook's rows and their summary."""
    failing = Counter(c for r in rows for c in dict.fromkeys(r.failing))
    order = [c for r in rows for c in r.failing]
    failing_sorted = sorted(failing.items(), key=lambda kv: (-kv[1], order.index(kv[0])))
    by_code: dict[str, list[str]] = {}
    titles: dict[str, str] = {}
    for r in rows:
        for code in dict.fromkeys(r.diagnoses):
            by_code.setdefault(code, []).append(r.student)
        titles.update(r.titles)
    mistakes = [MistakeView(code, titles.get(code, ""), students) for code, students in
                sorted(by_code.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    pictures = []
    graded = [r for r in rows if r.max]
    if graded:
        pictures.append(Picture(
            "Scores", f"{len(graded)} graded submission(s); mean {summary.mean:.1f}, median "
            f"{summary.median:.1f}" if summary.mean is not None else "",
            Markup(plots.score_histogram([r.score for r in graded], summary.max_score)),
            "scores"))
    if failing_sorted:
        pictures.append(Picture(
            "How often each check failed", "students whose submission failed each check",
            Markup(plots.check_failures(failing_sorted, len(rows))), "checks"))
    return SummaryView(summary=summary, rows=rows, pictures=pictures, mistakes=mistakes,
                       failing=failing_sorted, gradebook=gradebook, reports=reports,
                       files=_files(rows))


def _files(rows: Sequence["Row"]) -> dict[str, str]:
    """Each student's graded file from the class's folder (their common folder): the part
    that tells them apart, not the same long prefix on every row."""
    paths = {r.student: PurePath(r.submission) for r in rows if r.submission}
    if not paths:
        return {}
    try:
        common = PurePath(os.path.commonpath([str(p) for p in paths.values()]))
    except ValueError:  # relative and absolute paths mixed
        return {student: str(path) for student, path in paths.items()}
    return {student: str(path.relative_to(common)) if path != common else path.name
            for student, path in paths.items()}


# -- pages -------------------------------------------------------------------------------------

#: the class summary's only script: sorts the gradebook by a clicked column
SORT_SCRIPT = Markup(_TEMPLATES.loader.get_source(  # type: ignore[union-attr]
    _TEMPLATES, "sort.js")[0])


def _script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def policy(script: Optional[str] = None) -> str:
    """The Content-Security-Policy of a page: nothing fetched, no script but ``script``."""
    scripts = _script_hash(script) if script else "'none'"
    return ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            f"script-src {scripts}; base-uri 'none'; form-action 'none'")


def render(report: Report, submission: Optional["Submission"] = None) -> str:
    """The report as one self-contained HTML page."""
    return _TEMPLATES.get_template("report.html.j2").render(
        view=report_view(report, submission), standalone=True, csp=policy())


def fragment(report: Report, submission: Optional["Submission"] = None) -> str:
    """The report as an HTML fragment (its styles scoped to it), for a page that embeds it,
    such as Gradescope's ``output_format: "html"``."""
    return _TEMPLATES.get_template("report.html.j2").render(
        view=report_view(report, submission), standalone=False, csp="")


def render_summary(rows: Sequence["Row"], summary: "Summary", *,
                   gradebook: str = "gradebook.csv", reports: str = "reports",
                   pages: Optional[set[str]] = None) -> str:
    """The class summary as one self-contained HTML page; links are relative to its folder.
    ``pages``: the students whose report page exists (all, when None)."""
    view = summary_view(rows, summary, gradebook=gradebook, reports=reports)

    def link(student: str) -> Optional[str]:
        return report_link(reports, student) if pages is None or student in pages else None

    return _TEMPLATES.get_template("summary.html.j2").render(
        view=view, link=link, script=SORT_SCRIPT, csp=policy(SORT_SCRIPT), standalone=True)


def write_report(report: Report, path: Path, submission: Optional["Submission"] = None) -> None:
    path.write_text(render(report, submission), encoding="utf-8")
