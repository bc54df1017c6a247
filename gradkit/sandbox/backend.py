"""What every sandbox backend offers, what it returns, and the one place that picks a backend.

A backend runs one request (the planned calls, as ``gradkit.plan`` builds them) in a process of
its own and returns a ``RunOutcome``: the result frames the child wrote, its logs, how it ended.
The backends:

- ``linux`` (``gradkit.sandbox.runner.Sandbox``): a pre-loaded worker forks each run and confines
  it with namespaces, a read-only view of the files, seccomp and rlimits;
- ``portable`` (``gradkit.sandbox.portable.PortableSandbox``): a fresh interpreter per run
  started with ``subprocess``, for macOS and Windows (wall-clock limits, rlimits where the
  platform has them, ``sandbox-exec`` on macOS).

``open_sandbox`` picks one by name (``auto``, ``linux``, ``portable``; ``$GRADKIT_SANDBOX``
when none is given) and the report records which one ran (``report.isolation.backend``).

Both backends read their result channel through ``RunTracker``: the frames must come in the
order the child harness writes them (``ResultOrder``), and it says when a run is overdue. This
module imports nothing that macOS or Windows lacks.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, runtime_checkable

from gradkit.sandbox import wire

#: the backends a user can name, ``auto`` first (the default)
BACKENDS = ("auto", "linux", "portable")
#: where ``open_sandbox`` reads the backend when none is named
ENVIRONMENT_VARIABLE = "GRADKIT_SANDBOX"
SHIMS = str(Path(__file__).parent.parent / "shims")
#: gradkit's folder: the child's watch tells the sandbox side (allowed) from the grading side
GRADKIT = str(Path(__file__).parent.parent)


def find_reference() -> tuple[Optional[str], str]:
    """The reference package's folder (found, not imported) and the source of its toy data,
    which the nn_helper shim serves: it reaches the child as data, the package stays out of
    view."""
    import importlib.util

    spec = importlib.util.find_spec("reference")
    folder = list(spec.submodule_search_locations or [None])[0] if spec else None
    source = ""
    if folder:
        try:
            source = (Path(folder) / "toy_data.py").read_text(encoding="utf-8")
        except OSError:
            pass
    return folder, source


@dataclass(frozen=True)
class Limits:
    """Resource limits of one submission run (documented in the README)."""

    load_seconds: float = 20.0  # wall clock for loading the file (a notebook runs its cells)
    call_seconds: float = 10.0  # wall clock for any one planned call
    total_seconds: float = 60.0  # wall clock for the whole run
    address_space: int = 3 << 30  # bytes of virtual memory (torch alone maps ~0.7 GB)
    file_size: int = 16 << 20  # bytes any one file the child writes may reach
    open_files: int = 256
    processes: int = 64  # only where RLIMIT_NPROC binds (not root)
    result_bytes: int = 64 << 20  # cap on everything sent back on the result pipe
    log_bytes: int = 64 << 10  # stdout and stderr kept, each
    workdir_bytes: int = 64 << 20  # size of the private working folder (where mounts allow)
    no_network: bool = True

    def for_child(self) -> dict[str, Any]:
        return {"cpu_seconds": int(self.total_seconds) + 5, "address_space": self.address_space,
                "file_size": self.file_size, "open_files": self.open_files,
                "processes": self.processes, "no_network": self.no_network,
                "workdir_bytes": self.workdir_bytes}


@dataclass
class RunOutcome:
    """What came back from one run: frames, logs, and how the child ended."""

    frames: list[wire.Frame] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    exit: dict[str, Any] = field(default_factory=dict)
    #: why the grader stopped the child, in words ("call 'batch5' ran past 10 s"), or None
    killed: Optional[str] = None
    #: a problem on the grader's side of the boundary (worker died, bad frame)
    fault: Optional[str] = None
    seconds: float = 0.0
    isolation: dict[str, Any] = field(default_factory=dict)
    #: the child sent its closing frame: every planned call was made
    finished: bool = False
    #: the planned call the run was in when it ended ("load" before loading finished, "done"
    #: after the last call): with ``call_timed_out``, what a resumed run can skip
    running: str = "load"
    #: the grader stopped the child because ``running`` ran past its own time limit
    call_timed_out: bool = False

    @property
    def exit_words(self) -> str:
        if "signal_name" in self.exit:
            return f"killed by {self.exit['signal_name']}"
        if "code" in self.exit:
            return f"exited with code {self.exit['code']}"
        return "did not report how it ended"

    @property
    def stopped(self) -> Optional[str]:
        """Why the run ended before making every planned call, in words; None if it did not."""
        if self.killed or self.fault:
            return self.killed or self.fault
        if self.exit.get("code") == 0 and self.finished:
            return None
        if self.exit.get("code") == 0:
            return ("the submission's process exited before it finished (does the file call "
                    "sys.exit or os._exit?)")
        return f"the submission's process {self.exit_words}"


@runtime_checkable
class SandboxBackend(Protocol):
    """What gradkit's grading code needs of a sandbox: run a request, and close.

    ``run`` always returns, within the limits plus a few seconds, whatever the submission does;
    a backend is a context manager that closes itself. ``name`` is what the report records.
    """

    name: str

    def run(self, request: dict[str, Any], payload: bytes, limits: Limits,
            call_ids: list[str]) -> RunOutcome: ...

    def close(self) -> None: ...

    def __enter__(self) -> "SandboxBackend": ...

    def __exit__(self, *exc: object) -> None: ...


class SandboxUnavailable(RuntimeError):
    """The backend asked for cannot run on this machine (the message says why)."""


def linux_unavailable() -> Optional[str]:
    """Why the ``linux`` backend cannot run here, in words; None if it can."""
    if not sys.platform.startswith("linux"):
        return f"it needs Linux, and this is {sys.platform}"
    if not hasattr(os, "fork"):
        return "this Python has no os.fork"
    try:
        import gradkit.sandbox.runner  # noqa: F401  (the worker, confinement, resource, ...)
    except ImportError as exc:
        return f"this Python cannot import what it needs ({exc})"
    return None


def resolve(name: Optional[str] = None) -> str:
    """The backend that runs: ``name``, else ``$GRADKIT_SANDBOX``, else ``auto``; ``auto`` is
    ``linux`` where that backend can run and ``portable`` elsewhere. Raises ``ValueError`` for
    a name that is not a backend."""
    name = name or os.environ.get(ENVIRONMENT_VARIABLE) or "auto"
    if name not in BACKENDS:
        raise ValueError(f"no sandbox backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "linux" if linux_unavailable() is None else "portable"
    return name


def available(name: Optional[str] = None) -> str:
    """``resolve(name)``, checked: raises ``SandboxUnavailable`` when that is ``linux`` and
    the ``linux`` backend cannot run here."""
    which = resolve(name)
    why_not = linux_unavailable() if which == "linux" else None
    if why_not is not None:
        raise SandboxUnavailable(f"the linux sandbox cannot run here: {why_not} (use --sandbox "
                                 "portable or auto)")
    return which


def open_sandbox(name: Optional[str] = None, *, hidden: Iterable[str] = (),
                 worker: Optional[tuple[int, Any]] = None) -> SandboxBackend:
    """Start the backend ``resolve(name)`` picks, ready to run submissions (start it early: the
    ``linux`` backend's worker imports torch while the caller does).

    ``hidden``: folders no run may see besides the defaults (the class folder, the output
    folder); the ``linux`` backend takes them out of view, the portable backend cannot.
    ``worker``: for the ``linux`` backend, the pid and socket of a worker already started by
    ``gradkit.sandbox.runner.start_worker`` (in this process or its parent), used instead of
    starting one. Raises ``SandboxUnavailable`` when ``linux`` is asked for where it cannot run.
    """
    if available(name) == "linux":
        from gradkit.sandbox.runner import Sandbox

        return Sandbox(hidden=hidden, worker=worker)
    from gradkit.sandbox.portable import PortableSandbox

    return PortableSandbox()


# --- shared by every backend: the child's working folder, logs, and its result channel ---------

def prepare_workdir(submission: Path, siblings: bool, max_bytes: int = 32 << 20) -> Path:
    """A temporary copy of the submission (and, if asked, its folder's small files)."""
    workdir = Path(tempfile.mkdtemp(prefix="gradkit-"))
    shutil.copy2(submission, workdir / submission.name)
    if siblings:
        budget = max_bytes
        for entry in sorted(submission.parent.iterdir()):
            if entry == submission or not entry.is_file() or entry.is_symlink():
                continue
            if entry.lstat().st_nlink > 1:  # a hard link: the same file as any other on the
                continue  # machine (/etc/shadow), which the grader may read and the run may not
            size = entry.stat().st_size
            if size > budget or entry.suffix in (".ipynb",):
                continue
            budget -= size
            shutil.copy2(entry, workdir / entry.name)
    return workdir


class CappedLog:
    """The first ``cap`` bytes of a stream, and how many more were dropped."""

    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.dropped = cap, bytearray(), 0

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class ResultOrder:
    """The order a child writes its frames in; anything else was written by the submission."""

    def __init__(self, call_ids: list[str]) -> None:
        self.order = {call_id: index for index, call_id in enumerate(call_ids)}
        self.state = "start"  # start, isolation, load, call <index>, done
        self.last_call = -1
        self.budget = wire.Budget()  # what this run's frames may make the grader rebuild

    def accept(self, frame: wire.Frame) -> str:
        """The frame's type if it comes where it should; raises ``wire.WireError`` if not."""
        kind = wire.check_frame(frame, self.budget)
        expected = {"start": ("isolation",), "isolation": ("load",),
                    "load": ("call", "done"), "call": ("call", "done"), "done": ()}[self.state]
        if kind not in expected:
            raise wire.WireError(f"a {kind} frame came after the {self.state} frame")
        if kind == "call":
            index = self.order.get(frame.header["id"], -1)
            if index <= self.last_call:
                raise wire.WireError(f"call frame {frame.header['id'][:40]!r} is not the next "
                                     "planned call")
            self.last_call = index
        self.state = kind
        return kind


class RunTracker:
    """One run's result channel as it arrives, and its deadlines.

    ``feed`` takes the bytes of the result channel and records every frame in ``outcome``;
    ``overdue`` says when the run must be stopped. Both return the reason to stop it, in the
    words a student reads, or None. A frame out of order means the submission wrote to the
    result channel itself: none of the run's frames then count.
    """

    def __init__(self, outcome: RunOutcome, request: dict[str, Any], limits: Limits,
                 call_ids: list[str], started: float,
                 startup_seconds: Optional[float] = None) -> None:
        """``startup_seconds``: for a backend whose child needs time before the submission's
        code can run (a fresh interpreter importing torch), how long it may take to send its
        first frame; the run's own limits then count from that frame. None: they count from
        ``started``."""
        self.outcome = outcome
        self.limits = limits
        self.call_ids = list(call_ids)
        self.reader = wire.FrameReader()
        self.order = ResultOrder(call_ids)
        self.received = 0
        self.closed = False  # the channel is no longer read (over its cap, or forged)
        # which function each call needs: the child skips the calls of a function it lacks
        train, predict = request.get("functions") or ("train_neural_net", "neural_net_predict")
        self.needs = {call.get("id"): predict if call.get("kind") == "predict"
                      else train for call in request.get("calls") or []}
        self.startup_seconds = startup_seconds
        if startup_seconds is None:
            self._start_limits(started)
        else:  # until the child is ready, only its start is timed
            self.waiting_for = "start"
            self.frame_deadline = self.total_deadline = started + startup_seconds

    def _start_limits(self, now: float) -> None:
        # deadline for the next frame: loading first, then each call in turn
        self.waiting_for = "load"
        self.frame_deadline = now + self.limits.load_seconds
        self.total_deadline = now + self.limits.total_seconds

    @property
    def deadline(self) -> float:
        return min(self.frame_deadline, self.total_deadline)

    def overdue(self, now: float) -> Optional[str]:
        """Why the run must stop now (a limit ran out), or None."""
        limits = self.limits
        if self.waiting_for == "start":
            if now > self.frame_deadline:
                return f"the submission's process did not start within {self.startup_seconds:g} s"
            return None
        if now > self.total_deadline:
            return f"the whole run took longer than {limits.total_seconds:g} s"
        if now > self.frame_deadline:
            what = "loading the file" if self.waiting_for == "load" else \
                f"call '{self.waiting_for}'"
            limit = limits.load_seconds if self.waiting_for == "load" else limits.call_seconds
            if self.outcome.killed is None:
                self.outcome.call_timed_out = True
            return f"{what} ran past its {limit:g} s limit"
        return None

    def feed(self, chunk: bytes, now: float) -> Optional[str]:
        """Read ``chunk`` of the result channel; the reason to stop the run, or None."""
        if self.closed:
            return None
        outcome = self.outcome
        self.received += len(chunk)
        if self.received > self.limits.result_bytes:
            self.closed = True
            return f"it sent back more than {self.limits.result_bytes >> 20} MiB of results"
        try:
            frames = self.reader.feed(chunk)
            kinds = [self.order.accept(frame) for frame in frames]
        except wire.WireError as exc:
            self.closed = True
            outcome.frames.clear()
            outcome.finished = False
            return (f"something other than gradkit wrote to its result channel, so no result "
                    f"of this run counts ({exc})")
        for frame, kind in zip(frames, kinds):
            if kind == "isolation":
                outcome.isolation = {k: v for k, v in frame.header.items()
                                     if k not in ("type", "payload")}
                if self.waiting_for == "start":
                    self._start_limits(now)
                continue
            if kind == "done":
                outcome.finished = True
                continue
            outcome.frames.append(frame)
            if kind == "load":
                usable = {name for name, state in (frame.header.get("functions") or {}).items()
                          if state == "ok"}
                self.call_ids = [c for c in self.call_ids
                                 if self.needs.get(c) in usable or c not in self.needs]
            done = {f.header.get("id") for f in outcome.frames if f.header.get("type") == "call"}
            remaining = [c for c in self.call_ids if c not in done]
            self.waiting_for = remaining[0] if remaining else "done"
            self.frame_deadline = now + self.limits.call_seconds * (
                3 if self.waiting_for == "training_loop" else 1)
        return None

    def finish(self, logs: dict[str, CappedLog]) -> None:
        """Record where the run was and what it printed."""
        outcome = self.outcome
        outcome.running = "load" if self.waiting_for == "start" else self.waiting_for
        outcome.stdout, outcome.stdout_dropped = logs["stdout"].text(), logs["stdout"].dropped
        outcome.stderr, outcome.stderr_dropped = logs["stderr"].text(), logs["stderr"].dropped
