"""Running a submission in isolation: the grader's side of the boundary.

``Sandbox`` owns one pre-loaded worker process (``gradkit.sandbox.worker``) and runs one submission at a
time in processes the worker forks (see there for what confines them). The grader keeps the read
ends of three pipes (results, stdout, stderr), enforces the wall-clock limits itself and kills the
run's whole process group with SIGKILL when one runs out. It stops waiting as soon as the worker
reports the run over, so a process that escaped the group and holds a pipe cannot keep it waiting;
every wait has a deadline, and a worker that died is started again.

Results are trusted only as far as they are checked: every frame must have the shape
``wire.check_frame`` describes and come in the order the child writes them (isolation, load, one
frame per planned call in plan order, done). A frame out of that order means the submission wrote
to the result pipe itself; the run is then stopped and none of its frames count. stdout and stderr
are logs, capped, never parsed. This module never imports torch and never unpickles anything.
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

from gradkit.sandbox import wire
from gradkit.sandbox.worker import LENGTH

SHIMS = str(Path(__file__).parent.parent / "shims")


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


class _Protocol:
    """The order a child writes its frames in; anything else was written by the submission."""

    def __init__(self, call_ids: list[str]) -> None:
        self.order = {call_id: index for index, call_id in enumerate(call_ids)}
        self.state = "start"  # start, isolation, load, call <index>, done
        self.last_call = -1

    def accept(self, frame: wire.Frame) -> str:
        """The frame's type if it comes where it should; raises ``wire.WireError`` if not."""
        kind = wire.check_frame(frame)
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


