"""The visual views in a real browser: Chromium (Debian's package) driven by Playwright.

Each page is made by the real CLI from real submissions through the real sandbox, then opened
from disk. Every page must load with no console error and no request beyond its own file (the
browser may fetch nothing: styles and pictures are inline), show the report's verdict, draw each
plot at a visible size, mark the first wrong step of the chain, open its collapsed details on a
click, fit a phone's width, print with nothing collapsed or cut off, and keep a screenshot (and
the printout) under tests/artifacts/. A submission whose source, printing and file name carry
markup must run none of it, in its page, in the class summary and in Gradescope's html output.

Without a browser these tests skip, unless GRADKIT_REQUIRE_BROWSER is set (CI sets it), when
they fail instead.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import jsonschema
import pytest

from conftest import EXAMPLES, ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE_WIDTH = 390
#: a page printed on A4 with the browser's default margins is about this many CSS pixels wide
PAPER_WIDTH = 700
#: markup a hostile submission puts in its source, its printing and its messages; each part
#: would, if it ran, set window.pwned, log PWNED, open a dialog, or make a request
MARKUP = ('</textarea></pre><script>window.pwned = 1; console.log("PWNED"); alert("PWNED"); '
          'document.title = "pwned"; fetch("http://127.0.0.1:9/leak")</script>'
          '<img src=x onerror="window.pwned = 2; alert(2)">'
          '<a id="evil" href="javascript:window.pwned = 3; alert(3)">click me</a>')
#: the folders and file name of a hostile submission: a file name cannot hold "/", but the path
#: shown for it can, so the path reads as a closed <script>, an <img onerror=...>, a
#: javascript: link and a </textarea>
HOSTILE_PATH = ("h<script>window.pwned=4;alert(4)<",
                "script><img src=y onerror=window.pwned=5;alert(5)><a href=javascript:alert(6)>l<",
                "textarea>javascript:alert(7).py")
HOSTILE_NAME = "x<script>window.pwned=8<img src=y onerror=alert(9)>javascript:alert(10).py"


def _browser_path() -> Optional[str]:
    for candidate in (os.environ.get("GRADKIT_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _unavailable(why: str):
    if os.environ.get("GRADKIT_REQUIRE_BROWSER"):
        pytest.fail(f"GRADKIT_REQUIRE_BROWSER is set but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    """One Chromium with a fresh profile for the module's pages."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install playwright)")
    executable = _browser_path()
    if executable is None:
        _unavailable("no Chromium found (apt-get install chromium, or set GRADKIT_CHROMIUM)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="gradkit-chromium-")
    threads = set(threading.enumerate())
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, args=FLAGS, headless=True,
            viewport={"width": 1100, "height": 900}, offline=True)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
    no_thread_left(threads)


def no_thread_left(before: set, timeout: float = 60.0) -> None:
    """Wait for the threads started since ``before`` to end. Playwright's driver is a child
    process that a thread of asyncio's child watcher waits for, and that thread can outlive
    the context by a moment; `gradkit grade` forks its grading processes only when its process
    runs no other thread, so a test after this module (tests/test_batch.py) must find none."""
    deadline = time.monotonic() + timeout
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == [], f"the browser left threads running: {left}"


@dataclass
class Visit:
    """A page and everything it did that a self-contained page must not."""

    page: object
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _inside(url: str, folder: Path) -> bool:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return False
    path = Path(urllib.parse.unquote(parsed.path)).resolve()
    return path.is_file() and path.is_relative_to(folder.resolve()) and path.suffix == ".html"


def visit(browser, path: Path, *, width: int = 1100, folder: Optional[Path] = None) -> Visit:
    """Open a page from disk. Navigations to pages in ``folder`` (the page's own folder) are
    allowed; every other request is recorded, and any that is not a file is refused."""
    folder = folder or path.parent
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    seen = Visit(page)
    page.on("console", lambda m: (seen.messages.append(m.text),
                                  seen.errors.append(m.text) if m.type == "error" else None))
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: None if (r.is_navigation_request() and _inside(r.url, folder))
            else seen.requests.append(r.url))
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
               else route.continue_())
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return seen


