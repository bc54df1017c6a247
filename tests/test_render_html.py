"""The visual views without a browser: what the pages hold, that submissions' text stays text,
that the numbers behind the pictures are right, and that the terminal never loads the libraries.

(tests/test_browser.py opens the same pages in Chromium.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from conftest import EXAMPLES, ROOT
from gradkit.api import check
from gradkit.cases import TRAINING_CHECKPOINTS, build_cases
from gradkit.expected import expect_step, expect_training
from gradkit.grading import TRAINING_TRACKING
from gradkit.loader import load_submission
from gradkit.render import html
from gradkit.report import (Check, Diagnosis, Evidence, IntermediateResult, Report,
                            SubmissionInfo)
from reference.assignment import NOTEBOOK

BUGGY = EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py"
MARKUP = ('</textarea><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
          '<a href="javascript:window.pwned = 3">x</a>')


@pytest.fixture(scope="module")
def reports(sandbox):
    return {"correct": check(EXAMPLES / "correct.py", sandbox=sandbox),
            "buggy": check(BUGGY, sandbox=sandbox)}


def hostile(report: Report) -> Report:
    """The report with a submission's text (path, printing, a quoted line, a message) made of
    markup, as a hostile submission could make them."""
    data = report.model_dump(mode="json")
    data["submission"]["path"] = MARKUP + ".py"
    data["output"] = {"stdout": MARKUP, "stderr": MARKUP, "truncated_bytes": 0}
    data["diagnoses"].append(Diagnosis(
        code="GK003", title="A made-up diagnosis", message=MARKUP, quantities=["P"],
        explanation=MARKUP).model_dump(mode="json"))
    data["checks"][0]["message"] = MARKUP
    return Report.model_validate(data)


def policy(page: str) -> str:
    """The page's Content-Security-Policy, as the browser reads the attribute."""
    import html as html_text

    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert found, "the page has no Content-Security-Policy"
    return html_text.unescape(found.group(1))


# -- the terminal stays as it was ----------------------------------------------------------

LOADED = ("import sys\nfrom gradkit.cli import main\ntry:\n    main(sys.argv[1:])\n"
          "except SystemExit:\n    pass\nprint('LOADED', [m for m in ('jinja2', 'matplotlib') "
          "if m in sys.modules], file=sys.stderr)\n")


@pytest.mark.parametrize("options, loaded", [
    ((), []), (("--format", "json"), []), (("--format", "gradescope"), []),
    (("--format", "html"), ["jinja2", "matplotlib"])])
