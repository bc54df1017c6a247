"""Hostile and broken submissions through the real grader: verdict, message, time, survival.

Each file in tests/data/hostile/ is one attack on an otherwise ordinary submission (its docstring
says which, and what gradkit must do). Every test grades it with short limits through one worker
shared by this module, then asserts the verdict, the words a student reads, that the run ended
within its limit, that the worker survived, and that no process of the run is left.

The attacks are bounded so that the tests are safe on a machine without the isolation they check:
the fork bomb forks at most 50 times, memory is taken under the child's address-space limit, and
the kill attempts name only the grader of their own test, never -1 or 0.

The module runs on the backend ``GRADKIT_SANDBOX`` names (``auto``: linux here). Where the portable
backend legitimately does less (README, "Sandbox backends"), the test says so and why; the linux
backend's expectations are the same either way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional
from unittest import mock

import pytest
from click.testing import CliRunner

from gradkit import check
from gradkit.report import Report
from conftest import BACKEND, processes_left, sandbox_alive, share
from gradkit.sandbox import Limits, SandboxBackend, open_sandbox

HOSTILE = Path(__file__).parent / "data" / "hostile"
EXAMPLES = Path(__file__).parent.parent / "submissions_example"
LIMITS = Limits(load_seconds=4, call_seconds=2, total_seconds=15, address_space=2 << 30)
SECRET = "gradkit-test-secret-7c1e"
#: what the wrong solution under the "fake a pass" attacks fails (its dL/dP has the wrong sign)
WRONG_SOLUTION_FAILS = {"gradient.V", "gradient.I", "gradient.W", "gradient.J", "update",
                        "training"}


@pytest.fixture(scope="module")
def sandbox():
    """This module's own sandbox, started with a secret in its environment (the linux backend's
    worker keeps the environment it started with)."""
    with mock.patch.dict(os.environ, {"GRADKIT_TEST_SECRET": SECRET}):
        shared = open_sandbox()
    import torch  # noqa: F401  (the grader's own import, while a worker starts, is no run's time)

    with shared:
        # nor is the worker's start (it imports torch): one run first, untimed
        assert check(EXAMPLES / "correct.py", sandbox=shared, limits=LIMITS).passed
        yield shared


def _after_run(sandbox: SandboxBackend, report_error, seconds: float, allowed: float,
               may_leave: bool = False) -> None:
    assert report_error is None, f"gradkit itself failed: {report_error}"
    assert seconds < allowed, f"the run took {seconds:.1f} s, over the {allowed} s it may take"
    assert sandbox_alive(sandbox), "the grader's worker died"
    if not may_leave:
        assert processes_left(sandbox) == [], "a process of the run is still there"


#: what the portable backend adds to a check's time: each run starts a fresh interpreter that
#: imports torch (about a second idle, several on a loaded machine; the run's limits count from
#: when it is ready), and a check makes up to three runs (api.MAX_RESUMES)
STARTUP = 30.0 if BACKEND == "portable" else 0.0


def grade(sandbox: SandboxBackend, path: Path, allowed: float, may_leave: bool = False,
          **options) -> Report:
    started = time.monotonic()
    report = check(path, sandbox=sandbox, limits=LIMITS, **options)
    _after_run(sandbox, report.error, time.monotonic() - started, allowed + STARTUP, may_leave)
    return report


def cli(sandbox: SandboxBackend, monkeypatch, *args: str) -> tuple[dict, int]:
    """The real ``gradkit check ... --format json`` on the module's sandbox."""
    from gradkit.cli import main

    share(monkeypatch, sandbox)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["check", *args, "--format", "json", "--timeout", "15"],
                                catch_exceptions=False)
    report = json.loads(result.stdout)
    _after_run(sandbox, report["error"], time.monotonic() - started, 15 + STARTUP)
    return report, result.exit_code


def failing(report: Report) -> set[str]:
    return {c.id for c in report.checks if c.status in ("fail", "error")}


# attack, the check that must say so, its status, words of its message, seconds the run may take
STOPPED = [
    ("syntax_error", "load", "error", "syntax error at", 3),
    ("import_error", "load", "error", "loading the file raised RuntimeError: this file refuses "
                                      "to load", 3),
    ("exit_at_import", "load", "error", "loading the file raised SystemExit: 0", 3),
    ("loop_at_import", "load", "error", "loading the file ran past its 4 s limit", 7),
    ("loop_in_call", "gradient.V", "error", "call 'notebook_row' ran past its 2 s limit", 7),
    ("escape_group", "gradient.V", "error", "call 'notebook_row' ran past its 2 s limit", 7),
    ("memory_exhaustion", "gradient.V", "error", "DefaultCPUAllocator: can't allocate memory", 5),
    ("deep_recursion", "gradient.V", "error", "the submission's process killed by SIGSEGV", 5),
    ("os_exit_in_call", "gradient.V", "error", "the submission's process exited before it "
                                               "finished (does the file call sys.exit", 4),
    ("self_kill", "gradient.V", "error", "the submission's process killed by SIGKILL", 4),
    ("huge_file", "gradient.V", "error", "raised OSError: [Errno 27] File too large", 4),
    ("nan_weights", "gradient.V", "fail", "non-finite value(s) (NaN or inf)", 4),
    ("unsendable_return", "gradient.V", "error", "train_neural_net returned a generator, not a "
                                                 "dict of weights", 4),
    ("forged_frames", "load", "error", "something other than gradkit wrote to its result "
                                       "channel, so no result of this run counts", 4),
]


