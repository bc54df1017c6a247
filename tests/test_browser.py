"""The visual views in a real browser: Chromium (Debian's package) driven by Playwright.

Each page is made by the real CLI from real submissions through the real sandbox, then opened
from disk. Every page must load with no console error and no request beyond its own file (the
browser may fetch nothing: styles and pictures are inline), show the report's verdict, draw each
plot at a visible size, mark the first wrong step of the chain, open its collapsed details on a
click, fit a phone's width, and keep a screenshot under tests/artifacts/. A submission whose
source, printing and file name carry markup must run none of it.

Without a browser these tests skip, unless GRADKIT_REQUIRE_BROWSER is set (CI sets it), when
they fail instead.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from conftest import EXAMPLES, ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE_WIDTH = 390
#: markup a hostile submission puts in its source, its printing and its messages; each part
#: would, if it ran, set window.pwned, change the title, or make a request
MARKUP = ('</textarea></pre><script>window.pwned = 1; document.title = "pwned"; '
          'fetch("http://127.0.0.1:9/leak")</script><img src=x onerror="window.pwned = 2">'
          '<a id="evil" href="javascript:window.pwned = 3">click me</a>')
#: a file name may not hold "/", so no closing tag, but the rest
HOSTILE_NAME = "x<script>window.pwned=4<img src=y onerror=window.pwned=5>javascript:alert(1).py"


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
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, args=FLAGS, headless=True,
            viewport={"width": 1100, "height": 900}, offline=True)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Visit:
    """A page and everything it did that a self-contained page must not."""

    page: object
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


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
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
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


def fits_a_phone(browser, path: Path, name: str) -> None:
    seen = visit(browser, path, width=PHONE_WIDTH)
    clean(seen)
    overflow = seen.page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= PHONE_WIDTH + 1, f"the page is {overflow}px wide on a {PHONE_WIDTH}px phone"
    seen.page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
    seen.page.emulate_media(media="print")
    for svg in seen.page.query_selector_all("figure[data-plot] svg"):
        assert svg.is_visible()
    seen.page.close()


def steps_of(report: dict) -> dict[str, str]:
    """The localisation's statuses of the chain's steps, as a diagnosis in the report has them."""
    for d in report["diagnoses"]:
        steps = d["evidence"]["details"].get("steps")
        if isinstance(steps, dict):
            return steps
    return {}


def graded(gradkit_cli, path: Path, out: Path) -> tuple[dict, Path]:
    """The report (JSON) and its page, both from one real `gradkit check`."""
    out.mkdir(parents=True, exist_ok=True)
    report_path, page_path = out / "report.json", out / "report.html"
    result = gradkit_cli("check", path, "--format", "json", "--output", report_path,
                         "--html", page_path)
    assert result.exit_code in (0, 1), result.output
    return json.loads(report_path.read_text()), page_path


EXAMPLE_PAGES = {
    # name: (submission, the plots the page draws, the first wrong step)
    "correct": (EXAMPLES / "correct.py", ["loss", "predictions"], None),
    "buggy": (EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py",
              ["gradient-V", "gradient-I", "loss", "predictions"], "dLdA"),
    "notebook": (EXAMPLES / "notebook.ipynb", None, "A"),
}


@pytest.mark.parametrize("name", list(EXAMPLE_PAGES))
def test_a_report_page_shows_the_report(browser, gradkit_cli, tmp_path, name):
    path, plots, first_wrong = EXAMPLE_PAGES[name]
    report, page_path = graded(gradkit_cli, path, tmp_path)
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

    # each plot the report has numbers for is drawn, at a visible size
    expected_plots = [f"gradient-{g['parameter']}" for g in report["plots"]["gradients"]] + \
        (["loss", "predictions"] if report["plots"]["training"] else [])
    assert plots is None or expected_plots == plots
    plots_are_visible(page, expected_plots)

    # the chain marks the first wrong step: the report's, and the one the bug is in
    marked = page.query_selector_all("[data-first-wrong=true]")
    steps = steps_of(report)
    report_first = next((s for s, status in steps.items() if status == "wrong"), None)
    assert report_first == first_wrong
    if first_wrong is None:
        assert marked == []
    else:
        assert [m.get_attribute("data-step") for m in marked] == [first_wrong]
        assert "first wrong" in marked[0].inner_text()
        statuses = {e.get_attribute("data-step"): e.get_attribute("data-status")
                    for e in page.query_selector_all("#chain [data-step]")}
        assert [s for s, v in statuses.items() if v == "wrong"] == \
            [s for s, v in steps.items() if v == "wrong"]

    # every comparison is there, collapsed until asked for
    details = page.locator("details.comparisons").first
    table = details.locator("table")
    assert details.get_attribute("open") is None and not table.is_visible()
    details.locator("summary").click()
    assert details.evaluate("d => d.open") and table.is_visible()
    if report["diagnoses"]:
        explanation = page.locator("details.explanation").first
        explanation.locator("summary").click()
        assert explanation.locator("p").first.is_visible()

    page.screenshot(path=str(ARTIFACTS / f"report-{name}.png"), full_page=True)
    page.close()
    fits_a_phone(browser, page_path, f"report-{name}")


def test_the_class_summary(browser, gradkit_cli, tmp_path):
    class_folder = tmp_path / "class"
    class_folder.mkdir()
    for source in (EXAMPLES / "correct.py", EXAMPLES / "notebook.ipynb",
                   EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py",
                   EXAMPLES / "buggy" / "bias_mean_not_sum.py",
                   EXAMPLES / "buggy" / "sign_error_dLdP.py"):
        shutil.copy(source, class_folder / source.name)
    (class_folder / "crashes.py").write_text(f"raise RuntimeError({MARKUP!r})\n")
    out = tmp_path / "out"
    result = gradkit_cli("grade", class_folder, "--out", out, "--no-progress", "--jobs", "2")
    assert result.exit_code == 0, result.output
    summary = out / "summary.html"
    assert f"summary: {summary}" in result.stdout
    with open(out / "gradebook.csv", newline="") as f:
        gradebook = list(csv.DictReader(f))

    seen = visit(browser, summary)
    page = seen.page
    clean(seen)
    assert page.evaluate("window.pwned") is None
    counts = page.locator("#counts").inner_text()
    passed = sum(r["passed"] == "yes" for r in gradebook)
    assert f"{len(gradebook)} submissions · {passed} passed every check" in counts
    plots_are_visible(page, ["scores", "checks"])

    # the gradebook, sortable by a click
    def scores() -> list[float]:
        return [float(c.get_attribute("data-value")) for c in
                page.query_selector_all("#gradebook tbody td[data-value]")]

    students = [r.inner_text() for r in page.query_selector_all("#gradebook tbody tr td:first-child")]
    assert students == [r["student"] for r in gradebook]
    assert sorted(scores()) == sorted(float(r["score"]) for r in gradebook)
    header = page.locator("#gradebook th", has_text="score")
    header.click()
    assert scores() == sorted(scores()) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert scores() == sorted(scores(), reverse=True)

    # the commonest diagnoses, each opening to the students who have it, linked to their pages
    mistake = page.locator("details.mistake").first
    links = mistake.locator("a")
    assert not links.first.is_visible()
    mistake.locator("summary").click()
    assert links.first.is_visible()
    codes = [d.get_attribute("data-code") for d in page.query_selector_all("details.mistake")]
    assert "GK102" in codes and "GK106" in codes
    # the crashing file's message is shown as text
    assert "<script>window.pwned = 1;" in page.locator("#gradebook").inner_text()
    page.screenshot(path=str(ARTIFACTS / "summary.png"), full_page=True)

    # every student's link leads to their report page, which loads cleanly
    hrefs = [a.get_attribute("href") for a in page.query_selector_all("#gradebook tbody a")]
    assert len(hrefs) == len(gradebook)
    for href in hrefs:
        assert (out / urllib.parse.unquote(href)).is_file()
    page.locator("#gradebook tbody a", has_text="no_hidden_sigmoid_derivative").click()
    page.wait_for_load_state("load")
    assert page.url.endswith("reports/no_hidden_sigmoid_derivative.html")
    assert page.locator("#gradkit-report").get_attribute("data-verdict") == "fail"
    clean(seen)
    page.close()
    fits_a_phone(browser, summary, "summary")


def test_markup_from_a_submission_is_shown_as_text_and_never_runs(browser, gradkit_cli,
                                                                   tmp_path):
    source = (EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py").read_text()
    assert "    dLdA = dLdB\n" in source
    source = source.replace("    dLdA = dLdB\n", f"    dLdA = dLdB  # {MARKUP}\n")
    source = f"print({MARKUP!r})\n" + source.replace(
        "def train_neural_net(", f"import sys\nprint({MARKUP!r}, file=sys.stderr)\n\n"
        "def train_neural_net(", 1)
    submission = tmp_path / "class" / HOSTILE_NAME
    submission.parent.mkdir()
    submission.write_text(source)
    report, page_path = graded(gradkit_cli, submission, tmp_path / "out")
    assert MARKUP in report["output"]["stdout"] and MARKUP in report["output"]["stderr"]
    assert any(MARKUP in (d["location"] or {}).get("code", "") for d in report["diagnoses"])

    seen = visit(browser, page_path)
    page = seen.page
    clean(seen)  # no <img src=x>, no fetch: nothing was requested
    assert page.evaluate("window.pwned") is None
    assert page.title().startswith("gradkit: FAILED")
    assert page.query_selector("#evil") is None
    assert page.query_selector_all("script") == []
    # ... and each is there to read, as text
    assert HOSTILE_NAME in page.locator("#submission-path").inner_text()
    named = page.locator("#diagnoses .source .named").first.inner_text()
    assert MARKUP in named
    for stream in ("stdout", "stderr"):
        page.locator(f"#printed details:has(#{stream}) summary").click()
        assert MARKUP in page.locator(f"#{stream}").inner_text()
    assert page.evaluate("window.pwned") is None
    page.screenshot(path=str(ARTIFACTS / "report-hostile.png"), full_page=True)
    page.close()