def clean(seen: Visit) -> None:
    assert seen.errors == [], f"console errors: {seen.errors}"
    assert seen.requests == [], f"the page requested {seen.requests}"
    assert seen.dialogs == [], f"the page opened dialogs: {seen.dialogs}"
    assert not any("PWNED" in m for m in seen.messages), seen.messages


def nothing_ran(seen: Visit) -> None:
    """None of a hostile submission's markup ran: no marker, no dialog, no request, no link."""
    clean(seen)
    page = seen.page
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("document.title") != "pwned"
    assert page.query_selector("#evil") is None
    assert page.query_selector_all("img") == []  # the pages draw no <img>: SVG, tables
    for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
        assert urllib.parse.urlparse(href).scheme == "file", href


def plots_are_visible(page, expected: list[str]) -> None:
    names = [f.get_attribute("data-plot") for f in page.query_selector_all("figure[data-plot]")]
    assert names == expected
    for name in names:
        # a gradient is three heat maps (expected, yours, the difference), each a grid of
        # coloured cells; every other plot is one SVG figure
        pictures = page.query_selector_all(f'figure[data-plot="{name}"] .plot > svg, '
                                           f'figure[data-plot="{name}"] .heatmap table')
        assert len(pictures) == (3 if name.startswith("gradient-") else 1), name
        for svg in pictures:
            assert svg.is_visible()
            box = svg.bounding_box()
            assert box is not None and box["width"] > 40 and box["height"] > 30, (name, box)
        if name.startswith("gradient-"):  # the worst entry is outlined in each heat map
            assert len(page.query_selector_all(f'figure[data-plot="{name}"] td.worst')) == 3


def fits_a_phone_and_paper(browser, path: Path, name: str) -> None:
    """No sideways scrolling on a phone; printed, every collapsed detail is on the paper (but the
    comparisons of a check that are all within tolerance, whose summary says so), and nothing is
    cut off or left in a scrolling box."""
    seen = visit(browser, path, width=PHONE_WIDTH)
    clean(seen)
    page = seen.page
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= PHONE_WIDTH + 1, f"the page is {overflow}px wide on a {PHONE_WIDTH}px phone"
    page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)

    page.set_viewport_size({"width": PAPER_WIDTH, "height": 900})
    page.emulate_media(media="print")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PAPER_WIDTH + 1, f"printed, the page is {width}px wide on {PAPER_WIDTH}px"
    details = page.eval_on_selector_all("details", """all => all.map(d => ({
        summary: d.querySelector('summary').innerText, within: d.classList.contains('all-within'),
        shown: [...d.children].filter(c => c.tagName !== 'SUMMARY').every(
            c => c.checkVisibility() && c.getBoundingClientRect().height > 0)}))""")
    assert details, "no collapsed details on the page"
    for d in details:
        if d["within"]:
            assert d["summary"].endswith("all within tolerance"), d
        else:
            assert d["shown"], f"printed, the details {d['summary']!r} stay collapsed"
    clipped = page.eval_on_selector_all("main *", """all => all.filter(e => {
        const s = getComputedStyle(e);
        return (s.overflowX !== 'visible' || s.overflowY !== 'visible') &&
               (e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1);
        }).map(e => e.tagName + '.' + e.className)""")
    assert clipped == [], f"printed, these are cut off or scroll: {clipped}"
    for picture in page.query_selector_all("figure[data-plot] svg, figure[data-plot] table"):
        box = picture.bounding_box()
        assert box is not None and box["width"] > 40 and box["x"] + box["width"] <= PAPER_WIDTH
    page.screenshot(path=str(ARTIFACTS / f"{name}-print.png"), full_page=True)
    pdf = page.pdf(path=str(ARTIFACTS / f"{name}.pdf"), format="A4")
    assert pdf.startswith(b"%PDF")
    page.close()


def steps_of(report: dict) -> dict[str, str]:
    """The localisation's statuses of the chain's steps, as a diagnosis in the report has them."""
    for d in report["diagnoses"]:
        steps = d["evidence"]["details"].get("steps")
        if isinstance(steps, dict):
            return steps
    return {}


