"""The golden reports: the contract for the notebook assignment.

For every example and catalogue submission, the verdict, the score, each check's status and points,
and each diagnosis's code and line are pinned in ``tests/data/golden/notebook.json``. A change
that moves any of them must say why in its commit and regenerate the file with

    GRADKIT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

Diagnoses may get more precise (a new code where GK001/GK002 stood); verdicts and scores may not
move without a reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT

GOLDEN = ROOT / "tests" / "data" / "golden" / "notebook.json"
CATALOGUE = ROOT / "tests" / "data" / "catalogue"


def _submissions() -> list[Path]:
    found = [p for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".ipynb")
             and p.name != "build_notebooks.py"
             # the other assignments' examples (folders named after them) are not the notebook's
             and not (p.suffix == ".py" and p.read_text().startswith(
                 "# gradkit-expect: assignment="))]
    found += list(CATALOGUE.glob("*.py"))
    return sorted(found)


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def digest(report: dict) -> dict:
    """What the contract pins of one report."""
    return {
        "passed": report["passed"],
        "score": round(report["score"], 6),
        "checks": {c["id"]: [c["status"], round(c["points"], 6)] for c in report["checks"]},
        "diagnoses": [[d["code"], (d.get("location") or {}).get("line")]
                      for d in report["diagnoses"]],
    }


@pytest.fixture(scope="module")
def golden() -> dict:
    if GOLDEN.exists():
        return json.loads(GOLDEN.read_text())
    return {}


_seen: dict[str, dict] = {}


@pytest.mark.parametrize("path", _submissions(), ids=_name)
def test_golden_report(path: Path, check_json, golden):
    report, _ = check_json(path)
    got = digest(report)
    _seen[_name(path)] = got
    if os.environ.get("GRADKIT_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        merged = {**golden, **_seen}
        rows = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(merged.items())]
        GOLDEN.write_text("{\n" + ",\n".join(rows) + "\n}\n")
        return
    assert _name(path) in golden, "new submission: regenerate with GRADKIT_UPDATE_GOLDEN=1"
    want = golden[_name(path)]
    assert (got["passed"], got["score"], got["checks"]) == (
        want["passed"], want["score"], want["checks"])
    assert got["diagnoses"] == want["diagnoses"]