def portable_differs(attack: str, report: Report) -> Optional[tuple[str, tuple[str, ...]]]:
    """(status, words, any of which the message holds) where the portable backend on this
    platform legitimately gives another verdict than STOPPED's, and why; None where it gives the
    same. Only Linux is measured here; the macOS and Windows rows follow from what those systems
    provide."""
    limits = report.isolation.limits
    if report.isolation.backend != "portable":
        return None
    if attack == "memory_exhaustion" and "address_space" not in limits and os.name != "nt":
        # macOS accepts RLIMIT_AS but does not enforce it (the backend records no such limit):
        # the allocations go on until the system refuses one or the wall clock stops the call
        return "error", ("call 'notebook_row' ran past its 2 s limit",
                         "DefaultCPUAllocator: can't allocate memory")
    if attack == "huge_file" and "file_size" not in limits:
        # Windows has no RLIMIT_FSIZE: the 200 MB file is written in the private working folder
        # (deleted after the run), and the solution beneath is correct
        return "pass", ()
    if attack == "deep_recursion" and os.name == "nt":
        return "error", ("the submission's process killed by STATUS_STACK_OVERFLOW",)
    if attack == "deep_recursion" and sys.platform == "darwin":
        # macOS reports a stack overflow as SIGSEGV or SIGBUS, depending on where it lands
        return "error", ("the submission's process killed by SIGSEGV",
                         "the submission's process killed by SIGBUS")
    if attack == "self_kill" and os.name == "nt":
        return "error", ("raised AttributeError: module 'signal' has no attribute 'SIGKILL'",)
    return None


@pytest.mark.parametrize("attack, check_id, status, words, seconds", STOPPED,
                         ids=[row[0] for row in STOPPED])
def test_attack_fails_the_submission_with_a_clear_message(sandbox, attack, check_id, status,
                                                          words, seconds):
    report = grade(sandbox, HOSTILE / f"{attack}.py", seconds)
    expected = (status, (words,))
    differs = portable_differs(attack, report)
    if differs is not None:
        expected = differs
        if differs[0] == "pass":
            assert report.check(check_id).status == "pass"
            return
    assert not report.passed and report.return_code == 1
    verdict = report.check(check_id)
    assert verdict.status == expected[0]
    assert any(words in verdict.message for words in expected[1]), verdict.message
    # nothing passes on the strength of a run that was stopped or produced nothing usable
    assert report.check("gradient.W").status != "pass"


def test_objects_that_cannot_be_sent_back_fail_predict_too(sandbox):
    report = grade(sandbox, HOSTILE / "unsendable_return.py", 4)
    assert report.check("predict").status == "fail"
    assert "Agreeable, not a tensor" in report.check("predict").message


@pytest.mark.parametrize("attack", ["lying_tensor", "patch_torch"])
def test_faking_equality_in_the_child_changes_nothing(sandbox, attack):
    """A Tensor subclass that says "equal" to anything, or torch/numpy/pytest patched to: the
    wrong solution underneath fails exactly the checks it fails without the attack."""
    report = grade(sandbox, HOSTILE / f"{attack}.py", 5)
    plain = grade(sandbox, EXAMPLES / "buggy" / "sign_error_dLdP.py", 5)
    assert failing(plain) == WRONG_SOLUTION_FAILS
    assert failing(report) == WRONG_SOLUTION_FAILS
    assert report.check("gradient.V").message == plain.check("gradient.V").message


def test_fake_printed_json_is_only_a_log(sandbox, monkeypatch):
    report, code = cli(sandbox, monkeypatch, str(HOSTILE / "fake_printed_json.py"))
    assert code == 1 and report["passed"] is False
    assert {c["id"] for c in report["checks"] if c["status"] != "pass"} == WRONG_SOLUTION_FAILS
    # the fake report is in the log it was printed to, as text, and nowhere else
    assert '"passed": true' in report["output"]["stdout"]
    assert '"passed": true' in report["output"]["stderr"]


