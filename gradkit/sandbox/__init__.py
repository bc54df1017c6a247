"""Running a submission in isolation: everything on both sides of the boundary.

``backend`` says what every sandbox backend offers (``run``, ``close``), what a run returns
(``RunOutcome``) and picks one by name (``open_sandbox``: ``auto``, ``linux``, ``portable``).

The ``linux`` backend's grader side is ``runner`` (``Sandbox``: one pre-loaded worker, wall-clock
limits, result frames checked on arrival). The worker (``worker``) forks the submission's
process, which confines itself (``confine``: namespaces, mounts, privileges, rlimits, the
system-call filter). The ``portable`` backend (``portable``) starts a fresh interpreter per run
instead, for macOS and Windows. Either way the child harness (``child``: load the file, make the
planned calls, send plain data back) runs in the submission's process, and what crosses the
boundary is described by ``wire``; nothing else does.

Importing this package imports nothing that macOS or Windows lacks; ``Sandbox`` and
``ForkedProcess`` (Linux and POSIX only) are imported when first used.
"""

from gradkit.sandbox.backend import (BACKENDS, Limits, RunOutcome, SandboxBackend,
                                     SandboxUnavailable, open_sandbox, prepare_workdir)

__all__ = ["BACKENDS", "ForkedProcess", "Limits", "RunOutcome", "Sandbox", "SandboxBackend",
           "SandboxUnavailable", "open_sandbox", "prepare_workdir"]


def __getattr__(name: str):
    if name in ("Sandbox", "ForkedProcess"):
        from gradkit.sandbox import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'gradkit.sandbox' has no attribute {name!r}")
