"""Shared fixtures: one sandbox for the whole session, and the real CLI.

The sandbox is the backend ``GRADKIT_SANDBOX`` names (``auto`` when unset), so the same tests run
against each backend: ``GRADKIT_SANDBOX=portable python -m pytest ...``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

# CI explores the same examples every run (a red build is then reproducible); locally, hypothesis
# searches afresh each time. Tests' own settings (example counts, deadlines) still apply.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from gradkit.sandbox import SandboxBackend, open_sandbox
from gradkit.sandbox.backend import resolve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "submissions_example"


#: the backend the suite runs on (tests whose expectations differ between backends read it)
BACKEND = resolve()


class _SharedSandbox:
    """The session's sandbox, handed to the CLI; the CLI's close() leaves it running."""

    def __init__(self, sandbox: SandboxBackend) -> None:
        self._sandbox = sandbox
        self.name = sandbox.name

    def run(self, *args, **kwargs):
        return self._sandbox.run(*args, **kwargs)

    def close(self) -> None:
        pass


def share(monkeypatch, sandbox: SandboxBackend) -> None:
    """Make ``gradkit.sandbox.open_sandbox`` (what the CLI calls) hand out ``sandbox`` when the
    backend asked for is its backend, and open the one asked for otherwise."""
    import gradkit.sandbox

    def opened(name=None, **options):
        if resolve(name) == sandbox.name:
            return _SharedSandbox(sandbox)
        return open_sandbox(name, **options)

    monkeypatch.setattr(gradkit.sandbox, "open_sandbox", opened)


def processes_left(sandbox: SandboxBackend) -> list[int]:
    """The processes of ``sandbox``'s past runs that are still there, where a test can see them:
    for ``linux``, the worker's children; for ``portable`` on a machine with /proc, every
    process whose environment names a run's working folder as its home (a run's processes keep
    the environment the backend gave them, wherever they moved). [] where neither can be seen."""
    if sandbox.name == "linux":
        from gradkit.sandbox.worker import children_of

        return children_of(sandbox.worker_pid)
    if not os.path.isdir("/proc"):
        return []
    home = ("HOME=" + os.path.join(tempfile.gettempdir(), "gradkit-")).encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environment = f.read().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(home) for v in environment):
            found.append(int(entry))
    return found


def sandbox_alive(sandbox: SandboxBackend) -> bool:
    """Whether the sandbox can still grade: its worker is alive (``linux``); the portable
    backend has no process of its own between runs."""
    return sandbox.name != "linux" or sandbox.worker_alive


@pytest.fixture(scope="session")
def sandbox():
    """One sandbox shared by every test that grades: for ``linux``, one worker process (torch
    imported once); the backend is ``$GRADKIT_SANDBOX``'s, else auto's."""
    with open_sandbox() as shared:
        yield shared


@pytest.fixture
def gradkit_cli(sandbox, monkeypatch):
    """Run ``gradkit ARGS...`` through click, with the session's sandbox; stdout and stderr apart."""
    share(monkeypatch, sandbox)
    # a terminal wide enough that no file:line is wrapped, wherever the clone's paths lead
    monkeypatch.setenv("COLUMNS", "240")

    def run(*args: str) -> Result:
        from gradkit.cli import main

        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture
def check_json(gradkit_cli):
    """``gradkit check PATH --format json``, parsed, with the exit code."""

    def run(path, *options: str) -> tuple[dict, int]:
        result = gradkit_cli("check", path, "--format", "json", *options)
        return json.loads(result.stdout), result.exit_code

    return run