class ForkedProcess:
    """The few ``subprocess.Popen`` methods gradkit uses (``poll``, ``kill``, ``wait``), for a
    child made by ``os.fork``: the sandbox's worker, ``gradkit grade``'s grading processes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.005)
        return self.returncode


class Sandbox:
    """One pre-loaded worker; ``run`` grades one submission at a time in fresh processes."""

    #: how long the grader waits for the worker to take a request or to confirm a kill
    WORKER_SECONDS = 10.0

    def __init__(self, fork: bool = False) -> None:
        """Start the worker: a fresh interpreter that imports torch (the default), or, with
        ``fork=True``, a fork of this process, which must already have imported torch, must not
        have run a tensor operation, and must have no other thread running (the CLI's single
        check: it saves the worker's own second of importing torch)."""
        self._lock = threading.Lock()
        self._fork = fork
        self._start()

    def _start(self) -> None:
        if self._fork and self._start_forked():
            return
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from gradkit.sandbox.worker import main; "
             "main(int(sys.argv[1]))", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        theirs.close()
        self._sock = ours

    def _start_forked(self) -> bool:
        if "torch" not in sys.modules or threading.active_count() > 1:
            return False  # not safe to fork here: start a fresh interpreter instead
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                ours.close()
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.dup2(theirs.fileno(), 3)
                os.closerange(4, 1 << 16)
                os.environ["OMP_NUM_THREADS"] = "1"
                for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                    signal.signal(number, signal.SIG_DFL)
                from gradkit.sandbox.worker import serve

                serve(socket.socket(fileno=3))
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        theirs.close()
        self._sock = ours
        self._proc = ForkedProcess(pid)
        return True

    def _stop_worker(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.wait(timeout=self.WORKER_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # unkillable (stuck in the kernel): leave it, a new worker takes over

    @property
    def worker_pid(self) -> int:
        """The worker's process id (tests use it to look for leftover processes)."""
        return self._proc.pid

    @property
    def worker_alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """Stop the worker. It holds no state, so SIGKILL it rather than wait ~0.5 s for an
        interpreter with torch loaded to shut down (a run still going dies with it)."""
        self._stop_worker()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, request: dict[str, Any], payload: bytes, limits: Limits,
            call_ids: list[str]) -> RunOutcome:
        """Run one request in a fresh child; always returns, within the limits plus seconds."""
        with self._lock:
            if self._proc.poll() is not None:
                self._sock.close()
                self._start()
            outcome = self._run(request, payload, limits, call_ids)
            if outcome.fault:
                # the worker cannot be trusted to be in step: start a new one next time
                self._stop_worker()
                self._proc.poll()
            return outcome

    def _run(self, request: dict[str, Any], payload: bytes, limits: Limits,
             call_ids: list[str]) -> RunOutcome:
        outcome = RunOutcome()
        started = time.monotonic()
        request = {**request, "limits": limits.for_child(), "shims": SHIMS}
        message = wire.pack(request, payload)
        pipes = [os.pipe() for _ in range(3)]
        try:
            self._sock.settimeout(self.WORKER_SECONDS)
            socket.send_fds(self._sock, [LENGTH.pack(len(message))], [w for _, w in pipes])
            self._sock.sendall(message)
            self._sock.setblocking(False)
        except OSError as exc:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            outcome.fault = f"the grader's worker could not take the submission: {exc}"
            return outcome
        for _, w in pipes:
            os.close(w)
        readers = {pipes[0][0]: "result", pipes[1][0]: "stdout", pipes[2][0]: "stderr"}
        # which function each call needs: the child skips the calls of a function it lacks
        train, predict = request.get("functions") or ("train_neural_net", "neural_net_predict")
        needs = {call.get("id"): predict if call.get("kind") == "predict"
                 else train for call in request.get("calls") or []}
        try:
            self._collect(outcome, readers, limits, call_ids, started, needs)
        finally:
            for fd in readers:
                os.close(fd)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _collect(self, outcome: RunOutcome, readers: dict[int, str], limits: Limits,
                 call_ids: list[str], started: float, needs: dict[str, str]) -> None:
        logs = {"stdout": _Log(limits.log_bytes), "stderr": _Log(limits.log_bytes)}
        results = wire.FrameReader()
        protocol = _Protocol(call_ids)
        received = 0
        pid: Optional[int] = None
        worker = wire.FrameReader()
        selector = selectors.DefaultSelector()
        for fd, name in readers.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, name)
        selector.register(self._sock, selectors.EVENT_READ, "worker")
        # deadline for the next frame: loading first, then each call in turn
        waiting_for = "load"
        frame_deadline = started + limits.load_seconds
        total_deadline = started + limits.total_seconds
        killed_at: Optional[float] = None
        exited_at: Optional[float] = None
        open_pipes = set(readers)

        def kill(reason: str) -> None:
            nonlocal killed_at
            if outcome.killed is None:
                outcome.killed = reason
                killed_at = time.monotonic()
            if pid is not None:
                for target in (lambda: os.killpg(pid, signal.SIGKILL),
                               lambda: os.kill(pid, signal.SIGKILL)):
                    try:
                        target()
                    except (ProcessLookupError, PermissionError):
                        pass

        def stop_reading(fd: int) -> None:
            selector.unregister(fd)
            open_pipes.discard(fd)

        try:
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
                        limit = (limits.load_seconds if waiting_for == "load"
                                 else limits.call_seconds)
                        kill(f"{what} ran past its {limit:g} s limit")
                        outcome.call_timed_out = outcome.killed == \
                            f"{what} ran past its {limit:g} s limit"
                    if killed_at is not None and now > killed_at + self.WORKER_SECONDS:
                        outcome.fault = "the submission's process could not be stopped"
                        return
                timeout = 0.05 if exited_at is not None or outcome.killed else \
                    max(0.0, min(frame_deadline, total_deadline) - now) + 0.01
                for key, _ in selector.select(timeout):
                    name = key.data
                    if name == "worker":
                        try:
                            chunk = self._sock.recv(65536)
                        except BlockingIOError:
                            continue
                        except OSError:
                            chunk = b""
                        if not chunk:
                            outcome.fault = "the grader's worker stopped (was it killed?)"
                            kill("the grader's worker stopped")
                            selector.unregister(self._sock)
                            exited_at = exited_at or time.monotonic()
                            continue
                        try:
                            frames = worker.feed(chunk)
                        except wire.WireError as exc:
                            outcome.fault = f"the grader's worker sent a bad frame ({exc})"
                            kill("the grader's worker failed")
                            return
                        for frame in frames:
                            if type(frame.header.get("pid")) is int:
                                pid = frame.header["pid"]
                                if outcome.killed:
                                    kill(outcome.killed)
                            if isinstance(frame.header.get("exit"), dict):
                                outcome.exit = frame.header["exit"]
                                exited_at = time.monotonic()
                        continue
                    fd = key.fd
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        stop_reading(fd)
                        continue
                    if name != "result":
                        logs[name].feed(chunk)
                        continue
                    received += len(chunk)
                    if received > limits.result_bytes:
                        kill(f"it sent back more than {limits.result_bytes >> 20} MiB of results")
                        stop_reading(fd)
                        continue
                    try:
                        frames = results.feed(chunk)
                        kinds = [protocol.accept(frame) for frame in frames]
                    except wire.WireError as exc:
                        kill(f"something other than gradkit wrote to its result channel, so no "
                             f"result of this run counts ({exc})")
                        outcome.frames.clear()
                        outcome.finished = False
                        stop_reading(fd)
                        continue
                    for frame, kind in zip(frames, kinds):
                        if kind == "isolation":
                            outcome.isolation = {k: v for k, v in frame.header.items()
                                                 if k not in ("type", "payload")}
                            continue
                        if kind == "done":
                            outcome.finished = True
                            continue
                        outcome.frames.append(frame)
                        if kind == "load":
                            usable = {name for name, state in
                                      (frame.header.get("functions") or {}).items()
                                      if state == "ok"}
                            call_ids = [c for c in call_ids if needs.get(c) in usable
                                        or c not in needs]
                        done = {f.header.get("id") for f in outcome.frames
                                if f.header.get("type") == "call"}
                        remaining = [c for c in call_ids if c not in done]
                        waiting_for = remaining[0] if remaining else "done"
                        frame_deadline = time.monotonic() + (
                            limits.call_seconds * (3 if waiting_for == "training_loop" else 1))
        finally:
            selector.close()
            outcome.running = waiting_for
            outcome.stdout, outcome.stdout_dropped = logs["stdout"].text(), logs["stdout"].dropped
            outcome.stderr, outcome.stderr_dropped = logs["stderr"].text(), logs["stderr"].dropped