def test_fake_result_files_are_not_the_report(sandbox, monkeypatch, tmp_path):
    submission = tmp_path / "fake_result_files.py"
    shutil.copy(HOSTILE / "fake_result_files.py", submission)
    in_tmp = Path("/tmp/gradkit-hostile-fake-report.json")
    in_tmp.unlink(missing_ok=True)
    gradescope_existed = Path("/autograder").exists()
    written = tmp_path / "report.json"
    report, code = cli(sandbox, monkeypatch, str(submission), "--output", str(written))
    assert code == 1 and report["passed"] is False
    on_disk = json.loads(written.read_text())
    assert on_disk["passed"] is False and on_disk["score"] == report["score"]
    log = report["output"]["stdout"]
    assert "'results.json': 'written'" in log  # its own working folder is writable
    if report["isolation"]["filesystem"].startswith("read-only"):
        assert "Read-only file system" in log
        assert not (tmp_path / "fake_report.json").exists()
        assert not in_tmp.exists()
        if not gradescope_existed:
            assert not Path("/autograder").exists()
    in_tmp.unlink(missing_ok=True)


def test_fork_attempts_are_bounded_and_leave_nothing(sandbox):
    if BACKEND == "portable" and os.name != "nt":
        # the portable backend has no PID namespace or subreaper on POSIX: a process that left
        # the run's session escapes the group kill and outlives the run (README, "Sandbox
        # backends"). The test finds each one by the environment the run gave it, and ends it.
        report = grade(sandbox, HOSTILE / "fork_bomb.py", 6, may_leave=True)
        left = processes_left(sandbox)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        # nothing refuses the forks here: the run is graded as it computed, within its limits
        # (``grade`` held the check to 6 s plus the backend's interpreter start-ups, which the
        # report's duration includes: 16.4 s on a loaded machine, with a 15 s run limit)
        assert report.error is None and report.check("load").status == "pass"
        return
    report = grade(sandbox, HOSTILE / "fork_bomb.py", 6)
    if "seccomp" in report.isolation.syscalls:
        assert report.check("gradient.V").status == "error"
        assert "raised PermissionError: [Errno 1] Operation not permitted" in \
            report.check("gradient.V").message
    # (grade() asserted that no forked process outlived the run)


def test_megabytes_of_output_are_capped_and_change_nothing(sandbox):
    report = grade(sandbox, HOSTILE / "huge_output.py", 10)
    assert report.passed
    assert len(report.output.stdout) <= LIMITS.log_bytes
    assert len(report.output.stderr) <= LIMITS.log_bytes
    assert report.output.truncated_bytes > 16 << 20


def test_the_environment_holds_no_secrets(sandbox):
    assert os.environ.get("GRADKIT_TEST_SECRET") is None  # only the worker was given it
    # the portable backend starts each run from the grader's own environment: give it the secret
    with mock.patch.dict(os.environ, {"GRADKIT_TEST_SECRET": SECRET}):
        report = grade(sandbox, HOSTILE / "env_secrets.py", 4)
    assert report.passed
    assert "environment:" in report.output.stdout
    assert SECRET not in report.output.stdout


def test_autograd_fails_the_policy_check_unless_allowed(sandbox):
    report = grade(sandbox, HOSTILE / "autograd.py", 5)
    assert failing(report) == {"policy"}
    policy = report.check("policy")
    for code in ("GKP101", "GKP103", "GKP110"):
        assert code in policy.message
    assert "calls .backward()" in policy.message and policy.location.line is not None
    allowed = grade(sandbox, HOSTILE / "autograd.py", 5, allow_autograd=True)
    assert allowed.passed
    assert "allowed" in allowed.check("policy").message


def test_importing_gradkit_or_the_reference_fails_the_policy_check(sandbox):
    report = grade(sandbox, HOSTILE / "imports_reference.py", 5, allow_autograd=True)
    assert failing(report) == {"policy"}
    message = report.check("policy").message
    assert "GKP201" in message and "imports gradkit" in message
    assert "GKP202" in message and "imports the reference solution" in message


def test_an_attempt_to_kill_the_grader_leaves_it_alive(tmp_path, sandbox):
    """The real command in its own process: the submission tries to SIGKILL it (its pid is in
    grader_pid.txt beside the file), its worker and its own ancestors."""
    if sandbox.name == "portable" and not sandbox.seatbelt:
        pytest.skip("the portable backend runs the submission as the grader's own user with no "
                    "PID namespace: without macOS's sandbox-exec profile it can signal every "
                    "process of that user, this test's own included (README, Sandbox backends)")
    submission = tmp_path / "kill_grader.py"
    shutil.copy(HOSTILE / "kill_grader.py", submission)
    started = time.monotonic()
    grader = subprocess.Popen([sys.executable, "-m", "gradkit", "check", str(submission),
                               "--format", "json", "--timeout", "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (tmp_path / "grader_pid.txt").write_text(str(grader.pid))  # before it copies the folder
    try:
        out, err = grader.communicate(timeout=60)
    finally:
        grader.kill()
    assert grader.returncode == 0, f"the grader ended with {grader.returncode}: {err[-2000:]}"
    assert time.monotonic() - started < 60
    report = json.loads(out)
    assert report["passed"] is True
    attempts = report["output"]["stdout"]
    assert f"{grader.pid}: '" in attempts, attempts  # it did try, and failed
    assert "'killed'" not in attempts


def test_the_worker_still_grades_after_every_attack(sandbox):
    report = grade(sandbox, EXAMPLES / "correct.py", 10)
    assert report.passed
