"""Shared fixtures: one pre-loaded sandbox worker for the whole session, and the real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

# CI explores the same examples every run (a red build is then reproducible); locally, hypothesis
# searches afresh each time. Tests' own settings (example counts, deadlines) still apply.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from gradkit.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "submissions_example"


class _SharedSandbox:
    """The session's sandbox, handed to the CLI; the CLI's close() leaves it running."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def run(self, *args, **kwargs):
        return self._sandbox.run(*args, **kwargs)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def sandbox():
    """One worker process (torch imported once) shared by every test that grades."""
    with Sandbox() as shared:
        yield shared


@pytest.fixture
def gradkit_cli(sandbox, monkeypatch):
    """Run ``gradkit ARGS...`` through click, with the session's sandbox; stdout and stderr apart."""
    import gradkit.sandbox

    monkeypatch.setattr(gradkit.sandbox, "Sandbox", lambda **options: _SharedSandbox(sandbox))
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
