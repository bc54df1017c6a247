"""Running a submission in isolation: the grader's side of the boundary.

``Sandbox`` owns one pre-loaded worker process (``gradkit._zygote``) and runs one submission at a
time in a child the worker forks. The grader keeps the read ends of three pipes (results, stdout,
stderr), enforces the wall-clock limits itself and kills the child's whole process group with
SIGKILL when one runs out. It stops waiting as soon as the worker reports the child gone, so a
grandchild that escaped the group and holds a pipe open cannot keep it waiting.

This module never imports torch and never unpickles: results are ``wire`` frames of plain data.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from gradkit import wire
from gradkit._zygote import LENGTH

SHIMS = str(Path(__file__).parent / "shims")


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
    no_network: bool = True

    def for_child(self) -> dict[str, Any]:
        return {"cpu_seconds": int(self.total_seconds) + 5, "address_space": self.address_space,
                "file_size": self.file_size, "open_files": self.open_files,
                "processes": self.processes, "no_network": self.no_network}


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

    @property
    def exit_words(self) -> str:
        if "signal_name" in self.exit:
            return f"killed by {self.exit['signal_name']}"
        if "code" in self.exit:
            return f"exited with code {self.exit['code']}"
        return "did not report how it ended"


class _Log:
    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.dropped = cap, bytearray(), 0

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def prepare_workdir(submission: Path, siblings: bool, max_bytes: int = 32 << 20) -> Path:
    """A temporary copy of the submission (and, if asked, its folder's small files)."""
    workdir = Path(tempfile.mkdtemp(prefix="gradkit-"))
    shutil.copy2(submission, workdir / submission.name)
    if siblings:
        budget = max_bytes
        for entry in sorted(submission.parent.iterdir()):
            if entry == submission or not entry.is_file() or entry.is_symlink():
                continue
            size = entry.stat().st_size
            if size > budget or entry.suffix in (".ipynb",):
                continue
            budget -= size
            shutil.copy2(entry, workdir / entry.name)
    return workdir


class Sandbox:
    """One pre-loaded worker; ``run`` grades one submission at a time in a fresh child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from gradkit._zygote import main; "
             "main(int(sys.argv[1]))", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        theirs.close()
        self._sock = ours

    def close(self) -> None:
        """Stop the worker. It holds no state, so SIGKILL it rather than wait ~0.5 s for an
        interpreter with torch loaded to shut down."""
        try:
            self._sock.close()
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, request: dict[str, Any], payload: bytes, limits: Limits,
            call_ids: list[str]) -> RunOutcome:
        with self._lock:
            if self._proc.poll() is not None:
                self._start()
            outcome = self._run(request, payload, limits, call_ids)
            if outcome.fault and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            return outcome

    def _run(self, request: dict[str, Any], payload: bytes, limits: Limits,
             call_ids: list[str]) -> RunOutcome:
        outcome = RunOutcome()
        started = time.monotonic()
        request = {**request, "limits": limits.for_child(), "shims": SHIMS}
        message = wire.pack(request, payload)
        pipes = [os.pipe() for _ in range(3)]
        try:
            socket.send_fds(self._sock, [LENGTH.pack(len(message))], [w for _, w in pipes])
            self._sock.sendall(message)
        except OSError as exc:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            outcome.fault = f"the grader's worker could not take the submission: {exc}"
            return outcome
        for _, w in pipes:
            os.close(w)
        readers = {pipes[0][0]: "result", pipes[1][0]: "stdout", pipes[2][0]: "stderr"}
        try:
            self._collect(outcome, readers, limits, call_ids, started)
        finally:
            for fd in readers:
                os.close(fd)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _collect(self, outcome: RunOutcome, readers: dict[int, str], limits: Limits,
                 call_ids: list[str], started: float) -> None:
        logs = {"stdout": _Log(limits.log_bytes), "stderr": _Log(limits.log_bytes)}
        buffer, received = b"", 0
        pid: Optional[int] = None
        worker = b""
        selector = selectors.DefaultSelector()
        for fd, name in readers.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, name)
        selector.register(self._sock, selectors.EVENT_READ, "worker")
        # deadline for the next frame: loading first, then each call in turn
        waiting_for = "load"
        frame_deadline = started + limits.load_seconds
        total_deadline = started + limits.total_seconds
        exited_at: Optional[float] = None
        open_pipes = set(readers)

        def kill(reason: str) -> None:
            if outcome.killed is None:
                outcome.killed = reason
            if pid is not None:
                for target in (lambda: os.killpg(pid, signal.SIGKILL),
                               lambda: os.kill(pid, signal.SIGKILL)):
                    try:
                        target()
                    except (ProcessLookupError, PermissionError):
                        pass

        while True:
            now = time.monotonic()
            if exited_at is not None and (not open_pipes or now > exited_at + 0.2):
                break
            if exited_at is None:
                if now > total_deadline:
                    kill(f"the whole run took longer than {limits.total_seconds:g} s")
                elif now > frame_deadline:
                    what = ("loading the file" if waiting_for == "load"
                            else f"call '{waiting_for}'")
                    limit = limits.load_seconds if waiting_for == "load" else limits.call_seconds
                    kill(f"{what} ran past its {limit:g} s limit")
                if outcome.killed and now > max(frame_deadline, started) + 10:
                    outcome.fault = "the submission's process could not be stopped"
                    return
            timeout = 0.05 if exited_at is not None or outcome.killed else \
                max(0.0, min(frame_deadline, total_deadline) - now) + 0.01
            for key, _ in selector.select(timeout):
                name = key.data
                if name == "worker":
                    try:
                        chunk = self._sock.recv(65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        outcome.fault = "the grader's worker stopped (was it killed?)"
                        kill("the grader's worker stopped")
                        selector.unregister(self._sock)
                        exited_at = exited_at or time.monotonic()
                        continue
                    worker += chunk
                    frames, worker = wire.unpack_stream(worker)
                    for frame in frames:
                        if "pid" in frame.header:
                            pid = frame.header["pid"]
                        if "exit" in frame.header:
                            outcome.exit = frame.header["exit"]
                            exited_at = time.monotonic()
                    continue
                fd = key.fd
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    open_pipes.discard(fd)
                    continue
                if name != "result":
                    logs[name].feed(chunk)
                    continue
                received += len(chunk)
                if received > limits.result_bytes:
                    kill(f"it sent back more than {limits.result_bytes >> 20} MiB of results")
                    selector.unregister(fd)
                    open_pipes.discard(fd)
                    continue
                buffer += chunk
                try:
                    frames, buffer = wire.unpack_stream(buffer)
                except wire.WireError as exc:
                    kill(f"it sent a malformed result frame ({exc})")
                    selector.unregister(fd)
                    open_pipes.discard(fd)
                    continue
                for frame in frames:
                    kind = frame.header.get("type")
                    if kind == "isolation":
                        outcome.isolation = {k: v for k, v in frame.header.items()
                                             if k not in ("type", "payload")}
                        continue
                    outcome.frames.append(frame)
                    if kind == "load" or kind == "call":
                        done = [f.header.get("id") for f in outcome.frames
                                if f.header.get("type") == "call"]
                        remaining = [c for c in call_ids if c not in done]
                        waiting_for = remaining[0] if remaining else "done"
                        frame_deadline = time.monotonic() + (
                            limits.call_seconds * (3 if waiting_for == "training_loop" else 1))
        selector.close()
        if pid is not None and exited_at is not None:
            # a grandchild that escaped waiting: stop the group all the same
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        outcome.stdout, outcome.stdout_dropped = logs["stdout"].text(), logs["stdout"].dropped
        outcome.stderr, outcome.stderr_dropped = logs["stderr"].text(), logs["stderr"].dropped