def graded(gradkit_cli, path: Path, out: Path, *options: str) -> tuple[dict, Path]:
    """The report (JSON) and its page, both from one real `gradkit check`."""
    out.mkdir(parents=True, exist_ok=True)
    report_path, page_path = out / "report.json", out / "report.html"
    result = gradkit_cli("check", path, "--format", "json", "--output", report_path,
                         "--html", page_path, *options)
    assert result.exit_code in (0, 1), result.output
    return json.loads(report_path.read_text()), page_path


EXAMPLE_PAGES = {
    # name: (submission, gradkit check's options, the plots the page draws, the first wrong step)
    "correct": (EXAMPLES / "correct.py", (), ["loss", "predictions"], None),
    # the hidden layer's sigmoid derivative left out: the first wrong step is dL/dA
    "buggy": (EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py", (),
              ["gradient-V", "gradient-I", "loss", "predictions"], "dLdA"),
    "notebook": (EXAMPLES / "notebook.ipynb", (), None, "A"),
    # other assignment descriptions: the chain and the heat maps are their steps and shapes
    "tanh_bce": (EXAMPLES / "tanh_bce" / "no_hidden_tanh_derivative.py",
                 ("--assignment", "tanh_bce"),
                 ["gradient-W1", "gradient-b1", "loss", "predictions"], "dLdZ1"),
    "relu_mse": (EXAMPLES / "relu_mse" / "no_relu_derivative_layer2.py",
                 ("--assignment", "relu_mse"),
                 ["gradient-W1", "gradient-b1", "gradient-W2", "gradient-b2", "loss",
                  "predictions"], "dLdZ2"),
}


#: the steps that are right themselves but hold a wrong value (an earlier mistake reaches them):
#: the steps after the first wrong one, and the updates of the wrong gradients
INHERITED = {
    "correct": [], "buggy": ["dLdV", "dLdI", "update.V", "update.I"],
    "tanh_bce": ["dLdW1", "dLdb1", "update.W1", "update.b1"],
    "relu_mse": ["dLdW2", "dLdb2", "dLdA1", "dLdZ1", "dLdW1", "dLdb1", "update.W1", "update.b1",
                 "update.W2", "update.b2"],
}


