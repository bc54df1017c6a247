"""The portable backend: a fresh interpreter per run, for macOS and Windows (and any Linux).

``PortableSandbox.run`` starts the submission's process with ``subprocess`` (a fresh Python, never
a fork: ``boot.py portable`` started by ``boot.command``, no user site and no PYTHON* variable
but a fixed hash seed, ``gradkit`` a bare package so nothing of the grader is imported), in the
run's private working folder, with ``boot``'s minimal environment. The request travels on the
child's stdin; its frames come back on a pipe of their own, the same frames in the same order as
the ``linux`` backend's (``backend.RunTracker`` checks them), because the child runs the same
harness (``gradkit.sandbox.child``). stdout and stderr are logs, capped.

The result channel is an inherited pipe: on POSIX its descriptor is passed with ``pass_fds``, on
Windows its handle is inherited through ``STARTUPINFO``'s handle list and opened with ``msvcrt``.
A pipe works on all three systems with the standard library only, needs no port that another
local process could connect to first, and closes when the run's processes are gone. The grader
reads every pipe with a thread (``select`` does not work on Windows pipes).

What confines the run (recorded in ``report.isolation``):

- wall-clock limits enforced by the grader, which kills the whole run when one runs out: on POSIX
  the run leads its own session and the grader kills its process group; on Windows the run is in
  a job object that also caps its memory and number of processes (``taskkill /T`` if the job
  cannot be made);
- rlimits where the platform has ``resource`` (CPU, address space, file size, open files);
- on macOS, a ``sandbox-exec`` profile that denies the network and every write outside the
  working folder.

Nothing here or in the child's path imports a module that macOS or Windows lacks (``resource``,
``fcntl``, ``termios``, ``pwd``, ``grp``) or calls ``os.fork``; each platform's calls are made
only on that platform.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Optional

from gradkit.sandbox import boot, wire
from gradkit.sandbox.backend import (GRADKIT, SHIMS, CappedLog, Limits, RunOutcome, RunTracker,
                                     find_reference)

WINDOWS = os.name == "nt"
MACOS = sys.platform == "darwin"
#: exit code of a child whose setup failed before the submission ran
CHILD_FAILED = 71

# macOS: deny the network, writes anywhere but the working folder (and /dev/null), and signals
# to any process outside the run (the grader). Pipes the child inherited are not files the profile
# looks at.
SEATBELT_PROFILE = """(version 1)
(allow default)
(deny network*)
(deny file-write*)
(allow file-write* (subpath (param "WORKDIR")))
(allow file-write-data (literal "/dev/null") (literal "/dev/dtracehelper"))
(deny signal)
(allow signal (target same-sandbox))
"""
SANDBOX_EXEC = "/usr/bin/sandbox-exec"

#: Windows exit codes that mean a crash, by their NTSTATUS names
NTSTATUS = {0xC0000005: "STATUS_ACCESS_VIOLATION", 0xC00000FD: "STATUS_STACK_OVERFLOW",
            0xC0000017: "STATUS_NO_MEMORY", 0xC000001D: "STATUS_ILLEGAL_INSTRUCTION",
            0xC0000409: "STATUS_STACK_BUFFER_OVERRUN"}


def _seatbelt_works() -> bool:
    """Whether ``sandbox-exec`` exists here and applies gradkit's profile (macOS; deprecated
    there, but present on every release so far). Without it, runs are recorded as unconfined
    rather than failing."""
    if not MACOS or not os.path.exists(SANDBOX_EXEC):
        return False
    try:
        return subprocess.run([SANDBOX_EXEC, "-D", f"WORKDIR={os.path.realpath(os.curdir)}",
                               "-p", SEATBELT_PROFILE, "/usr/bin/true"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _environment(workdir: str) -> dict[str, str]:
    """What the child's environment holds: every sandbox process's (``boot.environment()``),
    its working folder as its home, and on Windows the few variables a Python needs there
    (SYSTEMROOT for sockets and randomness, the system's PATH for DLLs)."""
    env = boot.environment()
    env.update(HOME=workdir, TMPDIR=workdir)
    if WINDOWS:
        env.update({name: os.environ[name] for name in ("PATH", "SYSTEMROOT", "WINDIR")
                    if name in os.environ})
        env.update(TEMP=workdir, TMP=workdir, USERPROFILE=workdir)
    return env


def _describe_exit(code: int) -> dict[str, Any]:
    if code < 0 and not WINDOWS:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return {"signal": -code, "signal_name": name}
    if WINDOWS and code & 0xFFFFFFFF in NTSTATUS:
        return {"code": code, "signal_name": NTSTATUS[code & 0xFFFFFFFF]}
    return {"code": code}


_CREATE_SUSPENDED = 0x4


def _resume(proc: subprocess.Popen) -> bool:
    """Resume a process started suspended (Windows; ``NtResumeProcess``, in ntdll since XP)."""
    import ctypes

    try:
        return ctypes.WinDLL("ntdll").NtResumeProcess(ctypes.c_void_p(int(proc._handle))) == 0
    except (AttributeError, OSError):
        return False


class _WindowsJob:
    """A Windows job object holding one run: it caps each process's memory and the number of
    processes, and closing it kills every process in it, however deep (``ctypes`` only)."""

    KILL_ON_JOB_CLOSE, PROCESS_MEMORY, ACTIVE_PROCESS = 0x2000, 0x100, 0x8
    EXTENDED_LIMIT_INFORMATION = 9

    def __init__(self, limits: Limits) -> None:
        import ctypes
        from ctypes import wintypes

        class Basic(ctypes.Structure):
            _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                        ("PerJobUserTimeLimit", ctypes.c_int64),
                        ("LimitFlags", wintypes.DWORD),
                        ("MinimumWorkingSetSize", ctypes.c_size_t),
                        ("MaximumWorkingSetSize", ctypes.c_size_t),
                        ("ActiveProcessLimit", wintypes.DWORD),
                        ("Affinity", ctypes.c_size_t),
                        ("PriorityClass", wintypes.DWORD),
                        ("SchedulingClass", wintypes.DWORD)]

        class Extended(ctypes.Structure):
            _fields_ = [("BasicLimitInformation", Basic),
                        ("IoInfo", ctypes.c_uint64 * 6),
                        ("ProcessMemoryLimit", ctypes.c_size_t),
                        ("JobMemoryLimit", ctypes.c_size_t),
                        ("PeakProcessMemoryUsed", ctypes.c_size_t),
                        ("PeakJobMemoryUsed", ctypes.c_size_t)]

        self._kernel32 = kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.CreateJobObjectW.restype = wintypes.HANDLE
        kernel32.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int,
                                                     ctypes.c_void_p, wintypes.DWORD]
        kernel32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
        kernel32.TerminateJobObject.argtypes = [wintypes.HANDLE, wintypes.UINT]
        kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
        self.handle = kernel32.CreateJobObjectW(None, None)
        if not self.handle:
            raise OSError(ctypes.get_last_error(), "CreateJobObject failed")
        info = Extended()
        info.BasicLimitInformation.LimitFlags = (self.KILL_ON_JOB_CLOSE | self.PROCESS_MEMORY
                                                 | self.ACTIVE_PROCESS)
        info.BasicLimitInformation.ActiveProcessLimit = limits.processes
        info.ProcessMemoryLimit = limits.address_space
        if not kernel32.SetInformationJobObject(self.handle, self.EXTENDED_LIMIT_INFORMATION,
                                                ctypes.byref(info), ctypes.sizeof(info)):
            error = ctypes.get_last_error()
            self.close()
            raise OSError(error, "SetInformationJobObject failed")

    def assign(self, process: subprocess.Popen) -> None:
        import ctypes

        if not self._kernel32.AssignProcessToJobObject(self.handle, int(process._handle)):
            raise OSError(ctypes.get_last_error(), "AssignProcessToJobObject failed")

    def kill(self) -> None:
        if self.handle:
            self._kernel32.TerminateJobObject(self.handle, 1)

    def close(self) -> None:
        if self.handle:
            self._kernel32.CloseHandle(self.handle)  # KILL_ON_JOB_CLOSE: what is left dies
            self.handle = None


