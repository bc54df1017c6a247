"""The class of attack files that tests/test_isolation.py (as root) and
tests/test_isolation_user.py (as an ordinary user) grade, and what they assert about it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).parent
HOSTILE = HERE / "data" / "hostile"
EXAMPLES = HERE.parent / "submissions_example"
SECRET = "user-secret-3f9a"  # in the grading user's environment (user_venv.as_user)
MARKER = "classmate-marker-bob-91c2"
PRIVATE = "private-user-data-55e1"
#: attack files graded in the class, and the existing ones that must keep their verdicts there
ATTACKS = ["reads_home", "writes_home", "writes_install", "reads_classmates", "opens_socket",
           "reads_environment", "scans_memory", "keyring_note", "delegates_sys_modules",
           "delegates_gc", "delegates_source", "shared_memory"]
DELEGATION = ["delegates_sys_modules", "delegates_gc", "delegates_source", "writes_install"]
KEPT = {  # existing attack: check id, words of its message (as in tests/test_hostile.py)
    "self_kill": ("gradient.V", "the submission's process killed by SIGKILL"),
    "forged_frames": ("load", "something other than gradkit wrote to its result channel"),
    "fork_bomb": ("gradient.V", "raised PermissionError: [Errno 1] Operation not permitted"),
    "env_secrets": (None, ""),
    "imports_reference": ("policy", "GKP202"),
}


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


class World:
    """A folder of mode 755 under /tmp: a private home of the grading user (``owner``) with a
    private file and a .bashrc, a class folder (two correct files, the attack files with their
    placeholders filled in, the existing attacks of ``KEPT``), an output folder, a listener."""

    def __init__(self, owner: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gradkit-iso-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.home = self.root / "home"
        self.home.mkdir(mode=0o700)
        (self.home / "private.txt").write_text(PRIVATE + "\n")
        (self.home / ".bashrc").write_text("# the user's own\n")
        for path in [self.home, *self.home.iterdir()]:
            os.chown(path, owner, owner)
        self.folder = self.root / "class"
        self.folder.mkdir()
        self.listener = _Listener()
        shutil.copy(EXAMPLES / "correct.py", self.folder / "alice.py")
        (self.folder / "bob.py").write_text((EXAMPLES / "correct.py").read_text()
                                            + f"# {MARKER}\n")
        for name in ATTACKS + list(KEPT):
            text = (HOSTILE / f"{name}.py").read_text()
            for placeholder, value in (("__HOME__", str(self.home)),
                                       ("__PORT__", str(self.listener.port)),
                                       ("__CLASSMATE__", str(self.folder / "bob.py"))):
                text = text.replace(placeholder, value)
            (self.folder / f"{name}.py").write_text(text)
        for path in [self.folder, *self.folder.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        self.out = self.root / "out"
        self.out.mkdir()
        os.chown(self.out, owner, owner)

    def targets(self, package: Path, venv: Path) -> list[Path]:
        """What the attacks aim at: the home's files, gradkit's installed package, the venv."""
        return [self.home / "private.txt", self.home / ".bashrc", package / "api.py",
                package / "render" / "terminal.py", package / "sandbox" / "child.py",
                package.parent / "gradkit-hostile.pth", venv / "bin" / "activate"]

    def reports(self) -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in (self.out / "reports").glob("*.json")}

    def close(self) -> None:
        self.listener.close()
        shutil.rmtree(self.root, ignore_errors=True)


def digest(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def keyring_note_of(user: int) -> int:
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


def policy_message(report: dict) -> str:
    return next(c for c in report["checks"] if c["id"] == "policy")["message"]


def assert_no_attack_reached_its_target(reports: dict[str, dict], before: dict, after: dict,
                                        listener: "_Listener", secret: str) -> None:
    for path in before:
        assert after[path] == before[path], f"{path} was changed by a submission"
    assert listener.received == []
    printed = {student: r["output"]["stdout"] + r["output"]["stderr"]
               for student, r in reports.items()}
    for student, text in printed.items():
        assert PRIVATE not in text, student
        assert secret not in text, student
        assert MARKER not in text, student
    assert "home read: []" in printed["reads_home"]
    assert "classmates found: []" in printed["reads_classmates"]
    assert "secrets found: []" in printed["reads_environment"]
    assert "stack bytes read:" in printed["reads_environment"]  # it did look
    assert "classmates found: []" in printed["scans_memory"]
    assert "keyring add refused: errno 1" in printed["keyring_note"]
    assert "sent to" not in printed["opens_socket"]
    assert "sysv shm refused: errno 1" in printed["shared_memory"]
    assert "posix shm refused" in printed["shared_memory"]
    assert not Path("/dev/shm/gradkit-hostile-note").exists()
    with open("/proc/sysvipc/shm") as segments:  # (the key, in decimal, is the first column)
        assert str(0x6B1D) not in [line.split()[0] for line in segments.readlines()[1:]]
    for attack in ("reads_home", "writes_home", "reads_classmates", "opens_socket",
                   "reads_environment", "scans_memory", "keyring_note", "shared_memory"):
        assert reports[attack]["passed"], (attack, reports[attack]["checks"])


def assert_delegation_fails_with_the_policy_code(reports: dict[str, dict]) -> None:
    for attack in DELEGATION:
        report = reports[attack]
        assert not report["passed"] and report["score"] == 0, attack
        policy = next(c for c in report["checks"] if c["id"] == "policy")
        assert policy["status"] == "fail" and "GKP203" in policy["message"], policy["message"]
    assert "importlib: reference" in policy_message(reports["delegates_sys_modules"])
    assert "import: reference" in policy_message(reports["delegates_gc"])
    assert "opening their files: " in policy_message(reports["delegates_source"])
    assert "reference found: False" in reports["delegates_source"]["output"]["stdout"]


def assert_existing_attacks_keep_their_verdicts(reports: dict[str, dict]) -> None:
    for attack, (check_id, words) in KEPT.items():
        report = reports[attack]
        if check_id is None:
            assert report["passed"], attack
            continue
        assert not report["passed"], attack
        check = next(c for c in report["checks"] if c["id"] == check_id)
        assert words in check["message"], (attack, check["message"])