@pytest.mark.parametrize("name", list(EXAMPLE_PAGES))
def test_a_report_page_shows_the_report(browser, gradkit_cli, tmp_path, name):
    path, options, plots, first_wrong = EXAMPLE_PAGES[name]
    report, page_path = graded(gradkit_cli, path, tmp_path, *options)
    seen = visit(browser, page_path)
    page = seen.page
    clean(seen)

    # the verdict and the score are the report's
    root = page.locator("#gradkit-report")
    assert root.get_attribute("data-verdict") == ("pass" if report["passed"] else "fail")
    banner = page.locator("#verdict").inner_text()
    assert ("PASSED" if report["passed"] else "FAILED") in banner
    assert f"{report['score']:g} / {report['max_score']:g} points" in banner
    rows = page.query_selector_all("#checks tr[data-check]")
    assert [(r.get_attribute("data-check"), r.get_attribute("data-status")) for r in rows] == \
        [(c["id"], c["status"]) for c in report["checks"]]
    # each diagnosis, with the student's own line highlighted
    shown = page.query_selector_all("#diagnoses article.diagnosis")
    assert [a.get_attribute("data-code") for a in shown] == \
        [d["code"] for d in report["diagnoses"]]
    for article, diagnosis in zip(shown, report["diagnoses"]):
        location = diagnosis["location"] or {}
        if location.get("line") and location.get("code"):
            named = article.query_selector(".source .named")
            assert named is not None and named.is_visible()
            assert location["code"].strip() in named.inner_text()

    # each plot the report has numbers for is drawn, at a visible size
    expected_plots = [f"gradient-{g['parameter']}" for g in report["plots"]["gradients"]] + \
        (["loss", "predictions"] if report["plots"]["training"] else [])
    assert plots is None or expected_plots == plots
    plots_are_visible(page, expected_plots)
    # a heat map has the gradient's own shape (the assignment's), and the loss its own name
    for picture in report["plots"]["gradients"]:
        for table in page.query_selector_all(
                f'figure[data-plot="gradient-{picture["parameter"]}"] table.heat'):
            cells = table.eval_on_selector_all("tbody tr", "rows => rows.map(r => "
                                               "r.querySelectorAll('td').length)")
            assert cells == [len(row) for row in picture["expected"]]
    if report["plots"]["training"]:
        loss_plot = page.locator('figure[data-plot="loss"]')
        assert report["plots"]["training"]["loss"] in loss_plot.locator("svg").text_content()
        assert report["plots"]["training"]["loss"] in loss_plot.locator("figcaption").inner_text()

    # the chain marks the first wrong step: the report's, and the one the bug is in
    marked = page.query_selector_all("[data-first-wrong=true]")
    steps = steps_of(report)
    report_first = next((s for s, status in steps.items() if status == "wrong"), None)
    assert report_first == first_wrong
    if first_wrong is None:
        assert marked == []
    else:
        assert [m.get_attribute("data-step") for m in marked] == [first_wrong]
        assert "first wrong" in marked[0].inner_text() and marked[0].is_visible()
        statuses = {e.get_attribute("data-step"): e.get_attribute("data-status")
                    for e in page.query_selector_all("#chain [data-step]")}
        assert list(statuses) == list(steps)  # every step of the report, in its order
        assert [s for s, v in statuses.items() if v == "wrong"] == \
            [s for s, v in steps.items() if v == "wrong"]
    inherited = page.query_selector_all("#chain [data-inherited=true]")
    if name in INHERITED:
        assert [e.get_attribute("data-step") for e in inherited] == INHERITED[name]
    for step in inherited:  # each is right in the localisation, and says its value is off
        assert step.get_attribute("data-status") == "right"
        assert "value off" in step.inner_text()

    # every comparison is there, collapsed until asked for
    details = page.locator("details.comparisons").first
    table = details.locator("table")
    assert details.get_attribute("open") is None and not table.is_visible()
    details.locator("summary").click()
    assert details.evaluate("d => d.open") and table.is_visible()
    if report["diagnoses"]:
        explanation = page.locator("details.explanation").first
        assert not explanation.locator("p").first.is_visible()
        explanation.locator("summary").click()
        assert explanation.locator("p").first.is_visible()

    page.screenshot(path=str(ARTIFACTS / f"report-{name}.png"), full_page=True)
    page.close()
    fits_a_phone_and_paper(browser, page_path, f"report-{name}")


def hostile_class(folder: Path) -> Path:
    """A class: examples, a file that raises with markup in its message, a file whose name is
    markup, and a student's folder whose path is (see HOSTILE_PATH)."""
    folder.mkdir()
    for source in (EXAMPLES / "correct.py", EXAMPLES / "notebook.ipynb",
                   EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py",
                   EXAMPLES / "buggy" / "bias_mean_not_sum.py",
                   EXAMPLES / "buggy" / "sign_error_dLdP.py"):
        shutil.copy(source, folder / source.name)
    (folder / "crashes.py").write_text(f"raise RuntimeError({MARKUP!r})\n")
    shutil.copy(EXAMPLES / "correct.py", folder / HOSTILE_NAME)
    nested = folder.joinpath(*HOSTILE_PATH)
    nested.parent.mkdir(parents=True)
    shutil.copy(EXAMPLES / "buggy" / "sign_error_dLdP.py", nested)
    return folder


