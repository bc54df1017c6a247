"""gradkit run by an ordinary user: the confinement without root (issue 11).

CI runs as root, so these tests become uid/gid 65534 (``setpriv``) with a private home, and run
the real ``gradkit grade`` and ``gradkit check`` from a venv that user can read
(``tests/user_venv.py``: the system's Python, torch, a non-editable copy of this worktree). The
class of ``tests/attack_class.py`` is graded once per configuration: with user namespaces (the
default here), and with them refused (``tests/no_userns.py``: a user namespace whose
``max_user_namespaces`` is 0), where Landlock and seccomp confine the run. Every attack must
miss its target, and the tests look at the targets themselves: the home's files, gradkit's
installed package, the venv, listeners on 127.0.0.1 and an abstract socket, the keyring.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import user_venv
from attack_class import (ATTACKS, KEPT, SECRET, World, assert_delegation_fails_with_the_policy_code,
                          assert_existing_attacks_keep_their_verdicts,
                          assert_no_attack_reached_its_target, digest, keyring_note_of)

HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(user_venv.available() is not None,
                                reason=f"cannot run as an ordinary user: {user_venv.available()}")


@pytest.fixture(scope="session")
def venv() -> Path:
    return user_venv.user_venv()


def _prefix(mode: str) -> tuple[str, ...]:
    return () if mode == "user namespace" else (sys.executable, str(HERE / "no_userns.py"))


@pytest.fixture(scope="module", params=["user namespace", "landlock"])
def graded(request, venv):
    """The class graded once as uid 65534 in each configuration: (mode, world, reports, targets
    before and after, grade's output)."""
    mode = request.param
    world = World(user_venv.USER)
    try:
        package = Path(subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import gradkit.sandbox, os; "
             "print(os.path.dirname(os.path.dirname(gradkit.sandbox.__file__)))"],
            capture_output=True, text=True, check=True).stdout.strip())
        targets = world.targets(package, venv)
        before = {path: digest(path) for path in targets}
        result = user_venv.as_user([str(venv / "bin" / "gradkit"), "grade", str(world.folder),
                                    "--out", str(world.out), "--jobs", "2", "--timeout", "20"],
                                   world.home, cwd=world.root, prefix=_prefix(mode))
        after = {path: digest(path) for path in targets}
        yield mode, world, world.reports(), before, after, result
    finally:
        world.close()


def test_the_class_is_graded_and_correct_files_pass(graded):
    _, _, reports, _, _, result = graded
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(reports) == sorted(["alice", "bob", *ATTACKS, *KEPT])
    for student in ("alice", "bob"):
        assert reports[student]["passed"], (student, reports[student]["checks"])
        assert reports[student]["error"] is None


def test_the_confinement_is_the_one_of_its_configuration(graded):
    mode, _, reports, _, _, _ = graded
    isolation = reports["alice"]["isolation"]
    assert isolation["user"].startswith(f"uid {user_venv.USER} (the user grading")
    if mode == "user namespace":
        assert isolation["namespaces"] == ["user", "pid", "mount", "ipc", "network"]
        assert isolation["network"] == "none (own network namespace)"
        assert isolation["filesystem"].startswith("read-only except its working folder")
        assert isolation["exposed"] == []
    else:
        assert isolation["namespaces"] == []
        assert isolation["landlock"].startswith("Landlock ABI ")
        assert "sockets of the unix family only" in isolation["syscalls"]
        assert [e.split(":")[0] for e in isolation["exposed"]] == ["processes"]


def test_no_attack_reaches_its_target(graded):
    _, world, reports, before, after, _ = graded
    assert_no_attack_reached_its_target(reports, before, after, world.listener, SECRET)


def test_delegation_fails_with_the_policy_code(graded):
    assert_delegation_fails_with_the_policy_code(graded[2])


def test_existing_attacks_keep_their_verdicts(graded):
    assert_existing_attacks_keep_their_verdicts(graded[2])


def test_a_keyring_note_does_not_reach_the_next_run(graded, venv):
    mode, world, _, _, _, _ = graded
    again = user_venv.as_user([str(venv / "bin" / "gradkit"), "check",
                               str(world.folder / "keyring_note.py"), "--format", "json"],
                              world.home, cwd=world.root, prefix=_prefix(mode))
    report = json.loads(again.stdout)
    assert report["passed"]
    assert "keyring note found" not in report["output"]["stdout"]
    assert keyring_note_of(user_venv.USER) == -1


def test_the_terminal_view_says_when_a_run_was_less_confined(graded, venv):
    mode, world, _, _, _, _ = graded
    shown = user_venv.as_user([str(venv / "bin" / "gradkit"), "check",
                               str(world.folder / "alice.py")],
                              world.home, cwd=world.root, prefix=_prefix(mode))
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    said = "less confined than the default: processes: it shares your PID namespace"
    assert (said in " ".join(shown.stdout.split())) == (mode == "landlock")
