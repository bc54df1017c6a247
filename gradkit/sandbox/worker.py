"""The pre-loaded worker: imports torch once, then forks the processes of each submission run.

It is a fresh interpreter started by ``gradkit.sandbox.boot`` with a minimal environment, holding
torch, numpy and the child harness only (nothing of the grader, the reference or another run:
it never parses a request, and wipes each one's bytes after forking). For ``gradkit grade``, one
such interpreter (``fork_workers``) forks a worker per grading process instead, before any run:
each holds exactly what a started worker holds, and they share one copy of torch. It sends ``{"ready":
true}`` once loaded. It never runs student code itself and runs no tensor operation before
forking (a forked OpenMP pool can hang). Each request arrives on its socket as an 8-byte length carrying three file
descriptors (result pipe, stdout, stderr), then a frame with the request and its payload. The
worker answers ``{"pid": ...}`` after forking and ``{"exit": ...}`` once every process of the run
is gone.

A run is one forked process and one spawned program, so that a hostile submission cannot outlive
or escape it:

- as root, the worker first starts a fresh PID namespace whose PID 1 is a tiny spawned program
  (``cat`` reading a pipe only the worker writes to, so it lives exactly as long as the worker
  keeps the run open, and ends at once if the worker dies). When PID 1 ends the kernel kills
  everything else in the namespace, so a process that left the process group still dies;
- the *submission's process*, forked from the worker (PID 2 of that namespace): its own session
  and process group (the grader kills that group by the pid the worker reports), new mount,
  network and IPC namespaces, a read-only view of the files and a private working folder; then
  no privileges, rlimits, a system-call filter, and ``gradkit.sandbox.child`` loads the student's
  source and makes the planned calls.

As an ordinary user, the worker enters a user namespace of its own at start (``main``), where it
cannot make a fresh PID namespace for each run itself: it forks a *run leader* instead
(``_lead``), which makes one, spawns the init and forks the submission's process, then ends the
way that process ended. Where user namespaces are refused, the submission's process is confined
by Landlock and seccomp alone (``_isolate_unprivileged``).

Forking a process with torch loaded costs milliseconds (its page tables), so the run forks it
once (twice in a user namespace); the init costs a fraction of one, being spawned (vfork and
exec), not forked.

The worker is a child subreaper: any descendant orphaned during a run is re-parented to it, and it
kills and reaps every one of them before it reports the run's end.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Any, Optional

from gradkit.sandbox import confine as _confine, landlock as _landlock, wire

LENGTH = struct.Struct(">Q")
NOBODY = 65534
#: where the result pipe is moved before student code runs (out of the way of fds it opens)
RESULT_FD = 1000
#: exit code of a submission's process whose setup failed
CHILD_FAILED = 71
#: PID 1 of each run's namespace: reads a pipe only the worker writes to, until it closes
INIT_PROGRAM = "cat"


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _describe_status(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return {"signal": number, "signal_name": name}
    return {"code": os.WEXITSTATUS(status)}


def _needed_folders() -> list[str]:
    """The folders a submission's process reads Python, torch, numpy and the harness from: the
    entries of ``sys.path`` (this interpreter's, started isolated) and gradkit's sandbox and
    shims folders, never gradkit's or the reference's own folders (nor a folder holding them)."""
    import gradkit

    package = os.path.realpath(gradkit.__path__[0])
    project = os.path.dirname(package)
    found = []
    for entry in sys.path:
        real = os.path.realpath(entry or os.curdir)
        if not os.path.isdir(real) or real in found:
            continue
        if package == real or package.startswith(real + os.sep) or real == project:
            continue  # a folder holding gradkit (an editable install's project folder)
        found.append(real)
    return found + [os.path.join(package, "sandbox"), os.path.join(package, "shims")]


class _Plan:
    """What the worker found out once, at start: who it runs as and what it may do.

    ``mode`` is "root" (real root: namespaces, then nobody), "user namespace" (an ordinary user
    whose worker entered a user namespace of its own at start: the same namespaces, no user to
    drop to) or "unprivileged" (user namespaces refused: Landlock and seccomp only)."""

    def __init__(self, mode: str, refused: Optional[str] = None, uid: Optional[int] = None
                 ) -> None:
        self.mode = mode
        self.refused = refused  # why the kernel refused a user namespace, if it did
        self.uid = os.getuid() if uid is None else uid  # (outside the user namespace)
        self.root = mode == "root"
        self.needed = _needed_folders()
        self.private = next((f for f in self.needed if not _confine.others_can_read(f)), None)
        self.worker = os.getpid()
        self.namespaces = _confine.PidNamespaces() if self.root else None
        self.landlock = _landlock.abi() if mode == "unprivileged" else 0
        # a stand-in where there is no cat: the same loop in a bare interpreter
        self.init = [shutil.which(INIT_PROGRAM) or sys.executable] + (
            [] if shutil.which(INIT_PROGRAM) else
            ["-S", "-I", "-c", "import os\nwhile os.read(0, 4096): pass"])


PLAN: Optional[_Plan] = None


TEMPORARY = ("/tmp", "/var/tmp", "/dev/shm")


def _isolate(request: dict[str, Any], pid_namespace: bool, new_session: bool = True
             ) -> dict[str, Any]:
    """Session, namespaces, files, in the submission's process while it still holds its
    privileges (real root, or root of the worker's user namespace).

    Returns what it achieved, field by field (for the report)."""
    limits = request["limits"]
    workdir = request["workdir"]
    plan = PLAN
    if new_session:
        os.setsid()
    isolation: dict[str, Any] = {"process": "own session and process group", "namespaces": [],
                                 "exposed": []}
    if plan.mode == "user namespace":
        isolation["namespaces"].append("user")
    if pid_namespace:
        isolation["process"] = ("own PID namespace (it is PID 2; PID 1 is an idle init), "
                                "session and process group")
        isolation["namespaces"].append("pid")
    if plan.mode == "unprivileged":
        return _isolate_unprivileged(request, isolation)
    if not pid_namespace:
        isolation["exposed"].append("processes: it shares the grader's PID namespace (it sees "
                                    "the ids and command lines of other processes)")
    flags = _confine.CLONE_NEWNS | _confine.CLONE_NEWIPC
    if limits["no_network"]:
        flags |= _confine.CLONE_NEWNET
    if not _confine.unshare(flags):
        isolation["network"] = "shared (could not unshare)"
        isolation["filesystem"] = "shared (could not unshare the mounts)"
        isolation["exposed"] += ["files: every file the user it runs as may read is readable "
                                 "by the submission", "network: open to the submission"]
        if plan.root and plan.private is None:  # the install is readable: nobody can run it
            for folder, dirs, files in os.walk(workdir):
                for name in [folder] + [os.path.join(folder, n) for n in dirs + files]:
                    os.chown(name, NOBODY, NOBODY)
            isolation["user"] = "nobody (dropped from root)"
            isolation["_drop"] = True
        elif plan.root:
            isolation["user"] = (f"root without capabilities ({plan.private} is not readable "
                                 "by an unprivileged user, and namespaces are not available)")
        else:
            isolation["user"] = _own_user()
        return isolation
    isolation["namespaces"] += ["mount", "ipc"] + (["network"] if limits["no_network"] else [])
    isolation["network"] = ("none (own network namespace)" if limits["no_network"]
                            else "shared (no_network is off)")
    if not limits["no_network"]:
        isolation["exposed"].append("network: open to the submission (no_network is off)")
    try:
        _confine.private_mounts()
        hide = [f for f in list(request.get("hide") or []) + [request.get("gradkit")] if f]
        covered = _confine.cover(hide, plan.needed + [workdir])
        reference = request.get("reference")
        hidden = []
        if reference and _confine.cover([reference], []):
            hidden.append("the reference package hidden")
        temporary = _confine.cover(TEMPORARY, plan.needed + [workdir])
        opened: list[str] = []
        if plan.root:
            try:  # what nobody must reach: the Python install, and the working folder's parents
                opened = _confine.open_up(plan.needed + [workdir])
            except OSError:
                pass  # then it keeps root, without capabilities
            still_private = next((f for f in plan.needed if not _confine.others_can_read(f)),
                                 None) or _confine.blocking_folder(workdir)
            drop = still_private is None
        else:
            drop, still_private = False, None
        _confine.private_workdir(workdir, limits["workdir_bytes"], NOBODY if drop else None)
        _confine.read_only_except([workdir])
        if pid_namespace:
            try:
                _confine.mount_proc()
            except OSError as exc:
                _confine.hide("/proc")  # the grader's /proc would show every process
                isolation["exposed"].append(f"processes: no /proc of its own ({exc.strerror}): "
                                            "/proc is empty")
        if covered:
            hidden.append("out of view: " + ", ".join(covered))
        if temporary:
            hidden.append(", ".join(temporary) + " empty and read-only")
        isolation["filesystem"] = "; ".join(
            [f"read-only except its working folder (a private tmpfs of "
             f"{_size(limits['workdir_bytes'])})"] + hidden)
        if drop:
            isolation["user"] = "nobody (dropped from root)" + "".join(
                f"; {folder} opened to it, showing only what the run needs" for folder in opened)
        elif plan.root:
            isolation["user"] = (f"root without capabilities ({still_private} is not readable "
                                 "by an unprivileged user)")
        else:
            isolation["user"] = _own_user()
        isolation["_drop"] = drop
    except OSError as exc:
        isolation["filesystem"] = f"shared (could not set up the mounts: {exc.strerror})"
        isolation["exposed"].append("files: every file the user it runs as may read is "
                                    "readable by the submission")
        isolation["user"] = ("root without capabilities (the mounts failed)" if plan.root
                             else _own_user())
        isolation["_drop"] = False
    return isolation


def _own_user() -> str:
    return (f"uid {PLAN.uid} (the user grading), as root of its own user namespace, without "
            "capabilities")


def _readable(request: dict[str, Any]) -> list[str]:
    """What Landlock lets a run read: the folders it needs, less gradkit's grading side and the
    reference where an installed copy lies inside one of them (site-packages): each other entry
    of that folder is allowed instead."""
    grader = [os.path.realpath(f) for f in (request.get("gradkit"), request.get("reference"))
              if f]
    found: list[str] = []
    for folder in PLAN.needed:
        if not any(g.startswith(folder + os.sep) for g in grader):
            found.append(folder)
            continue
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(folder, entry)
            if not any(g == path or g.startswith(path + os.sep) for g in grader):
                found.append(path)
    return found


def _isolate_unprivileged(request: dict[str, Any], isolation: dict[str, Any]
                          ) -> dict[str, Any]:
    """No namespace to enter: Landlock for the files (and TCP), seccomp for the sockets."""
    limits = request["limits"]
    workdir = request["workdir"]
    isolation["user"] = f"uid {PLAN.uid} (the user grading: nothing to drop)"
    isolation["exposed"].append(
        "processes: it shares your PID namespace (it sees the ids and command lines of your "
        f"processes): user namespaces are refused here ({PLAN.refused})")
    isolation["_unix_sockets_only"] = bool(limits["no_network"])
    isolation["network"] = ("sockets of the unix family only (seccomp)" if limits["no_network"]
                            else "shared (no_network is off)")
    try:
        done = _landlock.restrict(_readable(request), [workdir], limits["no_network"])
    except OSError as exc:
        done, why = None, f"Landlock refused the ruleset ({exc.strerror})"
    else:
        why = "this kernel has no Landlock"
    if done:
        isolation["landlock"] = done
        isolation["filesystem"] = ("reads only Python's, torch's and the system's folders, "
                                   "writes only its working folder (Landlock)")
        if "no TCP" in done and limits["no_network"]:
            isolation["network"] += "; no TCP bind or connect (Landlock)"
        if "abstract" not in done:
            isolation["exposed"].append("channels: abstract unix sockets of other processes "
                                        "are reachable (Landlock ABI < 6)")
    else:
        isolation["landlock"] = f"not used: {why}"
        isolation["filesystem"] = f"shared ({why})"
        isolation["exposed"] += [
            "files: your home is readable by the submission",
            "files: the class folder (every student's files) is readable by the submission",
            "files: it may write wherever you may: your home, gradkit's installed package, "
            "the venv"]
    if not limits["no_network"]:
        isolation["exposed"].append("network: open to the submission (no_network is off)")
    return isolation


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 else f"{count >> 10} KiB"


def _submission(request: dict[str, Any], payload: bytes, result_fd: int,
                isolation: dict[str, Any]) -> None:
    """In the submission's process: drop privileges, limit, filter, then run ``_child``."""
    limits = request["limits"]
    workdir = request["workdir"]
    os.dup2(result_fd, RESULT_FD)
    os.set_inheritable(RESULT_FD, False)
    os.closerange(3, RESULT_FD)
    os.closerange(RESULT_FD + 1, 1 << 16)
    drop = isolation.pop("_drop", False)
    unix_only = isolation.pop("_unix_sockets_only", False)
    if PLAN.root and drop:
        _confine.drop_capabilities(keep_for_now=True)
        _confine.become(NOBODY, NOBODY)
    elif PLAN.mode != "unprivileged":
        _confine.drop_capabilities()
    isolation["limits"] = _confine.apply_limits(limits, bind_processes=os.geteuid() != 0)
    try:
        why_not = _confine.filter_syscalls(unix_sockets_only=unix_only)
    except OSError as exc:
        why_not = f"no filter ({exc.strerror})"
    isolation["syscalls"] = why_not or _confine.SYSCALL_FILTER + (
        f"; {_confine.UNIX_SOCKETS_ONLY}" if unix_only else "")
    if why_not:
        isolation["exposed"].append(f"system calls: no filter ({why_not}): it may start "
                                    "programs and signal other processes")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the limit is an error, not a kill
    os.chdir(workdir)
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
            if k in os.environ}
    os.environ.clear()
    os.environ.update(keep, HOME=workdir, TMPDIR=workdir, OMP_NUM_THREADS="1",
                      MKL_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    from gradkit.sandbox import child as _child

    sender = _child.Sender(RESULT_FD)
    sender.send({"type": "isolation", **isolation})
    _child.main(request, payload, sender)


def _recv_into(sock: socket.socket, size: int) -> bytearray:
    """``size`` bytes from ``sock`` into one buffer (no intermediate copies to leave behind)."""
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        count = sock.recv_into(view[done:], min(size - done, 1 << 20))
        if not count:
            raise EOFError
        done += count
    view.release()
    return buffer


def _wipe(buffer: bytearray) -> None:
    if buffer:
        ctypes.memset((ctypes.c_char * len(buffer)).from_buffer(buffer), 0, len(buffer))


def _run(message: bytearray, fds: list[int], sock: Optional[socket.socket],
         pid_namespace: bool, parent: Optional[int] = None) -> None:
    """The submission's process, from the worker's fork (or its leader's) to its exit."""
    code = CHILD_FAILED
    try:
        frames, _ = wire.unpack_stream(bytes(message), max_header=64 << 20)
        _wipe(message)
        request, payload = frames[0].header, frames[0].payload
        result_fd, out_fd, err_fd = fds
        if sock is not None:
            sock.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        for fd in (devnull, out_fd, err_fd):
            os.close(fd)
        _confine.die_with_parent()
        if os.getppid() not in (parent or PLAN.worker, 0):  # (0: seen from a new namespace)
            return  # its parent died before we could ask to die with it
        isolation = _isolate(request, pid_namespace, new_session=parent is None)
        _submission(request, payload, result_fd, isolation)
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)


def _lead(message: bytearray, fds: list[int], sock: socket.socket) -> None:
    """In a user namespace, the run's leader (forked by the worker, which cannot enter a fresh
    PID namespace of its own there): its own session, a new PID namespace whose PID 1 is the idle
    init, and the submission's process as PID 2 in its process group. It waits for that process
    and ends the same way, so the worker and the grader see the submission's own end."""
    code = CHILD_FAILED
    try:
        sock.close()
        os.setsid()
        _confine.die_with_parent()
        if os.getppid() != PLAN.worker:
            return
        init = alive_w = None
        if _confine.unshare(_confine.CLONE_NEWPID):
            alive_r, alive_w = os.pipe()
            try:
                init = os.posix_spawn(PLAN.init[0], PLAN.init, {}, setsid=True, file_actions=[
                    (os.POSIX_SPAWN_DUP2, alive_r, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, 1, 2)])
            except OSError:
                init = None
            finally:
                os.close(alive_r)
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            if alive_w is not None:
                os.close(alive_w)
            _run(message, fds, None, init is not None, parent=me)
        _wipe(message)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        if alive_w is not None:
            os.close(alive_w)
        if init is not None:
            _kill_and_reap(init)
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                signal.signal(number, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
            os.kill(os.getpid(), number)
            code = 128 + number
        else:
            code = os.WEXITSTATUS(status)
    except BaseException:
        code = CHILD_FAILED
    finally:
        os._exit(code)


def _start_init() -> tuple[Optional[int], Optional[int]]:
    """A fresh PID namespace and its PID 1, for the next child; (pid, the pipe keeping it alive),
    or (None, None) where the machine allows no PID namespace."""
    if PLAN.namespaces is None or not PLAN.namespaces.fresh():
        return None, None
    alive_r, alive_w = os.pipe()
    try:
        init = os.posix_spawn(PLAN.init[0], PLAN.init, {}, setsid=True, file_actions=[
            (os.POSIX_SPAWN_DUP2, alive_r, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2)])
    except OSError:
        PLAN.namespaces.ordinary()  # else the submission's process would become PID 1
        os.close(alive_w)
        return None, None
    finally:
        os.close(alive_r)
    return init, alive_w


def _children() -> list[int]:
    return children_of(os.getpid())


def children_of(pid: int) -> list[int]:
    """The children of ``pid``, from /proc (the kernel keeps no cheaper list everywhere)."""
    me, found = pid, []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry))
    return found