def test_the_class_summary(browser, gradkit_cli, tmp_path):
    class_folder = hostile_class(tmp_path / "class")
    out = tmp_path / "out"
    result = gradkit_cli("grade", class_folder, "--out", out, "--no-progress", "--jobs", "2")
    assert result.exit_code == 0, result.output
    summary = out / "summary.html"
    assert f"summary: {summary}" in result.stdout
    with open(out / "gradebook.csv", newline="") as f:
        gradebook = list(csv.DictReader(f))
    assert len(gradebook) == 8

    seen = visit(browser, summary)
    page = seen.page
    nothing_ran(seen)
    counts = page.locator("#counts").inner_text()
    passed = sum(r["passed"] == "yes" for r in gradebook)
    assert f"{len(gradebook)} submissions · {passed} passed every check" in counts
    plots_are_visible(page, ["scores", "checks"])

    # the gradebook, sortable by a click
    def scores() -> list[float]:
        return [float(c.get_attribute("data-value")) for c in
                page.query_selector_all("#gradebook tbody td.num[data-value]")]

    def students() -> list[str]:
        return [r.get_attribute("data-student") for r in
                page.query_selector_all("#gradebook tbody tr")]

    assert students() == [r["student"] for r in gradebook]
    # each row's score and verdict are the gradebook's (each the student's report's)
    shown = page.eval_on_selector_all("#gradebook tbody tr", """rows => rows.map(r => [
        r.dataset.student, parseFloat(r.cells[1].dataset.value), r.cells[2].innerText.trim()])""")
    assert shown == [[r["student"], float(r["score"]), r["passed"]] for r in gradebook]
    for row in gradebook:
        report = json.loads((out / "reports" / f"{row['student']}.json").read_text())
        assert (f"{report['score']:g}", "yes" if report["passed"] else "no") == \
            (row["score"], row["passed"])
    header = page.locator("#gradebook th", has_text="score")
    header.click()
    assert scores() == sorted(scores()) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert scores() == sorted(scores(), reverse=True)
    page.locator("#gradebook th", has_text="student").click()
    assert students() == sorted(students(), key=str.lower)

    # the commonest diagnoses, each opening to the students who have it, linked to their pages
    mistake = page.locator("details.mistake").first
    links = mistake.locator("a")
    assert not links.first.is_visible()
    mistake.locator("summary").click()
    assert links.first.is_visible()
    codes = [d.get_attribute("data-code") for d in page.query_selector_all("details.mistake")]
    assert "GK102" in codes and "GK106" in codes
    # the crashing file's message, the file names and the hostile path are there, as text
    text = page.locator("#gradebook").inner_text()
    assert "<script>window.pwned = 1;" in text
    # each student's file, from the class folder (its full path on hover)
    files = {r.get_attribute("data-student"): r.query_selector(".submission")
             for r in page.query_selector_all("#gradebook tbody tr")}
    for row in gradebook:
        shown = files[row["student"]]
        assert shown.get_attribute("title") == row["submission"]
        assert Path(row["submission"]) == class_folder / shown.inner_text()
    assert HOSTILE_NAME in text and "/".join(HOSTILE_PATH) in text
    page.screenshot(path=str(ARTIFACTS / "summary.png"), full_page=True)

    # every student's link leads to their report page in the output folder, which loads cleanly
    hrefs = page.eval_on_selector_all("#gradebook tbody a", "links => links.map(a => a.href)")
    assert len(hrefs) == len(gradebook)
    for href in hrefs:
        target = Path(urllib.parse.unquote(urllib.parse.urlparse(href).path)).resolve()
        assert target.is_file() and target.parent == (out / "reports").resolve(), href
    hostile_student = next(r["student"] for r in gradebook if HOSTILE_NAME in r["submission"])
    page.locator(f'#gradebook tr[data-student="{hostile_student}"] a').click()
    page.wait_for_load_state("load")
    assert page.url.endswith(f"reports/{hostile_student}.html")
    assert page.locator("#gradkit-report").get_attribute("data-verdict") == "pass"
    assert HOSTILE_NAME in page.locator("#submission-path").inner_text()
    nothing_ran(seen)
    page.go_back()
    page.locator("#gradebook tbody a", has_text="no_hidden_sigmoid_derivative").click()
    page.wait_for_load_state("load")
    assert page.url.endswith("reports/no_hidden_sigmoid_derivative.html")
    assert page.locator("#gradkit-report").get_attribute("data-verdict") == "fail"
    nothing_ran(seen)
    page.close()
    fits_a_phone_and_paper(browser, summary, "summary")


