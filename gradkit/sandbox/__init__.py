"""Running a submission in isolation: everything on both sides of the boundary.

The grader's side is ``runner`` (``Sandbox``: one pre-loaded worker, wall-clock limits, result
frames checked on arrival). The worker (``worker``) forks the submission's process, which confines
itself (``confine``: namespaces, mounts, privileges, rlimits, the system-call filter) and then runs
the child harness (``child``: load the file, make the planned calls, send plain data back). What
crosses the boundary is described by ``wire``; nothing else does.
"""

from gradkit.sandbox.runner import ForkedProcess, Limits, RunOutcome, Sandbox, prepare_workdir

__all__ = ["ForkedProcess", "Limits", "RunOutcome", "Sandbox", "prepare_workdir"]
