"""gradkit run by an ordinary user: the confinement without root (issue 11).

CI runs as root, so these tests become uid/gid 65534 (``setpriv``) with a private home, and run
the real ``gradkit grade`` and ``gradkit check`` from a venv that user can read
(``tests/user_venv.py``: the system's Python, torch, a non-editable copy of this worktree). Each
configuration is graded once: with user namespaces (the default here), and with them refused
(``tests/no_userns.py``: a user namespace whose ``max_user_namespaces`` is 0), where Landlock and
seccomp confine the run. Every attack must miss its target, and the test looks at the target
itself: the home's files, gradkit's installed package, the venv, a listener on 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import user_venv

HERE = Path(__file__).parent
HOSTILE = HERE / "data" / "hostile"
EXAMPLES = HERE.parent / "submissions_example"
SECRET = "user-secret-3f9a"  # in the grading user's environment (user_venv.as_user)
MARKER = "classmate-marker-bob-91c2"
PRIVATE = "private-user-data-55e1"
#: attack files graded in the class, and the existing ones that must keep their verdicts there
ATTACKS = ["reads_home", "writes_home", "writes_install", "reads_classmates", "opens_socket",
           "reads_environment", "scans_memory", "keyring_note", "delegates_sys_modules",
           "delegates_gc", "delegates_source"]
DELEGATION = ["delegates_sys_modules", "delegates_gc", "delegates_source", "writes_install"]
KEPT = {  # existing attack: check id, words of its message (as in tests/test_hostile.py)
    "self_kill": ("gradient.V", "the submission's process killed by SIGKILL"),
    "forged_frames": ("load", "something other than gradkit wrote to its result channel"),
    "fork_bomb": ("gradient.V", "raised PermissionError: [Errno 1] Operation not permitted"),
    "env_secrets": (None, ""),
    "imports_reference": ("policy", "GKP202"),
}

pytestmark = pytest.mark.skipif(user_venv.available() is not None,
                                reason=f"cannot run as an ordinary user: {user_venv.available()}")


class _Listener:
    """A TCP listener on 127.0.0.1 and an abstract unix socket: what reaches them."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(f"\0gradkit-test-{self.port}")
        self.unix.listen()
        for server in (self.tcp, self.unix):
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        threading.Thread(target=self._datagrams, daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                self.received.append(b"connection: " + connection.recv(1024))

    def _datagrams(self) -> None:
        while True:
            try:
                self.received.append(b"datagram: " + self.udp.recv(1024))
            except OSError:
                return

    def close(self) -> None:
        for s in (self.tcp, self.udp, self.unix):
            s.close()


def _digest(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@pytest.fixture(scope="session")
def venv() -> Path:
    return user_venv.user_venv()


@pytest.fixture(scope="module", params=["user namespace", "landlock"])
def graded(request, venv):
    """The class graded once as uid 65534, in each configuration: (mode, world, reports,
    targets before, targets after, listener, grade's output)."""
    mode = request.param
    prefix = () if mode == "user namespace" else (sys.executable, str(HERE / "no_userns.py"))
    world = Path(tempfile.mkdtemp(prefix="gradkit-iso-", dir="/tmp"))
    try:
        os.chmod(world, 0o755)
        home = user_venv.private_home(world)
        (home / "private.txt").write_text(PRIVATE + "\n")
        (home / ".bashrc").write_text("# the user's own\n")
        for path in home.iterdir():
            os.chown(path, user_venv.USER, user_venv.USER)
        folder = world / "class"
        folder.mkdir()
        listener = _Listener()
        shutil.copy(EXAMPLES / "correct.py", folder / "alice.py")
        (folder / "bob.py").write_text((EXAMPLES / "correct.py").read_text() + f"# {MARKER}\n")
        for name in ATTACKS + list(KEPT):
            text = (HOSTILE / f"{name}.py").read_text()
            for placeholder, value in (("__HOME__", str(home)), ("__PORT__", str(listener.port)),
                                       ("__CLASSMATE__", str(folder / "bob.py"))):
                text = text.replace(placeholder, value)
            (folder / f"{name}.py").write_text(text)
        for path in [folder, *folder.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        out = world / "out"
        out.mkdir()
        os.chown(out, user_venv.USER, user_venv.USER)
        package = Path(subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import gradkit.sandbox, os; "
             "print(os.path.dirname(os.path.dirname(gradkit.sandbox.__file__)))"],
            capture_output=True, text=True, check=True).stdout.strip())
        targets = [home / "private.txt", home / ".bashrc", package / "api.py",
                   package / "render" / "terminal.py", package / "sandbox" / "child.py",
                   package.parent / "gradkit-hostile.pth", venv / "bin" / "activate"]
        before = {path: _digest(path) for path in targets}
        result = user_venv.as_user([str(venv / "bin" / "gradkit"), "grade", str(folder),
                                    "--out", str(out), "--jobs", "2", "--timeout", "20"],
                                   home, cwd=world, prefix=prefix)
        after = {path: _digest(path) for path in targets}
        reports = {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}
        yield mode, world, home, reports, before, after, listener, result
        listener.close()
    finally:
        shutil.rmtree(world, ignore_errors=True)


def test_the_class_is_graded_and_correct_files_pass(graded):
    mode, _, _, reports, _, _, _, result = graded
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(reports) == sorted(["alice", "bob", *ATTACKS, *KEPT])
    for student in ("alice", "bob"):
        assert reports[student]["passed"], (student, reports[student]["checks"])
        assert reports[student]["error"] is None


def test_the_confinement_is_the_one_of_its_configuration(graded):
    mode, _, _, reports, _, _, _, _ = graded
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
    mode, _, home, reports, before, after, listener, _ = graded
    for path in before:
        assert after[path] == before[path], f"{path} was changed by a submission ({mode})"
    assert listener.received == []
    printed = {student: r["output"]["stdout"] + r["output"]["stderr"]
               for student, r in reports.items()}
    for student, text in printed.items():
        assert PRIVATE not in text, student
        assert SECRET not in text, student
        assert MARKER not in text, student
    assert "home read: []" in printed["reads_home"]
    assert "classmates found: []" in printed["reads_classmates"]
    assert "secrets found: []" in printed["reads_environment"]
    assert "stack bytes read:" in printed["reads_environment"]  # it did look
    assert "classmates found: []" in printed["scans_memory"]
    assert "keyring add refused: errno 1" in printed["keyring_note"]
    assert "sent to" not in printed["opens_socket"]
    for attack in ("reads_home", "writes_home", "reads_classmates", "opens_socket",
                   "reads_environment", "scans_memory", "keyring_note"):
        assert reports[attack]["passed"], (attack, reports[attack]["checks"])


def test_delegation_fails_with_the_policy_code(graded):
    _, _, _, reports, _, _, _, _ = graded
    for attack in DELEGATION:
        report = reports[attack]
        assert not report["passed"] and report["score"] == 0, attack
        policy = next(c for c in report["checks"] if c["id"] == "policy")
        assert policy["status"] == "fail" and "GKP203" in policy["message"], policy["message"]
    assert "importlib: reference" in _policy(reports["delegates_sys_modules"])
    assert "import: reference" in _policy(reports["delegates_gc"])
    assert "opening their files: " in _policy(reports["delegates_source"])
    assert "reference found: False" in reports["delegates_source"]["output"]["stdout"]


def _policy(report: dict) -> str:
    return next(c for c in report["checks"] if c["id"] == "policy")["message"]


def test_existing_attacks_keep_their_verdicts(graded):
    _, _, _, reports, _, _, _, _ = graded
    for attack, (check_id, words) in KEPT.items():
        report = reports[attack]
        if check_id is None:
            assert report["passed"], attack
            continue
        assert not report["passed"], attack
        check = next(c for c in report["checks"] if c["id"] == check_id)
        assert words in check["message"], (attack, check["message"])


def _keyring_note_of(user: int) -> int:
    """The id of a "gradkit-note" key in ``user``'s keyring, searched as that user; -1 if none."""
    code = ("import ctypes, platform; libc = ctypes.CDLL(None, use_errno=True); "
            "libc.syscall.restype = ctypes.c_long; "
            "n = {'x86_64': 250, 'aarch64': 219}[platform.machine()]; "
            "print(libc.syscall(ctypes.c_long(n), ctypes.c_long(10), ctypes.c_long(-4), "
            "b'user', b'gradkit-note', ctypes.c_long(0)))")
    result = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                             "/usr/bin/python3", "-c", code], capture_output=True, text=True,
                            check=True)
    return int(result.stdout)


def test_a_keyring_note_does_not_reach_the_next_run(graded, venv):
    mode, world, home, reports, _, _, _, _ = graded
    prefix = () if mode == "user namespace" else (sys.executable, str(HERE / "no_userns.py"))
    again = user_venv.as_user([str(venv / "bin" / "gradkit"), "check",
                               str(world / "class" / "keyring_note.py"), "--format", "json"],
                              home, cwd=world, prefix=prefix)
    report = json.loads(again.stdout)
    assert report["passed"]
    assert "keyring note found" not in report["output"]["stdout"]
    assert _keyring_note_of(user_venv.USER) == -1
