"""Garbled and random files through the real grader: it always writes a report, never raises.

Hypothesis feeds ``gradkit.check`` random text, random bytes, the correct example with random
damage, and broken notebooks. Every report must be valid (it round-trips through its JSON), say
something in its load check, and never carry ``error`` (gradkit's own failure).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gradkit import check
from gradkit.report import Report
from gradkit.sandbox import Limits, Sandbox

CORRECT = (Path(__file__).parent.parent / "submissions_example" / "correct.py").read_text()
LIMITS = Limits(load_seconds=4, call_seconds=2, total_seconds=10)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as shared:
        yield shared


def _grade(sandbox: Sandbox, name: str, content: bytes) -> Report:
    with tempfile.TemporaryDirectory(prefix="gradkit-fuzz-") as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        report = check(path, sandbox=sandbox, limits=LIMITS)
    assert report.error is None, report.error
    assert report.checks and report.checks[0].id == "load"
    assert report.checks[0].status == "pass" or report.checks[0].message
    assert Report.model_validate_json(report.model_dump_json()) == report
    event("ran in the sandbox" if report.isolation.process != "not started" else
          "refused before running")
    return report


@given(st.text(max_size=400))
@FUZZ
def test_random_text(sandbox, text):
    _grade(sandbox, "random.py", text.encode("utf-8", "surrogatepass"))


@given(st.binary(max_size=400))
@FUZZ
def test_random_bytes(sandbox, data):
    _grade(sandbox, "random.py", data)


@st.composite
def damaged(draw) -> str:
    """The correct example with a few random cuts, copies and stray characters."""
    source = CORRECT
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(source)))
        kind = draw(st.sampled_from(["cut", "copy", "insert"]))
        if kind == "cut":
            source = source[:at] + source[at + draw(st.integers(1, 40)):]
        elif kind == "copy":
            source = source[:at] + source[max(0, at - 60):at] + source[at:]
        else:
            source = source[:at] + draw(st.text(alphabet="()[]{}:=.,'\"\\#\n\t -+*/x0",
                                                min_size=1, max_size=4)) + source[at:]
    return source


@given(damaged())
@FUZZ
def test_damaged_solution(sandbox, source):
    _grade(sandbox, "damaged.py", source.encode("utf-8", "surrogatepass"))


@st.composite
def broken_notebook(draw) -> bytes:
    cells = draw(st.lists(st.one_of(st.text(max_size=80), st.just(CORRECT), st.none(),
                                    st.integers()), max_size=3))
    notebook = {"cells": [{"cell_type": draw(st.sampled_from(["code", "markdown", "raw", "?"])),
                           "source": cell, "metadata": {}, "outputs": [],
                           "execution_count": None} for cell in cells],
                "metadata": {}, "nbformat": draw(st.sampled_from([4, 3, 99, "4"])),
                "nbformat_minor": 5}
    text = json.dumps(notebook)
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, len(text)))]
    return text.encode()


@given(broken_notebook())
@FUZZ
def test_broken_notebooks(sandbox, data):
    _grade(sandbox, "notebook.ipynb", data)
