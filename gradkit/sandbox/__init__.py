"""Running a submission in isolation: everything on both sides of the boundary.

``backend`` says what every sandbox backend offers (``run``, ``close``), what a run returns
(``RunOutcome``) and picks one by name (``open_sandbox``: ``auto``, ``linux``, ``portable``).

The ``linux`` backend's grader side is ``runner`` (``Sandbox``: one pre-loaded worker, wall-clock
limits, result frames checked on arrival). The worker (``worker``) is a fresh interpreter started
by ``boot`` with a minimal environment; it forks the submission's process, which confines itself
(``confine``: namespaces, mounts, privileges, rlimits, the system-call filter). The ``portable``
backend (``portable``) starts a fresh interpreter per run instead (also through ``boot``), for
macOS and Windows. Either way the child harness (``child``: load the file, make the planned
calls, send plain data back) runs in the submission's process, and what crosses the boundary is
described by ``wire``; nothing else does.

The names below are imported on first use, so the submission's process, which imports
``gradkit.sandbox.child``, never loads the grader's side (``runner``), and importing this package
imports nothing that macOS or Windows lacks (``Sandbox`` and ``ForkedProcess`` are Linux's).
"""

#: where each public name lives
_HOMES = {"BACKENDS": "backend", "Limits": "backend", "RunOutcome": "backend",
          "SandboxBackend": "backend", "SandboxUnavailable": "backend",
          "open_sandbox": "backend", "prepare_workdir": "backend",
          "ForkedProcess": "runner", "Sandbox": "runner"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"gradkit.sandbox.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'gradkit.sandbox' has no attribute {name!r}")