def test_only_an_html_view_imports_jinja2_and_matplotlib(options, loaded, tmp_path):
    done = subprocess.run([sys.executable, "-c", LOADED, "check", str(EXAMPLES / "correct.py"),
                           *options], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert f"LOADED {loaded!r}" in done.stderr, done.stderr[-2000:]


# -- the page -------------------------------------------------------------------------------

def test_check_format_html_writes_one_self_contained_page(gradkit_cli, tmp_path):
    target = tmp_path / "report.html"
    result = gradkit_cli("check", BUGGY, "--format", "html", "--output", target)
    assert result.exit_code == 1
    page = target.read_text()
    assert result.stdout.strip() == page.strip()
    assert page.startswith("<!DOCTYPE html>")
    # nothing to fetch: no external URL, no script, and a policy that would refuse both
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<script" not in page
    assert "default-src 'none'" in policy(page) and "script-src 'none'" in policy(page)
    # the verdict, the diagnosis with the student's own line, the chain, the pictures
    assert 'data-verdict="fail"' in page and "45 / 100 points" in page
    assert '<div class="named"><span class="n">66</span><span class="t">    dLdA = dLdB</span>' \
        in page
    assert 'data-step="dLdA" data-status="wrong" data-first-wrong="true"' in page
    assert page.count('data-plot="gradient-') == 2 and page.count('class="panel heatmap"') == 6
    assert page.count("<svg") == 2  # the loss curves and the predictions


def test_the_page_is_the_same_for_the_same_report(reports):
    report = reports["buggy"]
    submission = load_submission(BUGGY)
    assert html.render(report, submission) == html.render(report, submission)


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_a_reused_figure_draws_what_a_fresh_one_does(reports, fmt):
    """A grading process draws every student's curves on one figure of each kind: after other
    students' numbers (diverging, missing, a different class's labels), the picture is the
    same bytes a fresh figure gives."""
    from gradkit.render import plots

    curve = reports["buggy"].plots.training
    others = [reports["correct"].plots.training,
              curve.model_copy(update={"student_loss": [v * 40 for v in curve.reference_loss],
                                       "predictions": [None, 1.0] + curve.predictions[2:]}),
              curve.model_copy(update={"student_loss": [None] * len(curve.steps),
                                       "labels": [1.0 - y for y in curve.labels]})]
    drawings = (plots.loss_curves, plots.predictions)
    fresh = []
    for draw in drawings:
        plots._REUSED.clear()
        fresh.append(draw(curve, fmt))
    for other in others:
        plots._REUSED.clear()
        alone = [draw(other, fmt) for draw in drawings]
        plots._REUSED.clear()
        assert [draw(curve, fmt) for draw in drawings] == fresh  # (a figure is kept now)
        assert [draw(other, fmt) for draw in drawings] == alone
        assert [draw(curve, fmt) for draw in drawings] == fresh


def test_source_lines_are_shown_only_from_the_file_the_report_graded(reports, tmp_path):
    changed = tmp_path / "changed.py"
    changed.write_text(BUGGY.read_text().replace("dLdA = dLdB", "dLdA = dLdB * dBdA"))
    page = html.render(reports["buggy"], load_submission(changed))
    assert 'class="named"' not in page  # another file: its lines would mislead
    assert "dLdA = dLdB" in page  # the report's own copy of the named line


@pytest.mark.parametrize("view", ["page", "fragment", "gradescope"])
def test_a_submissions_text_is_text(reports, view):
    report = hostile(reports["buggy"])
    if view == "page":
        text = html.render(report)
    elif view == "fragment":
        text = html.fragment(report)
    else:
        from gradkit.render import gradescope

        text = gradescope.results(report, output_format="html")["output"]
    assert MARKUP not in text
    assert "<script" not in text and "<img" not in text and "<textarea" not in text.lower()
    assert "</textarea>" not in text and not re.search(r"href=[\"']?javascript:", text)
    assert html.Markup.escape(MARKUP) in text  # shown, as text
    assert text.count(html.Markup.escape(MARKUP)) >= 4  # path, printing x2, diagnosis, check


HIDDEN = "\x1b[2J\x1b]0;owned\x07\u202eevil\u200b\x9b31m"


def test_a_submissions_controls_and_invisible_characters_are_shown_not_obeyed(sandbox, tmp_path):
    """Terminal controls, a right-to-left override and a zero-width space in a submission's
    printing, message, path and source reach the page as visible escapes, never as themselves
    (they would hide or reorder what the page shows); the source excerpt is numbered as Python
    numbers lines (a U+2028 in a comment ends no line)."""
    source = BUGGY.read_text().splitlines(keepends=True)
    source[0] = "# a comment with \u2028 and " + HIDDEN + "\n"
    path = tmp_path / "student.py"
    path.write_text("".join(source))
    data = check(path, sandbox=sandbox).model_dump(mode="json")
    data["output"] = {"stdout": HIDDEN, "stderr": HIDDEN, "truncated_bytes": 0}
    data["submission"]["path"] = "student" + HIDDEN + ".py"
    data["checks"][0]["message"] = HIDDEN
    report = Report.model_validate(data)
    for page in (html.render(report, load_submission(path)), html.fragment(report)):
        for char in ("\x1b", "\x07", "\u202e", "\u200b", "\x9b"):
            assert char not in page, repr(char)
        assert "\\x1b[2J\\x1b]0;owned\\x07\\u202eevil\\u200b\\x9b31m" in page
    page = html.render(report, load_submission(path))
    named = next(d.location.line for d in report.diagnoses if d.location and d.location.line)
    shown = re.search(r'<div class="named"><span class="n">(\d+)</span><span class="t">(.*?)'
                      r'</span></div>', page)
    assert shown and shown.group(1) == str(named), shown
    assert html.Markup.escape(BUGGY.read_text().splitlines()[named - 1]) in shown.group(2)


def test_the_summary_allows_only_its_own_script(reports):
    from gradkit import batch

    rows = [batch.row_of(batch.Submission(name, Path(r.submission.path)), r)
            for name, r in reports.items()]
    page = html.render_summary(rows, batch.summarize(rows))
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy(page)
    assert 'href="reports/correct.html"' in page and 'href="reports/buggy.html"' in page
    assert 'href="gradebook.csv"' in page


def test_the_summary_links_stay_in_the_reports_folder(reports):
    """`gradkit grade` names students safely; the page does not rely on it: a name is quoted
    whole into one file name under reports/, never a scheme or a path step."""
    import urllib.parse

    from gradkit import batch

    names = ["../../etc/passwd", "javascript:alert(1)", "a b#c?d", ".."]
    rows = [batch.row_of(batch.Submission(name, Path("x.py")), reports["correct"])
            for name in names]
    page = html.render_summary(rows, batch.summarize(rows), gradebook="grades #1.csv")
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert "grades%20%231.csv" in hrefs
    for name in names:
        href = html.report_link("reports", name)
        assert hrefs.count(href) == 1 and href.startswith("reports/")
        resolved = urllib.parse.urlparse(urllib.parse.urljoin("file:///out/summary.html", href))
        assert resolved.scheme == "file" and not resolved.query and not resolved.fragment
        assert resolved.path.startswith("/out/reports/") and resolved.path.count("/") == 3
        assert urllib.parse.unquote(resolved.path) == f"/out/reports/{name}.html"


# -- the numbers behind the pictures ---------------------------------------------------------

def test_wrong_gradients_are_kept_as_matrices_of_the_clearest_case(reports):
    report = reports["buggy"]
    pictures = {p.parameter: p for p in report.plots.gradients}
    assert set(pictures) == {"V", "I"}  # the hidden layer's: the output layer's are right
    cases = {c.id: c for c in build_cases()}
    for name, picture in pictures.items():
        assert [len(picture.expected), len(picture.expected[0])] == \
            list(NOTEBOOK.parameter_shapes[name])
        case = cases[picture.case]
        assert case.kind == "step" and case.dtype == torch.float64
        exp = expect_step(case.X, case.Y, case.weights, case.learning_rate)
        expected = torch.tensor(picture.expected, dtype=torch.float64)
        assert torch.equal(expected, exp.gradients[name].to(torch.float64).reshape(
            expected.shape))
        # the student's: dL/dA taken as dL/dB (no sigmoid derivative) all the way down
        X, W = case.X.to(torch.float64), case.weights["W"].to(torch.float64)
        dLdB = _output_delta(case) @ W.T
        student = X.T @ dLdB if name == "V" else dLdB.sum(dim=0, keepdim=True)
        actual = torch.tensor(picture.actual, dtype=torch.float64)
        assert torch.allclose(actual, student, rtol=1e-9, atol=1e-12)
        worst = int((actual - expected).abs().argmax())
        assert picture.worst_index == [worst // expected.shape[1], worst % expected.shape[1]]
        # the clearest case: every entry wrong, on matrices of comparable size
        comparison = next(c for c in report.check(f"gradient.{name}").comparisons
                          if c.case == picture.case and c.against == "reference")
        assert comparison.mismatched == comparison.total
        assert picture.case != "saturated"


def _output_delta(case):
    """dL/dC of the reference network on a case: (P - Y) * P * (1 - P), in float64."""
    from reference.network import forward

    weights = {n: w.to(torch.float64) for n, w in case.weights.items()}
    P = forward(case.X.to(torch.float64), weights).P
    return (P - case.Y.to(torch.float64)) * P * (1 - P)


def test_heat_maps_share_a_scale_and_mark_the_worst_entry(reports):
    from gradkit.render import plots

    for picture in reports["buggy"].plots.gradients:
        expected, yours, difference = plots.heat_panels(picture)
        assert expected.limit == yours.limit  # one colour scale for the two gradients
        row, column = picture.worst_index
        for panel in (expected, yours, difference):
            worst = [(r, c) for r, line in enumerate(panel.cells)
                     for c, cell in enumerate(line) if cell.worst]
            assert worst == [(row, column)]
        # the same value has the same colour in both; zero is the scale's white middle
        scale = float(expected.limit)
        top = max((cell for line in expected.cells + yours.cells for cell in line),
                  key=lambda cell: abs(cell.value))
        assert abs(abs(top.value) - scale) <= 5e-3 * scale  # (the limit is written to 3 digits)
        assert [c.value for c in difference.cells[row]][column] == pytest.approx(
            picture.actual[row][column] - picture.expected[row][column])


def test_the_training_curve_is_the_reference_and_the_students(reports):
    case = next(c for c in build_cases() if c.kind == "training")
    reference = expect_training(case).losses.tolist()
    for name, report in reports.items():
        curve = report.plots.training
        assert curve is not None and curve.case == case.id
        assert curve.steps == list(TRAINING_CHECKPOINTS)
        assert curve.reference_loss == reference
        assert curve.labels == case.Y.reshape(-1).to(torch.float64).tolist()
        assert len(curve.predictions) == len(curve.labels)
        tracks = all(abs(s - r) <= TRAINING_TRACKING.atol + TRAINING_TRACKING.rtol * abs(r)
                     for s, r in zip(curve.student_loss, curve.reference_loss))
        assert tracks == (report.check("training").status == "pass") == (name == "correct")
    assert reports["correct"].plots.gradients == []


def test_a_format_1_report_loads_as_format_2(reports):
    data = json.loads(reports["buggy"].model_dump_json())
    data["format_version"] = "1.0"
    del data["plots"]
    old = Report.model_validate(data)
    assert old.format_version == "2.0" and old.plots.gradients == [] and \
        old.plots.training is None
    assert "45 / 100 points" in html.render(old)  # and still renders, without pictures


# -- the chain comes from the report's steps, whatever the assignment calls them -------------

def _layered(diagnosed: bool) -> Report:
    names = ["dLdZ2", "dLdW2", "dLdb2", "dLdZ1", "dLdW1", "dLdb1"]
    statuses = ["match", "mismatch", "match", "mismatch", "mismatch", "not_found"]
    steps = {"Z1": "right", "H1": "right", "Z2": "right", "dLdZ2": "right", "dLdW2": "wrong",
             "dLdb2": "right", "dLdZ1": "wrong", "dLdW1": "right where held",
             "dLdb1": "not held", "update.W1": "right", "update.b1": "right",
             "update.W2": "right", "update.b2": "right"}
    diagnoses = [Diagnosis(code="GK001", title="A step is wrong", message="m",
                           evidence=Evidence(details={"step": "dLdZ1", "steps": steps}))] \
        if diagnosed else []
    return Report(
        gradkit_version="0", torch_version="0", python_version="3",
        submission=SubmissionInfo(path="net.py", kind="py"),
        intermediates=[IntermediateResult(name=n, status=s) for n, s in zip(names, statuses)],
        checks=[Check(id=f"gradient.{p}", group="gradient", title=p,
                      status="fail" if p in ("W2", "W1") else "pass", points=0, max_points=1)
                for p in ("W1", "b1", "W2", "b2")],
        diagnoses=diagnoses)


def test_the_chain_follows_the_localisation_and_its_first_wrong_step():
    chain = html.chain(_layered(diagnosed=True))
    assert chain.source == "localisation"
    assert [s.name for s in chain.of("forward")] == ["Z1", "H1", "Z2"]
    assert [s.name for s in chain.of("gradient")] == ["dLdZ2", "dLdW2", "dLdb2", "dLdZ1",
                                                      "dLdW1", "dLdb1"]
    assert [s.name for s in chain.of("update")] == ["update.W1", "update.b1", "update.W2",
                                                    "update.b2"]
    # the diagnosis names dLdZ1 although dLdW2 comes first: the localisation's own verdict
    assert chain.first_wrong.name == "dLdZ1"
    assert [s.status for s in chain.of("gradient")] == ["right", "wrong", "right", "wrong",
                                                        "partial", "unknown"]
    # right steps whose value is off the reference's (an intermediate that mismatches, an
    # update whose gradient check failed) are right, and marked as handed a mistake
    assert [s.name for s in chain.steps if s.inherited] == ["dLdW1", "update.W1", "update.W2"]
    page = html.render(_layered(diagnosed=True))
    assert page.count('data-inherited="true"') == 3 and "right, value off" in page


def test_without_a_localisation_the_chain_shows_the_intermediates_and_the_updates():
    chain = html.chain(_layered(diagnosed=False))
    assert chain.source == "intermediates" and chain.of("forward") == []
    assert [(s.name, s.status) for s in chain.steps] == [
        ("dLdZ2", "right"), ("dLdW2", "wrong"), ("dLdb2", "right"), ("dLdZ1", "wrong"),
        ("dLdW1", "wrong"), ("dLdb1", "unknown"), ("update.W1", "wrong"),
        ("update.b1", "right"), ("update.W2", "wrong"), ("update.b2", "right")]
    assert chain.first_wrong.name == "dLdW2"
    assert not any(s.inherited for s in chain.steps)  # without a localisation, no step is
    page = html.render(_layered(diagnosed=False))
    assert 'data-step="dLdW2" data-status="wrong" data-first-wrong="true"' in page


# -- the platforms -----------------------------------------------------------------------------

def test_gradescope_can_carry_the_visual_report(gradkit_cli, tmp_path):
    target = tmp_path / "results.json"
    result = gradkit_cli("check", BUGGY, "--format", "gradescope", "--gradescope-output", "html",
                         "--output", target)
    assert result.exit_code == 1
    results = json.loads(target.read_text())
    schema = json.loads((ROOT / "tests" / "data" / "gradescope-results.schema.json").read_text())
    jsonschema.validate(results, schema)
    assert results["output_format"] == "html"
    assert results["output"].startswith("<style>") and 'id="gradkit-report"' in results["output"]
    assert "<!DOCTYPE" not in results["output"] and "<script" not in results["output"]
    assert {t["output_format"] for t in results["tests"]} == {"md"}


def test_github_summary_says_where_the_visual_report_is(gradkit_cli, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "course/student")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    page = tmp_path / "gradkit-report.html"
    result = gradkit_cli("check", EXAMPLES / "correct.py", "--html", page)
    assert result.exit_code == 0 and page.is_file()
    text = summary.read_text()
    assert "gradkit-report.html" in text
    assert "(https://github.com/course/student/actions/runs/42#artifacts)" in text


def test_grade_writes_each_students_page_and_the_summary(gradkit_cli, tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    for source in (EXAMPLES / "correct.py", BUGGY):
        (folder / source.name).write_text(source.read_text())
    out = tmp_path / "out"
    assert gradkit_cli("grade", folder, "--out", out, "--no-progress").exit_code == 0
    for student in ("correct", "no_hidden_sigmoid_derivative"):
        report = json.loads((out / "reports" / f"{student}.json").read_text())
        page = (out / "reports" / f"{student}.html").read_text()
        verdict = "pass" if report["passed"] else "fail"
        assert f'data-verdict="{verdict}"' in page
    summary = (out / "summary.html").read_text()
    assert 'href="reports/no_hidden_sigmoid_derivative.html"' in summary
    assert 'data-code="GK102"' in summary
    # a rerun reuses the reports, and writes a page that went missing
    (out / "reports" / "correct.html").unlink()
    result = gradkit_cli("grade", folder, "--out", out, "--no-progress")
    assert "reports reused" in result.stdout or "unchanged" in result.stdout
    assert (out / "reports" / "correct.html").is_file()


def test_the_gradescope_autograder_can_show_the_visual_report(tmp_path):
    from test_render_gradescope import run_autograder

    results = run_autograder(tmp_path, {"solution.py": BUGGY.read_text()},
                             GRADKIT_OUTPUT="html")  # validated against the schema there
    assert results["output_format"] == "html" and 0 < results["score"] < 100
    assert 'data-step="dLdA" data-status="wrong" data-first-wrong="true"' in results["output"]
    assert results["output"].count('data-plot="gradient-') == 2


def test_grade_no_html_writes_no_pages(gradkit_cli, tmp_path):
    out = tmp_path / "out"
    result = gradkit_cli("grade", EXAMPLES / "correct.py", "--out", out, "--no-progress",
                         "--no-html")
    assert result.exit_code == 0 and "summary:" not in result.stdout
    assert (out / "reports" / "correct.json").is_file()
    assert not (out / "reports" / "correct.html").exists() and not (out / "summary.html").exists()


@pytest.mark.parametrize("source, verdict", [
    ("def train_neural_net(X, Y, weights=None, learning_rate=1.0)\n    pass\n", "FAILED"),
    ("import torch\nraise RuntimeError('my code crashed')\n", "FAILED"),
    (None, "gradkit could not grade this submission"),
])
def test_a_page_for_a_file_that_did_not_get_far(sandbox, tmp_path, source, verdict):
    path = tmp_path / "solution.py"
    path.write_text(source or "")
    report = check(path, sandbox=sandbox)
    if source is None:
        report.error = "gradkit failed: RuntimeError: <b>not markup</b>"
    page = html.render(report, load_submission(path))
    assert f'<span class="verdict">{verdict}</span>' in page
    assert 'id="gradkit-report"' in page and "<svg" not in page  # nothing to draw
    if source is None:
        assert "&lt;b&gt;not markup&lt;/b&gt;" in page
    else:
        assert report.check("load").message.split(":")[0] in page


def test_a_training_run_that_went_to_nan_is_drawn_and_kept_as_json(reports):
    from gradkit.render import prairielearn
    from gradkit.report import TrainingCurve

    data = json.loads(reports["buggy"].model_dump_json())
    curve = TrainingCurve.model_validate(data["plots"]["training"])
    data["plots"]["training"] = curve.model_copy(update={
        "student_loss": [0.5, 0.4] + [None] * 6, "predictions": [None] * 8}).model_dump()
    report = Report.model_validate_json(json.dumps(data))  # None survives a JSON round trip
    assert report.plots.training.student_loss[2] is None
    page = html.render(report)
    assert page.count("<svg") == 2
    # said in the captions, and marked on the axes (a cross for each value that is no number)
    assert "your loss is not a number (NaN or infinite) at step 300, step 400, step 500, " \
        "step 600, step 700, step 800" in page
    assert "your P is not a number (NaN or infinite) anywhere" in page
    assert "not a number</text>" in page and "yours: not a number</text>" in page
    assert prairielearn.results(report)["tests"]  # and the PNGs are drawn
