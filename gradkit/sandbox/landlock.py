"""Landlock (Linux 5.13+): an unprivileged process restricts what it and its children may reach.

Used where an unprivileged user namespace is refused. ``restrict`` builds one ruleset: read (and
map for execution) the folders Python, torch and the harness need and the system's own folders;
read and write the working folder; nothing else of the files; on kernels with Landlock ABI 4 or
later no TCP bind or connect; on ABI 6 or later no abstract unix socket and no signal to a process
outside the sandbox. Landlock also refuses ptrace access (and /proc/<pid>/mem, environ) to every
process outside the ruleset's domain. Everything through ``ctypes``; nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import os
from typing import Iterable, Optional

from gradkit.sandbox.confine import PR_SET_NO_NEW_PRIVS, libc, prctl

# the system calls have one number on every architecture
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
#: every filesystem right, by the ABI that introduced it
_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1,
              5: (1 << 16) - 1}
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)  # + TRUNCATE, IOCTL_DEV
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

#: the system's folders a run reads from (libraries, configuration, devices, /proc of its own)
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc",
               "/sys/devices/system/cpu", "/sys/fs/cgroup")
#: device files a run reads and writes
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall(number: int, *args) -> int:
    result = libc().syscall(ctypes.c_long(number), *args)
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def abi() -> int:
    """The kernel's Landlock ABI version; 0 if Landlock is absent or disabled."""
    try:
        return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0


def restrict(read: Iterable[str], write: Iterable[str], no_network: bool) -> Optional[str]:
    """Restrict this process (and its future children) to reading ``read`` and the system's
    folders, and reading and writing ``write``. Returns what was done, in words, or None when
    this kernel has no Landlock. Raises OSError if the kernel refused the ruleset."""
    version = abi()
    if version < 1:
        return None
    fs = _FS_RIGHTS[min(version, 5)]
    attr = _RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if version >= 4 and no_network
                        else 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if version >= 6 else 0)
    size = 24 if version >= 6 else 16 if version >= 4 else 8
    ruleset = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                       ctypes.c_uint32(0))
    try:
        reading = EXECUTE | READ_FILE | READ_DIR
        for path in list(SYSTEM_READ) + list(read):
            _allow(ruleset, path, reading)
        for path in DEVICES:
            _allow(ruleset, path, READ_FILE | WRITE_FILE | (fs & ((1 << 14) | (1 << 15))))
        for path in write:
            _allow(ruleset, path, fs)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    words = [f"Landlock ABI {version}: reads only Python's, torch's and the system's folders, "
             "writes only its working folder"]
    if attr.handled_access_net:
        words.append("no TCP bind or connect")
    if attr.scoped:
        words.append("no abstract unix socket or signal outside the run")
    return "; ".join(words)


def _allow(ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a folder this system does not have
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            access &= _FILE_ONLY
        rule = _PathBeneathAttr(access, fd)
        _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                 ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)
