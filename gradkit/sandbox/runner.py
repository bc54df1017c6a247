"""Running a submission in isolation: the grader's side of the boundary.

``Sandbox`` owns one pre-loaded worker process (``gradkit.sandbox.worker``, a fresh interpreter
started by ``gradkit.sandbox.boot``, or forked for it by one: ``WorkerSource``) and runs one
submission at a time in processes the worker forks (see there for what confines them). Each request names, as data, what the run must not
see (every home, the submission's folder, the caller's ``hidden`` folders, gradkit's grading
side, the reference) and carries the toy data the nn_helper shim serves. The grader keeps the read
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
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, Optional

from gradkit.sandbox import boot, wire
from gradkit.sandbox.backend import (GRADKIT, SHIMS, CappedLog, Limits, ResultOrder, RunOutcome,
                                     RunTracker, find_reference)
from gradkit.sandbox.backend import prepare_workdir  # noqa: F401  (its old home)
from gradkit.sandbox.worker import LENGTH

_Protocol = ResultOrder  # (its old name, for the tests that use it)

#: folders no run may see, whoever grades: every home and the users' runtime folders
HOMES = ("/root", "/home", "/run/user")


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


class AdoptedProcess:
    """``poll``, ``kill`` and ``wait`` for a process this one did not start (so cannot reap),
    through a pidfd: a worker started early by ``gradkit grade``'s main process and handed to
    one of its grading processes (``start_worker``). Its parent reaps it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None
        self._fd: Optional[int] = os.pidfd_open(pid)  # (it is not reaped yet: still this pid)

    def _exited(self, timeout: float) -> bool:
        if self._fd is None:
            return True
        if not select.select([self._fd], [], [], timeout)[0]:
            return False
        os.close(self._fd)
        self._fd = None
        self.returncode = -1  # its parent reads the status
        return True

    def poll(self) -> Optional[int]:
        self._exited(0)
        return self.returncode

    def kill(self) -> None:
        if self._fd is not None:
            try:
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: Optional[float] = None) -> int:
        if not self._exited(1e9 if timeout is None else timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self.returncode  # type: ignore[return-value]


def start_worker() -> tuple[subprocess.Popen, socket.socket]:
    """A new worker (``boot.command("worker")``: a fresh interpreter with a minimal environment
    that imports torch, numpy and the child harness only) and the grader's end of its socket.

    ``Sandbox`` starts its own; ``gradkit grade`` starts one per grading process first thing,
    so that their imports of torch overlap its own, and hands each to its grading process
    (``Sandbox(worker=(pid, socket))``)."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        boot.command("worker", str(theirs.fileno())), pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=boot.environment(), cwd="/",
    )
    theirs.close()
    return proc, ours


class WorkerSource:
    """Workers for ``gradkit grade``'s grading processes, forked by one fresh interpreter
    (``boot.command("workers")``, ``worker.fork_workers``) that imports torch, numpy and the
    child harness once: the workers share its pages instead of each importing torch.

    ``request()`` asks for one at once and returns its socket; ``pid(socket)`` waits for the
    answer (so the source imports torch while the caller does other work). ``close()`` ends the
    source once no more are wanted (the workers live on: each grading process stops its own).
    """

    #: how long the source may take to import torch and fork a worker
    START_SECONDS = 120.0

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            boot.command("workers", str(theirs.fileno())), pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=boot.environment(), cwd="/",
        )
        theirs.close()
        self._sock = ours
        self._waiting: list[socket.socket] = []
        self._pids: dict[int, int] = {}  # id(socket) -> pid

    def request(self) -> socket.socket:
        """The grader's end of a new worker's socket (the worker is forked when the source is
        ready)."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self._sock, [b"w"], [theirs.fileno()])
        finally:
            theirs.close()
        self._waiting.append(ours)
        return ours

    def pid(self, sock: socket.socket) -> Optional[int]:
        """The pid of the worker behind ``sock`` (answers come in the order asked), or None if
        the source failed."""
        try:
            self._sock.settimeout(self.START_SECONDS)
            while self._waiting and id(sock) not in self._pids:
                head = b""
                while len(head) < LENGTH.size:
                    chunk = self._sock.recv(LENGTH.size - len(head))
                    if not chunk:
                        return None
                    head += chunk
                self._pids[id(self._waiting.pop(0))] = LENGTH.unpack(head)[0]
        except OSError:
            return None
        return self._pids.get(id(sock))

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Sandbox:
    """One pre-loaded worker; ``run`` grades one submission at a time in fresh processes."""

    #: the backend's name (``gradkit.sandbox.backend``), recorded in the report
    name = "linux"

    #: how long the grader waits for the worker to take a request or to confirm a kill
    WORKER_SECONDS = 10.0

    def __init__(self, fork: bool = False, hidden: Iterable[str] = (),
                 worker: Optional[tuple[int, socket.socket]] = None) -> None:
        """Start the worker: a fresh interpreter (``boot.command("worker")``) with a minimal
        environment, which imports torch, numpy and the child harness only. Start it early: it
        imports torch while the caller does. ``fork`` is accepted for older callers and
        ignored (the worker is never a fork of the grader). ``hidden``: folders every run must
        not see besides the defaults (the class folder, the output folder). ``worker``: the pid
        and socket of a worker ``start_worker`` started in another process, to use instead of
        starting one (a worker that dies is replaced by one of this sandbox's own)."""
        self._lock = threading.Lock()
        self.hidden = [str(folder) for folder in hidden]
        if worker is None:
            self._start()
        else:
            self._ready = False
            self._proc = AdoptedProcess(worker[0])
            self._sock = worker[1]
        self._reference = find_reference()

    def _hide(self, request: dict[str, Any]) -> list[str]:
        """The folders the run must not see: every home (the grader's own included), the
        submission's own folder, the caller's ``hidden`` folders."""
        folders = list(HOMES) + [os.path.expanduser("~")] + self.hidden
        if request.get("filename"):
            folders.append(os.path.dirname(os.path.abspath(request["filename"])))
        found: list[str] = []
        for folder in folders:
            real = os.path.realpath(folder)
            if real not in found:
                found.append(real)
        return found

    def _start(self) -> None:
        self._ready = False
        self._proc, self._sock = start_worker()

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
            why_not = self._wait_until_ready()
            if why_not:
                self._stop_worker()
                return RunOutcome(fault=why_not)
            outcome = self._run(request, payload, limits, call_ids)
            if outcome.fault:
                # the worker cannot be trusted to be in step: start a new one next time
                self._stop_worker()
                self._proc.poll()
            return outcome

    #: how long a new worker may take to import torch before it is said to have failed
    START_SECONDS = 120.0

    def _wait_until_ready(self) -> Optional[str]:
        """Wait for a new worker's "ready" frame (sent once it has imported torch), so that no
        run's time limits count the worker's start; why not, if it never came."""
        if self._ready:
            return None
        reader = wire.FrameReader()
        deadline = time.monotonic() + self.START_SECONDS
        try:
            while time.monotonic() < deadline:
                self._sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self._sock.recv(4096)
                if not chunk:
                    return "the grader's worker stopped while it started"
                frames = reader.feed(chunk)
                if frames:
                    self._ready = frames[0].header.get("ready") is True and not reader.buffered
                    return None if self._ready else "the grader's worker sent a bad frame"
        except (OSError, wire.WireError) as exc:
            return f"the grader's worker did not start ({exc})"
        return f"the grader's worker did not start within {self.START_SECONDS:g} s"

    def _run(self, request: dict[str, Any], payload: bytes, limits: Limits,
             call_ids: list[str]) -> RunOutcome:
        outcome = RunOutcome()
        started = time.monotonic()
        reference, toy_data = self._reference
        request = {**request, "limits": limits.for_child(), "shims": SHIMS,
                   "reference": reference, "toy_data": toy_data,
                   "gradkit": GRADKIT, "hide": self._hide(request)}
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
        try:
            self._collect(RunTracker(outcome, request, limits, call_ids, started), readers)
        finally:
            for fd in readers:
                os.close(fd)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _collect(self, tracker: RunTracker, readers: dict[int, str]) -> None:
        outcome, limits = tracker.outcome, tracker.limits
        logs = {"stdout": CappedLog(limits.log_bytes), "stderr": CappedLog(limits.log_bytes)}
        pid: Optional[int] = None
        worker = wire.FrameReader()
        selector = selectors.DefaultSelector()
        for fd, name in readers.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, name)
        selector.register(self._sock, selectors.EVENT_READ, "worker")
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
                    reason = tracker.overdue(now)
                    if reason:
                        kill(reason)
                    if killed_at is not None and now > killed_at + self.WORKER_SECONDS:
                        outcome.fault = "the submission's process could not be stopped"
                        return
                timeout = 0.05 if exited_at is not None or outcome.killed else \
                    max(0.0, tracker.deadline - now) + 0.01
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
                    reason = tracker.feed(chunk, time.monotonic())
                    if reason:
                        kill(reason)
                    if tracker.closed:
                        stop_reading(fd)
        finally:
            selector.close()
            tracker.finish(logs)