class PortableSandbox:
    """Runs each submission in a fresh interpreter; no worker, nothing to keep between runs."""

    #: the backend's name (``gradkit.sandbox.backend``), recorded in the report
    name = "portable"
    #: how long the grader waits for a killed run to end before it gives up on it
    KILL_SECONDS = 10.0
    #: how long a fresh interpreter may take to import torch and the harness (about a second
    #: on an idle machine); the run's own limits count from then
    STARTUP_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: runs are wrapped in sandbox-exec (macOS, where it applies gradkit's profile)
        self.seatbelt = _seatbelt_works()
        self._reference = find_reference()

    def close(self) -> None:
        """Nothing to stop: every run's processes are gone when ``run`` returns."""

    def __enter__(self) -> "PortableSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, request: dict[str, Any], payload: bytes, limits: Limits,
            call_ids: list[str]) -> RunOutcome:
        """Run one request in a fresh interpreter; always returns, within the limits plus
        seconds."""
        with self._lock:
            return self._run(request, payload, limits, call_ids)

    # -- what the run gets -----------------------------------------------------------------

    def _isolation(self, job: bool) -> dict[str, Any]:
        """What confines the run, in the report's words (the child adds its rlimits)."""
        if WINDOWS:
            process = ("own process (a fresh interpreter) in a job object: every process it "
                       "starts ends with the run" if job else
                       "own process (a fresh interpreter); its tree is killed with taskkill /T")
            user = "the grader's own user (the portable runner does not change it)"
        else:
            process = ("own process (a fresh interpreter), session and process group; a "
                       "process that leaves the session can outlive the run")
            user = f"uid {os.getuid()} (the grader's own user: the portable runner does not " \
                   "change it)"
        if self.seatbelt:
            network = "none (sandbox-exec profile)"
            filesystem = ("writes only to its working folder (sandbox-exec profile); reads "
                          "what the grader's user can read")
            process += "; it cannot signal any process outside the run (sandbox-exec profile)"
        else:
            network = "shared (the portable runner cannot cut it)"
            filesystem = ("shared: it can read and write what the grader's user can; its "
                          "working folder is a private copy")
        # what the linux backend's default keeps from a run, said plainly (``exposed``)
        exposed = ["processes: it shares the grader's process ids and user (no PID namespace)",
                   "system calls: no filter (the portable runner has none)"]
        if self.seatbelt:
            exposed.append("files: every file the grader's user may read is readable by the "
                           "submission")
        else:
            exposed += ["files: every file the grader's user may read or write is open to the "
                        "submission", "network: open to the submission"]
        return {"process": process, "user": user, "network": network,
                "filesystem": filesystem, "syscalls": "no filter (portable runner)",
                "exposed": exposed}

    def _command(self, workdir: str, channel: str) -> list[str]:
        command = boot.command("portable", channel)
        if self.seatbelt:
            command = [SANDBOX_EXEC, "-D", f"WORKDIR={os.path.realpath(workdir)}",
                       "-p", SEATBELT_PROFILE] + command
        return command

    def _start(self, workdir: str, writers: dict[str, int], limits: Limits
               ) -> tuple[subprocess.Popen, Optional[_WindowsJob]]:
        """Start the child with the write ends of its three pipes (the grader closes them)."""
        options = {"stdin": subprocess.PIPE, "stdout": writers["stdout"],
                   "stderr": writers["stderr"], "cwd": workdir, "env": _environment(workdir)}
        result_w = writers["result"]
        if not WINDOWS:
            return subprocess.Popen(self._command(workdir, str(result_w)), pass_fds=[result_w],
                                    start_new_session=True, **options), None
        import msvcrt

        handle = msvcrt.get_osfhandle(result_w)
        os.set_handle_inheritable(handle, True)
        startup = subprocess.STARTUPINFO(lpAttributeList={"handle_list": [handle]})
        # suspended until it is in its job: a venv's python.exe is a launcher that starts the
        # real interpreter at once, and a process started before the assignment stays outside
        proc = subprocess.Popen(self._command(workdir, str(handle)), startupinfo=startup,
                                close_fds=True, **options, creationflags=(
                                    subprocess.CREATE_NO_WINDOW | _CREATE_SUSPENDED))
        job: Optional[_WindowsJob] = None
        try:
            job = _WindowsJob(limits)
            job.assign(proc)
        except OSError:
            if job is not None:
                job.close()
            job = None  # then taskkill /T ends its tree
        finally:
            if not _resume(proc):
                proc.kill()
                raise OSError("the submission's process could not be resumed")
        return proc, job

    # -- one run ---------------------------------------------------------------------------

    def _run(self, request: dict[str, Any], payload: bytes, limits: Limits,
             call_ids: list[str]) -> RunOutcome:
        outcome = RunOutcome()
        started = time.monotonic()
        pipes = {name: os.pipe() for name in ("result", "stdout", "stderr")}
        try:
            proc, job = self._start(request["workdir"], {n: w for n, (_, w) in pipes.items()},
                                    limits)
        except OSError as exc:
            for read, _ in pipes.values():
                os.close(read)
            outcome.fault = f"the submission's process could not be started: {exc}"
            return outcome
        finally:
            for _, write in pipes.values():
                os.close(write)
        reference, toy_data = self._reference
        request = {**request, "limits": limits.for_child(), "shims": SHIMS,
                   "reference": reference, "toy_data": toy_data, "gradkit": GRADKIT,
                   "isolation": self._isolation(job is not None)}
        events: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
        # each pipe is read, and closed at its end, by a thread of its own
        threads = [threading.Thread(target=_pump, args=(read, name, events), daemon=True)
                   for name, (read, _) in pipes.items()]
        threads.append(threading.Thread(target=_send, args=(proc.stdin, wire.pack(
            request, payload)), daemon=True))
        for thread in threads:
            thread.start()
        tracker = RunTracker(outcome, request, limits, call_ids, started,
                             startup_seconds=self.STARTUP_SECONDS)
        try:
            self._collect(tracker, proc, job, events)
        finally:
            self._end(proc, job)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _collect(self, tracker: RunTracker, proc: subprocess.Popen,
                 job: Optional[_WindowsJob], events: "queue.Queue[tuple[str, bytes]]") -> None:
        outcome, limits = tracker.outcome, tracker.limits
        logs = {"stdout": CappedLog(limits.log_bytes), "stderr": CappedLog(limits.log_bytes)}
        open_streams = {"result", "stdout", "stderr"}
        exited_at: Optional[float] = None
        killed_at: Optional[float] = None

        def kill(reason: str) -> None:
            nonlocal killed_at
            if outcome.killed is None:
                outcome.killed = reason
                killed_at = time.monotonic()
            _kill_run(proc, job)

        try:
            while True:
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                    outcome.exit = _describe_exit(proc.returncode)
                if exited_at is not None and (not open_streams or now > exited_at + 0.2):
                    break
                if exited_at is None:
                    reason = tracker.overdue(now)
                    if reason:
                        kill(reason)
                    if killed_at is not None and now > killed_at + self.KILL_SECONDS:
                        outcome.fault = "the submission's process could not be stopped"
                        return
                # wake at least every 0.1 s to see whether the process ended (a process it
                # started may hold its pipes open)
                timeout = min(0.1, max(0.0, tracker.deadline - now) + 0.01)
                try:
                    name, chunk = events.get(timeout=timeout)
                except queue.Empty:
                    continue
                while True:
                    if not chunk:
                        open_streams.discard(name)
                    elif name == "result":
                        reason = tracker.feed(chunk, time.monotonic())
                        if reason:
                            kill(reason)
                    else:
                        logs[name].feed(chunk)
                    try:
                        name, chunk = events.get_nowait()
                    except queue.Empty:
                        break
        finally:
            tracker.finish(logs)
            if tracker.waiting_for == "start" and outcome.killed is None and not outcome.fault:
                # it ended before any code of the submission ran: gradkit's setup failed, and
                # what it wrote to stderr is gradkit's own (the traceback's last line says why)
                last = (outcome.stderr.strip().splitlines() or ["no message"])[-1]
                outcome.fault = (f"the submission's process failed to start "
                                 f"({outcome.exit_words}): {last[:300]}")

    def _end(self, proc: subprocess.Popen, job: Optional[_WindowsJob]) -> None:
        """Leave nothing of the run: kill what is left of it and reap the child."""
        if WINDOWS:
            if job is not None:
                job.kill()
                job.close()
            elif proc.poll() is None:
                _kill_run(proc, None)
        else:
            _kill_run(proc, None)  # its group: what it started in the background
        try:
            proc.wait(timeout=self.KILL_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # unkillable (stuck in the kernel): nothing more to do from here


def _pump(fd: int, name: str, events: "queue.Queue[tuple[str, bytes]]") -> None:
    """Read one pipe to its end, handing each chunk to the grader; then close it."""
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            events.put((name, chunk))
            if not chunk:
                return
    finally:
        os.close(fd)


def _send(stdin: Any, message: bytes) -> None:
    """Write the request to the child's stdin and close it (the child reads to its end)."""
    try:
        stdin.write(message)
        stdin.close()
    except (OSError, ValueError):
        pass  # the child is gone: its exit says why


def _kill_run(proc: subprocess.Popen, job: Optional[_WindowsJob]) -> None:
    """Kill the run's process and every process it started that can still be found."""
    if WINDOWS:
        if job is not None:
            job.kill()
        else:
            try:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10,
                               creationflags=subprocess.CREATE_NO_WINDOW)
            except (OSError, subprocess.SubprocessError):
                pass
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.kill()
    except OSError:
        pass