def _sweep(deadline: float) -> None:
    """Kill and reap every child left: orphans of the run re-parented to this subreaper.

    They are our children and not yet reaped, so their pids cannot have been reused.
    """
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def serve(sock: socket.socket, mode: str = "root", refused: Optional[str] = None,
          uid: Optional[int] = None) -> None:
    global PLAN
    import numpy  # noqa: F401  (preloaded so every child starts with it)
    import torch  # noqa: F401

    from gradkit.sandbox import child as _child  # noqa: F401

    PLAN = _Plan(mode, refused, uid)
    _confine.become_subreaper()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock.sendall(wire.pack({"ready": True}))  # the grader starts no run's clock before this
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(sock, LENGTH.size, 3)
            if not head:
                return
            head += _recv_exactly(sock, LENGTH.size - len(head))
            (size,) = LENGTH.unpack(head)
            message = _recv_into(sock, size)
        except (EOFError, ConnectionError, OSError):
            return
        if PLAN.mode == "user namespace":
            init, alive_w = None, None
            pid = os.fork()
            if pid == 0:
                _lead(message, fds, sock)
        else:
            init, alive_w = _start_init()
            pid = os.fork()
            if pid == 0:
                _run(message, fds, sock, init is not None)
        # the worker never reads a request: its bytes are wiped, so no later run finds them
        _wipe(message)
        del message
        if init is not None:
            PLAN.namespaces.ordinary()
        for fd in fds:
            os.close(fd)
        sock.sendall(wire.pack({"pid": pid}))
        try:
            status = _wait_for(pid, sock)
        except (EOFError, OSError):
            return
        finally:
            if init is not None:  # the namespace ends with its init
                os.close(alive_w)
                _kill_and_reap(init)
        _sweep(time.monotonic() + 5)
        sock.sendall(wire.pack({"exit": _describe_status(status)}))


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _wait_for(pid: int, sock: socket.socket) -> int:
    """Wait until ``pid`` exits and reap it; return its wait status.

    It sleeps until ``pid`` exits or the socket stirs (a pidfd, where the kernel has them; else
    it looks every 20 ms). Only ``pid`` is reaped here: ``_sweep`` reaps the rest after the run
    (so the init's pid stays ours to kill). If the grader goes away meanwhile (its end of the
    socket closes), kill the run and leave.
    """
    try:
        exited: Optional[int] = os.pidfd_open(pid)
    except (AttributeError, OSError):
        exited = None
    try:
        while True:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                return status
            watched = [sock] + ([exited] if exited is not None else [])
            ready, _, _ = select.select(watched, [], [], 0.02 if exited is None else 1.0)
            if sock in ready and not sock.recv(1, socket.MSG_PEEK):
                for target in (lambda: os.killpg(pid, signal.SIGKILL),
                               lambda: os.kill(pid, signal.SIGKILL)):
                    try:
                        target()
                    except OSError:
                        pass
                _sweep(time.monotonic() + 5)
                raise EOFError("the grader closed the socket")
    finally:
        if exited is not None:
            os.close(exited)


