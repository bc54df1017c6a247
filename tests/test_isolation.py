"""What the submission's process holds and reaches: nothing of the grader, the class or the
grader's environment (issue 11). Each test runs a real file through the real sandbox and checks
the target itself, not only the report.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
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


NOBODY = 65534


@pytest.fixture(scope="module")
def graded_as_root():
    """The class of tests/attack_class.py graded by `gradkit grade` as root (with a secret in
    its environment and HOME in the test's world): (world, reports, targets before, after)."""
    from attack_class import World, digest

    import gradkit

    world = World(0)
    try:
        package = Path(gradkit.__file__).parent
        targets = world.targets(package, Path(sys.prefix))
        before = {path: digest(path) for path in targets}
        env = {**os.environ, "HOME": str(world.home), "GRADKIT_TEST_SECRET": ROOT_SECRET}
        result = subprocess.run([sys.executable, "-m", "gradkit", "grade", str(world.folder),
                                 "--out", str(world.out), "--jobs", "2", "--timeout", "20"],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        after = {path: digest(path) for path in targets}
        yield world, world.reports(), before, after
    finally:
        world.close()


ROOT_SECRET = "root-secret-81d0"


@pytest.mark.skipif(not ROOT, reason="the grade as root")
def test_as_root_no_attack_reaches_its_target(graded_as_root):
    from attack_class import assert_no_attack_reached_its_target

    world, reports, before, after = graded_as_root
    assert reports["alice"]["passed"] and reports["bob"]["passed"]
    assert reports["alice"]["isolation"]["user"].startswith("nobody (dropped from root)")
    assert_no_attack_reached_its_target(reports, before, after, world.listener, ROOT_SECRET)


@pytest.mark.skipif(not ROOT, reason="the grade as root")
def test_as_root_delegation_fails_with_the_policy_code(graded_as_root):
    from attack_class import (assert_delegation_fails_with_the_policy_code,
                              assert_existing_attacks_keep_their_verdicts)

    _, reports, _, _ = graded_as_root
    assert_delegation_fails_with_the_policy_code(reports)
    assert_existing_attacks_keep_their_verdicts(reports)


@pytest.mark.skipif(not ROOT, reason="the runs drop to nobody, whose keyring is looked in")
def test_as_root_a_keyring_note_does_not_reach_the_next_run(graded_as_root, sandbox):
    from attack_class import keyring_note_of

    world, _, _, _ = graded_as_root
    report = check(world.folder / "keyring_note.py", sandbox=sandbox)
    assert report.passed
    assert "keyring add refused: errno 1" in report.output.stdout
    assert "keyring note found" not in report.output.stdout
    assert keyring_note_of(NOBODY) == -1