# --- the child's side ---------------------------------------------------------------------------

def serve_run(channel: str) -> None:
    """In the submission's process: read the request, limit, then run the child harness.

    ``channel`` is the result pipe: a file descriptor on POSIX, a handle on Windows. Never
    returns: the harness exits the process when the run is over.
    """
    try:
        if WINDOWS:
            import msvcrt

            result_fd = msvcrt.open_osfhandle(int(channel), 0)
        else:
            result_fd = int(channel)
        os.set_inheritable(result_fd, False)
        data = sys.stdin.buffer.read()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        frames, _ = wire.unpack_stream(data, max_header=64 << 20)
        request, payload = frames[0].header, frames[0].payload
        isolation = dict(request.get("isolation") or {})
        isolation["limits"] = _apply_limits(request["limits"])
        if hasattr(signal, "SIGXFSZ"):  # a file over the limit is an error, not a kill
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        os.chdir(request["workdir"])
        import torch

        torch.set_num_threads(1)
        from gradkit.sandbox import child as _child

        sender = _child.Sender(result_fd)
        sender.send({"type": "isolation", **isolation})
        _child.main(request, payload, sender)
    except BaseException:
        import traceback

        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(CHILD_FAILED)


def _apply_limits(limits: dict[str, Any]) -> list[str]:
    """The rlimits this platform has, set; their names (none on Windows: its job object and the
    grader's wall clock are the limits there)."""
    try:
        from gradkit.sandbox.confine import apply_limits
    except ImportError:  # no resource module
        return []
    applied = apply_limits(limits, bind_processes=os.geteuid() != 0)
    if MACOS:  # macOS accepts RLIMIT_AS but does not enforce it
        applied = [name for name in applied if name != "address_space"]
    return applied
