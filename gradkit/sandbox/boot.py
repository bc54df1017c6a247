"""The entry point of every sandbox process that starts as a fresh interpreter.

    python -s -P <this file> worker FD
    python -s -P <this file> workers FD
    python -s -P <this file> portable CHANNEL

``command(role, *args)`` builds that line and ``environment()`` the minimal environment it runs
in (of the grader's, only PATH and the locale; one OpenMP thread). Run as a script, the
file makes ``gradkit`` a bare package whose ``__init__`` (which imports the grader's API) never
runs, then hands over to the role's module: the process holds ``gradkit.sandbox``'s modules and
what they import (torch, numpy), nothing of the grading, diagnosis or rendering side, and nothing
of the reference. A new role (a portable child, say) is one more branch in ``_main``.
"""

from __future__ import annotations

import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
#: the only variables a sandbox process starts with
BASE_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
#: no user site folder, no script folder on ``sys.path`` (``-P`` is Python 3.11's; on 3.10
#: ``install_package`` drops the script's folder). Not ``-I``: its ``-E`` would ignore
#: PYTHONHASHSEED, and string hashes (a set's order) would differ from one run to the next.
#: ``environment()`` is the whole environment, so no other PYTHON* variable reaches the process.
FLAGS = ("-s", "-P") if sys.version_info >= (3, 11) else ("-s",)


def command(role: str, *args: str) -> list[str]:
    """The command line that starts a sandbox process of ``role`` ("worker"): ``FLAGS``, and the
    environment of ``environment()`` (no PYTHON* variable but a fixed hash seed)."""
    return [sys.executable, *FLAGS, os.path.join(HERE, "boot.py"), role, *args]


#: the grader's variables a sandbox process keeps (where programs are, the locale): no others
KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE")


def environment() -> dict[str, str]:
    """The environment a sandbox process starts with: ``BASE_ENVIRONMENT`` with the grader's
    ``KEPT_VARIABLES``, and nothing else (no token, no home, no PYTHON* variable of the
    grader's; the hash seed is gradkit's, so a submission's set order is the same every run)."""
    return {**BASE_ENVIRONMENT, **{name: os.environ[name] for name in KEPT_VARIABLES
                                  if name in os.environ}}


def install_package() -> None:
    """``gradkit`` as a bare package over its folder: its submodules import, its ``__init__``
    does not run."""
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == HERE:
        del sys.path[0]  # (Python < 3.11 puts the script's folder first even with -I or -P)
    package = types.ModuleType("gradkit", "gradkit's sandbox side only (see gradkit/sandbox/"
                                          "boot.py)")
    package.__path__ = [os.path.dirname(HERE)]
    package.__package__ = "gradkit"
    sys.modules["gradkit"] = package


def _main(argv: list[str]) -> None:
    install_package()
    role = argv[1] if len(argv) > 1 else ""
    if role == "worker":
        from gradkit.sandbox.worker import main

        main(int(argv[2]))
    elif role == "workers":  # a source of workers (gradkit grade): one forked per request
        from gradkit.sandbox.worker import fork_workers

        fork_workers(int(argv[2]))
    elif role == "portable":  # one run of the portable backend: its result channel
        from gradkit.sandbox.portable import serve_run

        serve_run(argv[2])
    else:
        raise SystemExit(f"gradkit sandbox: unknown role {role!r}")


if __name__ == "__main__":
    _main(sys.argv)
