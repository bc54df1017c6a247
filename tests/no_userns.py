"""Run a command where user namespaces are refused: ``python no_userns.py COMMAND...`` (as root).

It starts COMMAND in a user namespace of its own that maps every user to itself (so the command
runs, and can become any user, exactly as outside) and whose ``user.max_user_namespaces`` is 0:
the kernel counts user namespaces per namespace, so nothing the command starts can create one,
as on distributions that restrict them. Used by tests/test_isolation_user.py.
"""

import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000


def main(command: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(mapped_w)
        if libc.unshare(CLONE_NEWUSER) != 0:
            os._exit(90)
        os.write(ready_w, b"x")
        if os.read(mapped_r, 1) != b"x":
            os._exit(91)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        os.execvp(command[0], command)
    os.close(ready_w)
    os.close(mapped_r)
    if os.read(ready_r, 1) == b"x":
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("0 0 4294967295")
        os.write(mapped_w, b"x")
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv[1:])