def hostile_submission(folder: Path) -> Path:
    """The wrong-hidden-layer example with MARKUP in its source (a comment on the named line),
    in what it prints to stdout and stderr, and in its path (HOSTILE_PATH)."""
    source = (EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py").read_text()
    assert "    dLdA = dLdB\n" in source
    source = source.replace("    dLdA = dLdB\n", f"    dLdA = dLdB  # {MARKUP}\n")
    source = f"print({MARKUP!r})\n" + source.replace(
        "def train_neural_net(", f"import sys\nprint({MARKUP!r}, file=sys.stderr)\n\n"
        "def train_neural_net(", 1)
    submission = folder.joinpath(*HOSTILE_PATH)
    submission.parent.mkdir(parents=True)
    submission.write_text(source)
    return submission


def test_markup_from_a_submission_is_shown_as_text_and_never_runs(browser, gradkit_cli,
                                                                   tmp_path):
    submission = hostile_submission(tmp_path / "class")
    report, page_path = graded(gradkit_cli, submission, tmp_path / "out")
    assert MARKUP in report["output"]["stdout"] and MARKUP in report["output"]["stderr"]
    assert any(MARKUP in (d["location"] or {}).get("code", "") for d in report["diagnoses"])
    assert "</textarea>" in report["submission"]["path"] and \
        "</script>" in report["submission"]["path"]

    seen = visit(browser, page_path)
    page = seen.page
    nothing_ran(seen)  # no <img src=x>, no fetch: nothing was requested
    assert page.title().startswith("gradkit: FAILED")
    assert page.query_selector_all("script") == []
    # ... and each is there to read, as text
    assert str(submission) in page.locator("#submission-path").inner_text()
    named = page.locator("#diagnoses .source .named").first.inner_text()
    assert MARKUP in named
    for stream in ("stdout", "stderr"):
        page.locator(f"#printed details:has(#{stream}) summary").click()
        assert MARKUP in page.locator(f"#{stream}").inner_text()
    # clicking what looks like a link is clicking text
    page.get_by_text("click me").first.click()
    nothing_ran(seen)
    page.screenshot(path=str(ARTIFACTS / "report-hostile.png"), full_page=True)
    page.close()


#: a page that shows Gradescope's html output as Gradescope would: inside its own page, with no
#: Content-Security-Policy of gradkit's (so the fragment itself must hold no live markup)
HOST_PAGE = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             "<title>Autograder results</title></head><body><h1>Autograder results</h1>"
             "<div id=\"output\">{}</div></body></html>")


def test_gradescope_html_output_shows_the_markup_as_text(browser, gradkit_cli, tmp_path):
    submission = hostile_submission(tmp_path / "class")
    target = tmp_path / "results.json"
    result = gradkit_cli("check", submission, "--format", "gradescope", "--gradescope-output",
                         "html", "--output", target)
    assert result.exit_code == 1, result.output
    results = json.loads(target.read_text())
    jsonschema.validate(results, json.loads(
        (ROOT / "tests" / "data" / "gradescope-results.schema.json").read_text()))
    assert results["output_format"] == "html"
    host = tmp_path / "gradescope.html"
    host.write_text(HOST_PAGE.format(results["output"]), encoding="utf-8")

    seen = visit(browser, host)
    page = seen.page
    nothing_ran(seen)
    assert page.title() == "Autograder results"
    assert page.query_selector_all("script") == []
    report = page.locator("#output #gradkit-report")
    assert report.get_attribute("data-verdict") == "fail"
    assert "45 / 100 points" in page.locator("#verdict").inner_text()
    assert str(submission) in page.locator("#submission-path").inner_text()
    assert MARKUP in page.locator("#diagnoses .source .named").first.inner_text()
    page.locator("#printed details:has(#stdout) summary").click()
    assert MARKUP in page.locator("#stdout").inner_text()
    plots_are_visible(page, ["gradient-V", "gradient-I", "loss", "predictions"])
    assert page.locator('[data-first-wrong="true"]').get_attribute("data-step") == "dLdA"
    # the fragment's styles stay inside it: the host page's own heading keeps its font
    assert page.evaluate("getComputedStyle(document.querySelector('body > h1')).fontSize") == \
        "32px"
    nothing_ran(seen)
    page.screenshot(path=str(ARTIFACTS / "gradescope-hostile.png"), full_page=True)
    page.close()
