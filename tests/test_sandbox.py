"""The sandbox: what it achieves on this machine, the order of frames, and a worker that dies.

The isolation test states what this project's machines (root, Python under /root) achieve; on a
machine where gradkit does not run as root it checks only what always holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

import reference
from gradkit import check
from gradkit.sandbox import confine as _confine, wire
from gradkit.sandbox.worker import children_of
from gradkit.sandbox import Limits, Sandbox
from gradkit.sandbox.runner import _Protocol

EXAMPLES = Path(__file__).parent.parent / "submissions_example"
HOSTILE = Path(__file__).parent / "data" / "hostile"
ROOT = os.geteuid() == 0


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as shared:
        yield shared


def test_the_report_says_what_isolation_was_achieved(sandbox):
    report = check(EXAMPLES / "correct.py", sandbox=sandbox)
    assert report.passed
    isolation = report.isolation
    assert "session and process group" in isolation.process
    assert {"cpu_seconds", "address_space", "file_size", "open_files", "core_dumps"} <= \
        set(isolation.limits)
    if not ROOT:
        pytest.skip("not root: no namespaces, and nobody to drop to")
    # what root achieves on this project's machines (and in CI, which runs the same way)
    assert isolation.process.startswith("own PID namespace")
    assert isolation.user.startswith("nobody (dropped from root)")
    assert isolation.network == "none (own network namespace)"
    assert isolation.filesystem.startswith("read-only except its working folder")
    assert "the reference package hidden" in isolation.filesystem
    assert isolation.syscalls == _confine.SYSCALL_FILTER
    assert "processes" in isolation.limits  # it binds nobody


def _write(tmp_path: Path, name: str, code: str) -> Path:
    """The correct solution with ``code`` run while it loads."""
    source = (EXAMPLES / "correct.py").read_text()
    source = source.replace("from helper import sigmoid\n",
                            "from helper import sigmoid\n" + textwrap.dedent(code), 1)
    path = tmp_path / name
    path.write_text(source)
    return path


def test_the_submission_sees_only_its_result_pipe_at_a_high_number(sandbox, tmp_path):
    path = _write(tmp_path, "fds.py", """
        import os
        print("fds", sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
        print("uid", os.getuid(), "pid", os.getpid(), "cwd", os.getcwd())
    """)
    report = check(path, sandbox=sandbox)
    assert report.passed
    line = next(l for l in report.output.stdout.splitlines() if l.startswith("fds"))
    fds = set(eval(line[4:]))
    assert {0, 1, 2, 1000} <= fds and len(fds - {0, 1, 2, 1000}) <= 1  # (listdir's own fd)
    if ROOT:
        assert "uid 65534 pid 2 " in report.output.stdout


@pytest.mark.skipif(not ROOT, reason="the mounts need root")
def test_only_the_working_folder_is_writable_and_the_reference_is_hidden(sandbox, tmp_path):
    path = _write(tmp_path, "files.py", """
        import os
        for target in ("here.txt", "/tmp/gradkit-sandbox-test.txt",
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "there.txt")):
            try:
                open(target, "w").close()
                print("wrote", target)
            except OSError as exc:
                print("refused", target, exc.strerror)
        try:
            print("reference holds", os.listdir(REFERENCE))
        except OSError as exc:  # (a clone under /tmp: the whole of /tmp is out of view)
            print("reference refused", exc.strerror)
        print("root holds", sorted(os.listdir("/root")))
    """.replace("REFERENCE", repr(str(Path(reference.__file__).parent))))
    report = check(path, sandbox=sandbox)
    out = report.output.stdout
    # listing the reference's folder is itself reaching for it: only the policy check fails
    assert {c.id for c in report.checks if c.status != "pass"} == {"policy"}, out
    assert "GKP203" in report.check("policy").message
    assert "wrote here.txt" in out
    assert "refused /tmp/gradkit-sandbox-test.txt Read-only file system" in out
    there = next(line for line in out.splitlines() if "there.txt" in line)
    assert there.startswith("refused")  # read-only (and not nobody's folder either)
    assert not (tmp_path / "there.txt").exists()
    assert "reference holds []" in out or "reference refused" in out
    # every home is out of view, but for the way to the Python install where it lies in one
    assert "root holds []" in out or "root holds ['.pyenv']" in out


@pytest.mark.skipif(not ROOT, reason="nobody to drop to")
def test_a_private_temporary_folder_does_not_stop_the_drop_to_nobody(sandbox, tmp_path,
                                                                       monkeypatch):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where the working folder goes
    report = check(EXAMPLES / "correct.py", sandbox=sandbox)
    assert report.passed
    assert report.isolation.user.startswith("nobody (dropped from root)")
    assert list(private.iterdir()) == []  # and the working folder was removed


def test_a_timeout_names_the_call_that_ran_past_it(sandbox, tmp_path):
    """Without train_neural_net the child skips its cases: the hanging call is a predict one."""
    source = (EXAMPLES / "correct.py").read_text().replace(
        "def train_neural_net(", "def _train(").replace(
        "    dtype = _float_dtype(X)\n    X = X.to(dtype)\n\n    A =",
        "    while True:\n        pass\n    A =")
    path = tmp_path / "hangs_in_predict.py"
    path.write_text(source)
    report = check(path, sandbox=sandbox, limits=Limits(call_seconds=1, total_seconds=10))
    assert "stopped during this case: call 'predict_toy' ran past its 1 s limit" in \
        report.check("predict").message


def test_frames_must_come_in_the_order_the_child_writes_them():
    def frame(kind: str, **header) -> wire.Frame:
        return wire.Frame({"type": kind, "ok": True, **header}, b"")

    protocol = _Protocol(["a", "b", "c"])
    for good in (frame("isolation"), frame("load"), frame("call", id="a"),
                 frame("call", id="c"), frame("done")):
        protocol.accept(good)
    for sequence in ([frame("load")],
                     [frame("isolation"), frame("call", id="a")],
                     [frame("isolation"), frame("load"), frame("load")],
                     [frame("isolation"), frame("load"), frame("call", id="b"),
                      frame("call", id="a")],
                     [frame("isolation"), frame("load"), frame("call", id="a"),
                      frame("call", id="a")],
                     [frame("isolation"), frame("load"), frame("call", id="zzz")],
                     [frame("isolation"), frame("load"), frame("done"), frame("done")]):
        protocol = _Protocol(["a", "b", "c"])
        with pytest.raises(wire.WireError):
            for item in sequence:
                protocol.accept(item)


def test_a_worker_killed_between_runs_is_started_again():
    with Sandbox() as sandbox:
        first = sandbox.worker_pid
        os.kill(first, signal.SIGKILL)
        report = check(EXAMPLES / "correct.py", sandbox=sandbox)
        assert report.passed and report.error is None
        assert sandbox.worker_pid != first and sandbox.worker_alive


def test_a_worker_killed_during_a_run_gives_a_report_and_a_new_worker():
    with Sandbox() as sandbox:
        first = sandbox.worker_pid
        # wait until the run's processes exist, then kill the worker under them
        killer = threading.Thread(target=lambda: (
            _wait_for(lambda: children_of(first)), os.kill(first, signal.SIGKILL)))
        killer.start()
        started = time.monotonic()
        report = check(HOSTILE / "loop_in_call.py", sandbox=sandbox,
                       limits=Limits(call_seconds=20, total_seconds=30))
        killer.join()
        assert time.monotonic() - started < 15
        assert report.error is None and not report.passed
        assert "the grader's worker stopped" in report.check("load").message + \
            report.check("gradient.V").message
        assert check(EXAMPLES / "correct.py", sandbox=sandbox).passed
        assert sandbox.worker_pid != first


def test_a_worker_started_elsewhere_is_used_then_replaced_when_it_dies():
    """``gradkit grade`` starts each grading process's worker itself (``start_worker``) and the
    grading process adopts it: it grades there, can kill it, and starts its own when it dies."""
    from gradkit.sandbox.runner import start_worker

    proc, sock = start_worker()
    try:
        with Sandbox(worker=(proc.pid, sock)) as sandbox:
            assert sandbox.worker_pid == proc.pid
            report = check(EXAMPLES / "correct.py", sandbox=sandbox)
            assert report.passed and report.isolation.backend == "linux"
            assert sandbox.worker_pid == proc.pid and proc.poll() is None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)  # (its parent, here, reaps it; the sandbox only sees it end)
            assert check(EXAMPLES / "correct.py", sandbox=sandbox).passed
            assert sandbox.worker_pid != proc.pid and sandbox.worker_alive
            own = sandbox.worker_pid
        _wait_for(lambda: not running(own), seconds=10)
        # an adopted worker is stopped by the sandbox that adopted it
        proc, sock = start_worker()
        with Sandbox(worker=(proc.pid, sock)) as sandbox:
            assert check(EXAMPLES / "correct.py", sandbox=sandbox).passed
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def _wait_for(condition, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out")


GRADER = """
import sys
from gradkit import check
from gradkit.sandbox import Limits, Sandbox
sandbox = Sandbox()
print(sandbox.worker_pid, flush=True)
check(sys.argv[1], sandbox=sandbox, limits=Limits(call_seconds=60, total_seconds=60))
"""


def test_when_the_grader_dies_its_worker_and_the_run_go_too(tmp_path):
    # (TMPDIR: the working folder the killed grader cannot remove is left in tmp_path)
    with subprocess.Popen([sys.executable, "-c", GRADER, str(HOSTILE / "loop_in_call.py")],
                          stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}) as grader:
        try:
            worker = int(grader.stdout.readline())
            # the run: its namespace's init and the submission's process
            run = _wait_for(lambda: len(children_of(worker)) == 2 and children_of(worker))
            time.sleep(0.5)  # well into the endless loop
        finally:
            grader.kill()
    _wait_for(lambda: not any(running(pid) for pid in [worker, *run]), seconds=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="PID namespaces need root")
def test_without_cat_the_namespace_init_is_a_bare_interpreter(tmp_path, monkeypatch):
    """Each run's PID 1 is `cat` on a pipe the worker holds; with no cat on PATH, the same loop
    in a bare interpreter: the run still gets its own PID namespace and is graded the same."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cat
    with Sandbox() as sandbox:
        report = check(EXAMPLES / "correct.py", sandbox=sandbox)
        assert children_of(sandbox.worker_pid) == []  # the init went with the run
    assert report.passed, [c.message for c in report.checks if c.status != "pass"]
    assert report.isolation.process.startswith("own PID namespace (it is PID 2")
