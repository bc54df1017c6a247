"""Mistakes no catalogue entry lists, each planted in an otherwise correct solution
(``tests/data/uncatalogued/``), graded through the real CLI and sandbox: the first diagnosis has
the file's expected code and line, its message contains the expected phrase, and its evidence
states the edit (a kind gradkit's search or whole-call explanations use).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT
from gradkit.diagnosis.catalogue import EDIT_KINDS, ENTRIES

UNCATALOGUED = sorted((ROOT / "tests" / "data" / "uncatalogued").glob("*.py"))
HEADER = re.compile(r"^# expect-diagnosis: (GK\d{3}) line=(\d+)\n# expect-phrase: (.+)$",
                    re.MULTILINE)


def expected(path: Path) -> tuple[str, int, str]:
    match = HEADER.search(path.read_text())
    assert match, f"{path.name} has no expect-diagnosis / expect-phrase header"
    return match.group(1), int(match.group(2)), match.group(3)


def test_there_are_at_least_twenty_and_none_is_a_catalogue_mistake():
    assert len(UNCATALOGUED) >= 20
    codes = {expected(p)[0] for p in UNCATALOGUED}
    # none of the GK1xx-GK5xx named mistakes: each is what the search or a whole-call
    # explanation finds
    assert all(code.startswith("GK6") for code in codes), codes


@pytest.mark.parametrize("path", UNCATALOGUED, ids=lambda p: p.stem)
def test_an_uncatalogued_mistake_is_named_at_its_line_with_its_edit(path, check_json):
    code, line, phrase = expected(path)
    report, exit_code = check_json(path)
    assert exit_code == 1 and not report["passed"]
    diagnoses = report["diagnoses"]
    assert diagnoses, "no diagnosis"
    first = diagnoses[0]
    assert (first["code"], first["location"]["line"]) == (code, line), \
        [(d["code"], (d.get("location") or {}).get("line"), d["message"]) for d in diagnoses]
    assert phrase in first["message"], first["message"]
    assert "{" not in first["message"]
    edit = first["evidence"]["details"].get("edit")
    assert edit and edit["kind"] in EDIT_KINDS
    assert first["title"] == ENTRIES[code].title
    # every other diagnosis is about something else: no GK001/GK002 beside an explanation
    assert not [d["code"] for d in diagnoses[1:] if d["code"] in ("GK001", "GK002", "GK003")]