def fork_workers(fd: int) -> None:
    """A source of workers for ``gradkit grade`` (``runner.WorkerSource``): a fresh interpreter
    like a worker, it imports what a worker holds (torch, numpy, the child harness), then forks
    one worker per request. Each request is one byte on ``fd`` carrying the worker's socket; the
    answer is its pid (8 bytes). Every worker it forks shares its pages (one import of torch, and
    one copy of its memory, for the whole batch), and holds what a started worker holds: this
    process never sees a submission, a request or anything of the grader. It ends when ``fd``
    closes."""
    sys.stdin.close()
    import numpy  # noqa: F401
    import torch  # noqa: F401

    from gradkit.sandbox import child as _child  # noqa: F401

    source = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(source, 1, 1)
            except OSError:
                return
            if not fds:
                return
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    source.close()
                    main(fds[0])
                except BaseException:
                    code = CHILD_FAILED
                finally:
                    os._exit(code)
            os.close(fds[0])
            try:
                source.sendall(LENGTH.pack(pid))
            except OSError:
                return
    finally:
        # the workers end when their grading processes stop them; reaped here, so that their
        # (and their runs') CPU time is counted where the batch's is
        while True:
            try:
                os.wait()
            except ChildProcessError:
                break


def main(fd: int) -> None:
    """The worker, started by ``boot``: as an ordinary user it first enters a user namespace of
    its own (while it is still one thread, before torch), where it can make the rest."""
    sys.stdin.close()
    mode, refused, uid = "root", None, os.getuid()
    if os.geteuid() != 0:
        refused = _confine.enter_user_namespace()
        mode = "unprivileged" if refused else "user namespace"
    serve(socket.socket(fileno=fd), mode, refused, uid)


if __name__ == "__main__":
    main(int(sys.argv[1]))
