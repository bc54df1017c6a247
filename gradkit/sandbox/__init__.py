"""Running a submission in isolation: everything on both sides of the boundary.

The grader's side is ``runner`` (``Sandbox``: one pre-loaded worker, wall-clock limits, result
frames checked on arrival). The worker (``worker``) is a fresh interpreter started by ``boot``
with a minimal environment; it forks the submission's process, which confines itself
(``confine``: namespaces, mounts, privileges, rlimits, the system-call filter) and then runs the
child harness (``child``: load the file, make the planned calls, send plain data back). What
crosses the boundary is described by ``wire``; nothing else does.

The names below are imported on first use, so the submission's process, which imports
``gradkit.sandbox.child``, never loads the grader's side (``runner``).
"""

__all__ = ["ForkedProcess", "Limits", "RunOutcome", "Sandbox", "prepare_workdir"]


def __getattr__(name: str):
    if name in __all__:
        from gradkit.sandbox import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'gradkit.sandbox' has no attribute {name!r}")
