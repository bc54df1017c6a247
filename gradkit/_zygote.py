"""The pre-loaded worker: imports torch once, then forks one child per submission run.

It never runs student code itself and runs no tensor operation before forking (a forked OpenMP
pool can hang). Each request arrives on its socket as an 8-byte length carrying three file
descriptors (result pipe, stdout, stderr), then a frame with the request and its payload. The
worker answers ``{"pid": ...}`` after forking and ``{"exit": ...}`` once the child is reaped.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import stat
import struct
import sys
from typing import Any

from gradkit import wire

LENGTH = struct.Struct(">Q")
NOBODY = 65534
CLONE_NEWNET = 0x40000000


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


def _drop_network() -> str:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) == 0:
            return "none (own network namespace)"
    except (OSError, AttributeError):
        pass
    return "shared (could not unshare the network)"


def _others_can_read(path: str) -> bool:
    """Whether an unprivileged user can reach ``path`` (every parent searchable, it readable)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def _private_install() -> str | None:
    """The first folder Python needs that an unprivileged user could not read, if any."""
    import numpy
    import torch

    import gradkit

    for folder in (os.path.dirname(os.__file__), os.path.dirname(torch.__file__),
                   os.path.dirname(numpy.__file__), os.path.dirname(gradkit.__file__)):
        if not _others_can_read(folder):
            return folder
    return None


def _apply_limits(limits: dict[str, Any]) -> list[str]:
    applied = []
    wanted = {
        "cpu_seconds": (resource.RLIMIT_CPU, limits["cpu_seconds"]),
        "address_space": (resource.RLIMIT_AS, limits["address_space"]),
        "file_size": (resource.RLIMIT_FSIZE, limits["file_size"]),
        "open_files": (resource.RLIMIT_NOFILE, limits["open_files"]),
        "core_dumps": (resource.RLIMIT_CORE, 0),
    }
    if os.geteuid() != 0:  # RLIMIT_NPROC does not bind root, and counts the user's every process
        wanted["processes"] = (resource.RLIMIT_NPROC, limits["processes"])
    for name, (which, value) in wanted.items():
        try:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else value + 1))
            applied.append(name)
        except (ValueError, OSError):
            pass
    return applied


def _become_child(request: dict[str, Any], payload: bytes, fds: list[int],
                  sock: socket.socket) -> None:
    """In the forked child: isolate, limit, then hand over to ``gradkit._child``."""
    code = 70
    try:
        result_fd, out_fd, err_fd = fds
        os.setsid()
        sock.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        for fd in (devnull, out_fd, err_fd):
            os.close(fd)
        limits = request["limits"]
        isolation: dict[str, Any] = {"process": "own session and process group"}
        os.chdir(request["workdir"])
        if os.geteuid() == 0:
            isolation["network"] = _drop_network() if limits["no_network"] else "shared"
        if os.geteuid() == 0 and PRIVATE_INSTALL:
            isolation["user"] = (f"root (kept: {PRIVATE_INSTALL} is not readable by an "
                                 "unprivileged user)")
        elif os.geteuid() == 0:
            os.chown(request["workdir"], NOBODY, NOBODY)
            for root, dirs, files in os.walk(request["workdir"]):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), NOBODY, NOBODY)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            isolation["user"] = "nobody (dropped from root)"
        else:
            isolation["network"] = "shared (not root: cannot unshare)"
            isolation["user"] = f"uid {os.getuid()} (not root: nothing to drop)"
        isolation["limits"] = _apply_limits(limits)
        os.environ["HOME"] = request["workdir"]
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
        os.write(result_fd, wire.pack({"type": "isolation", **isolation}))
        from gradkit import _child

        _child.main(request, payload, result_fd)
    except BaseException:
        code = 71
    finally:
        os._exit(code)


PRIVATE_INSTALL: str | None = None


def serve(sock: socket.socket) -> None:
    global PRIVATE_INSTALL
    import numpy  # noqa: F401  (preloaded so every child starts with it)
    import torch  # noqa: F401

    PRIVATE_INSTALL = _private_install() if os.geteuid() == 0 else None

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(sock, LENGTH.size, 3)
            if not head:
                return
            head += _recv_exactly(sock, LENGTH.size - len(head))
            (size,) = LENGTH.unpack(head)
            frames, _ = wire.unpack_stream(_recv_exactly(sock, size), max_header=64 << 20)
        except (EOFError, ConnectionError, OSError):
            return
        request, payload = frames[0].header, frames[0].payload
        pid = os.fork()
        if pid == 0:
            _become_child(request, payload, fds, sock)
        for fd in fds:
            os.close(fd)
        sock.sendall(wire.pack({"pid": pid}))
        _, status = os.waitpid(pid, 0)
        sock.sendall(wire.pack({"exit": _describe_status(status)}))


def main(fd: int) -> None:
    sys.stdin.close()
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main(int(sys.argv[1]))
