"""A venv an unprivileged user can run gradkit from, and a way to run it as that user.

CI and this project's machines run as root, whose Python (under /root) an ordinary user cannot
read. ``user_venv()`` builds, once per source tree, a venv of the system's own Python
(/usr/bin/python3) in a folder of mode 755 under /tmp with torch and a (non-editable) copy of this
worktree installed; ``as_user()`` runs a command in it as uid/gid 65534 with a private home of that
user. Used by tests/test_isolation_user.py and bench/run.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
TORCH = "torch==2.13.0"
USER = 65534


def _source_digest() -> str:
    digest = hashlib.sha256()
    for folder in ("gradkit", "reference"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    return digest.hexdigest()[:16]


def available() -> Optional[str]:
    """Why ``user_venv`` cannot work here, or None."""
    if os.geteuid() != 0:
        return "needs root (to become uid 65534)"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"no {SYSTEM_PYTHON}"
    if shutil.which("setpriv") is None:
        return "no setpriv"
    return None


def user_venv() -> Path:
    """The venv's folder: /tmp/gradkit-user-venv-<python and torch>, with this source tree
    installed (reinstalled when the source changed). Built on first use (a minute or two)."""
    python = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version)"],
                            capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256((python + TORCH).encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"gradkit-user-venv-{key}"
    old_umask = os.umask(0o022)
    try:
        if not (venv / ".torch-installed").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", TORCH], check=True)
            (venv / ".torch-installed").write_text(TORCH)
        source = _source_digest()
        marker = venv / ".gradkit-source"
        if not marker.exists() or marker.read_text() != source:
            with tempfile.TemporaryDirectory() as copy:
                tree = Path(copy) / "gradkit-src"
                shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
                    ".venv", ".git", "*.egg-info", "build", "__pycache__", "tests", "bench"))
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir",
                                "--force-reinstall", "--no-deps", str(tree)], check=True)
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(tree)],
                               check=True)
            marker.write_text(source)
        os.chmod(venv, 0o755)
    finally:
        os.umask(old_umask)
    return venv


def private_home(parent: Path) -> Path:
    """A home of uid 65534 (mode 700) inside ``parent``."""
    home = parent / "home"
    home.mkdir(mode=0o700)
    os.chown(home, USER, USER)
    return home


def as_user(command: list[str], home: Path, *, cwd: Optional[Path] = None,
            timeout: float = 600, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``command`` as uid/gid 65534 with no supplementary groups, HOME=``home`` and a minimal
    environment; ``prefix`` goes before setpriv (a wrapper that refuses user namespaces)."""
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "GRADKIT_TEST_SECRET": "user-secret-3f9a"}
    return subprocess.run([*prefix, "setpriv", f"--reuid={USER}", f"--regid={USER}",
                           "--clear-groups", *command], env=env, cwd=str(cwd or home),
                          capture_output=True, text=True, timeout=timeout)
