"""What the submission's process holds and reaches: nothing of the grader, the class or the
grader's environment (issue 11). Each test runs a real file through the real sandbox and checks
the target itself, not only the report.
"""

from __future__ import annotations

import ast
import os
import textwrap
from pathlib import Path

import pytest

from gradkit import check
from gradkit.sandbox import Sandbox

EXAMPLES = Path(__file__).parent.parent / "submissions_example"
HOSTILE = Path(__file__).parent / "data" / "hostile"
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as shared:
        yield shared


def _write(folder: Path, name: str, code: str) -> Path:
    """The correct solution with ``code`` run while it loads."""
    source = (EXAMPLES / "correct.py").read_text()
    source = source.replace("from helper import sigmoid\n",
                            "from helper import sigmoid\n" + textwrap.dedent(code), 1)
    path = folder / name
    path.write_text(source)
    return path


def _printed(report, label: str):
    line = next(l for l in report.output.stdout.splitlines() if l.startswith(label + " "))
    return ast.literal_eval(line[len(label) + 1:])


def test_the_submissions_process_holds_no_grader_module(sandbox, tmp_path):
    path = _write(tmp_path, "modules.py", """
        import sys
        print("modules", sorted(sys.modules))
        print("gradkit", sorted(vars(sys.modules["gradkit"])))
    """)
    report = check(path, sandbox=sandbox)
    assert report.passed, report.output.stderr
    modules = _printed(report, "modules")
    assert "torch" in modules and "numpy" in modules and "gradkit.sandbox.child" in modules
    assert [m for m in modules if m.split(".")[0] == "reference"] == []
    assert [m for m in modules if m.split(".")[0] == "gradkit" and m != "gradkit"
            and not m.startswith(("gradkit.sandbox", "gradkit.shims"))] == []
    # the runner is the grader's side of the sandbox: not loaded either
    assert "gradkit.sandbox.runner" not in modules
    # gradkit is a bare package there: its __init__ (the grader's API) never ran
    assert "check" not in _printed(report, "gradkit")


def test_the_nn_helper_shim_serves_the_toy_data_without_the_reference(sandbox, tmp_path):
    path = _write(tmp_path, "toy.py", """
        import sys
        from nn_helper import generate_x_y
        table, X, y = generate_x_y(random_seed=7)
        print("toy", [X.shape[0], sorted(m for m in sys.modules if m.startswith("reference"))])
    """)
    report = check(path, sandbox=sandbox)
    assert report.passed, report.output.stderr
    from reference.toy_data import generate_x_y

    assert _printed(report, "toy") == [generate_x_y(random_seed=7)[1].shape[0], []]
