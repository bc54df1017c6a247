"""Confining a submission's process on Linux: namespaces, a read-only view of the files, no
privileges, a system-call filter and resource limits.

Every step is best effort and returns what it achieved, so the report can say which isolation this
machine allowed. Everything goes through ``ctypes`` to libc; nothing here imports torch. The
functions are called by ``gradkit.sandbox.worker`` in the processes it forks, never in the grader.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import stat
import struct
from typing import Any, Iterable, Optional

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
# the new mount API's system calls have one number on every architecture
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECCOMP_MODE_FILTER = 2

_libc: Optional[ctypes.CDLL] = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _ok(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def prctl(option: int, arg: int = 0) -> None:
    _ok(libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                     ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl({option})")


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (so it can stop them), not to init."""
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        return True
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    try:
        prctl(PR_SET_PDEATHSIG, 9)
    except (OSError, AttributeError):
        pass


def unshare(flags: int) -> bool:
    try:
        return libc().unshare(ctypes.c_int(flags)) == 0
    except AttributeError:
        return False


CLONE_NEWUSER = 0x10000000


def enter_user_namespace() -> Optional[str]:
    """Move this (single-threaded) process into a new user namespace in which it is root (its own
    uid and gid mapped to 0), holding every capability over the namespaces it creates from now
    on, and none over the system. Returns None, or why the kernel refused."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        if libc().unshare(ctypes.c_int(CLONE_NEWUSER)) != 0:
            return os.strerror(ctypes.get_errno())
    except AttributeError:
        return "no unshare in this C library"
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                           ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as exc:
        return f"cannot map the user ({exc.strerror})"
    return None


class PidNamespaces:
    """A fresh PID namespace for each run, made from one long-lived process (the worker).

    ``unshare(CLONE_NEWPID)`` moves only the caller's *next* children into a new namespace, and
    the kernel refuses a second one while the first is in force; re-entering the worker's own
    namespace with ``setns`` first allows one per run. The first child forked or spawned after
    ``fresh()`` is PID 1 of the new namespace: when it exits, the kernel kills everything else
    in it.
    """

    def __init__(self) -> None:
        self.own: Optional[int] = None
        try:
            self.own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass

    def fresh(self) -> bool:
        """The next child starts a new PID namespace; False if this machine does not allow it."""
        if self.own is None:
            return False
        try:
            if libc().setns(ctypes.c_int(self.own), ctypes.c_int(CLONE_NEWPID)) != 0:
                return False
        except AttributeError:
            return False
        return unshare(CLONE_NEWPID)

    def ordinary(self) -> None:
        """Children start in the worker's own namespace again."""
        if self.own is not None:
            libc().setns(ctypes.c_int(self.own), ctypes.c_int(CLONE_NEWPID))


# --- files ---------------------------------------------------------------------------------

def _mount(source: Optional[str], target: str, fstype: Optional[str], flags: int,
           data: Optional[str] = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    _ok(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _set_read_only(path: str, read_only: bool, recursive: bool) -> None:
    attr = _MountAttr(MOUNT_ATTR_RDONLY if read_only else 0, 0 if read_only else MOUNT_ATTR_RDONLY,
                      0, 0)
    result = libc().syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD),
                            path.encode(), ctypes.c_uint(AT_RECURSIVE if recursive else 0),
                            ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _ok(result, f"mount_setattr {path}")


def private_mounts() -> None:
    """Mount changes from here on stay in this process's own mount namespace."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def others_can_read(path: str) -> bool:
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


def blocking_folder(path: str) -> Optional[str]:
    """The outermost folder above ``path`` that others cannot search, if any."""
    parts = os.path.realpath(path).split(os.sep)
    for depth in range(2, len(parts)):
        folder = os.sep.join(parts[:depth]) or os.sep
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return folder
        except OSError:
            return None
    return None


def open_up(needed: Iterable[str]) -> list[str]:
    """Make ``needed`` folders reachable by others, in this mount namespace only.

    A folder such as ``/root`` (mode 700) that stands between an unprivileged user and the Python
    install is covered by an empty, read-only tmpfs showing only the entries on the way to the
    needed folders, each bind-mounted from the real one. Returns the folders covered.
    """
    covered: list[str] = []
    for _ in range(8):  # nested private folders are opened one level per round
        wanted: dict[str, set[str]] = {}
        for path in needed:
            folder = blocking_folder(path)
            if folder is not None:
                rest = os.path.relpath(os.path.realpath(path), folder).split(os.sep)
                wanted.setdefault(folder, set()).add(rest[0])
        if not wanted:
            return covered
        for folder, entries in sorted(wanted.items()):
            trees = {}
            for entry in sorted(entries):
                fd = libc().syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD),
                                    os.path.join(folder, entry).encode(),
                                    ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
                                                  | AT_RECURSIVE))
                if fd < 0:
                    _ok(-1, f"open_tree {folder}/{entry}")
                trees[entry] = fd
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
            for entry, fd in trees.items():
                full = os.path.join(folder, entry)
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(full)
                else:
                    os.close(os.open(full, os.O_CREAT | os.O_WRONLY, 0o644))
                result = libc().syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(fd), b"",
                                        ctypes.c_int(AT_FDCWD), full.encode(),
                                        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
                os.close(fd)
                _ok(result, f"move_mount {full}")
            _set_read_only(folder, True, recursive=False)
            covered.append(folder)
    return covered


#: folders never covered, whatever a request asks: the system's own
SYSTEM_FOLDERS = ("/", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
                  "/opt", "/var", "/proc", "/sys", "/dev", "/run", "/srv", "/mnt", "/media",
                  "/boot", "/snap", "/nix")


def _outermost(paths: Iterable[str]) -> list[str]:
    found: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths}, key=len):
        if not any(path == k or path.startswith(k.rstrip(os.sep) + os.sep) for k in found):
            found.append(path)
    return found


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def cover(folders: Iterable[str], keep: Iterable[str]) -> list[str]:
    """Cover each of ``folders`` with an empty read-only tmpfs, showing only the ``keep`` paths
    inside it, each bind-mounted from the real one (the entries on the way to them are empty
    folders). Outer folders first, so a folder inside a kept path is covered on the view.
    Returns the folders covered (a folder that no longer shows, or a system folder, is not)."""
    keep = _outermost(keep)
    covered: list[str] = []
    for folder in sorted({os.path.realpath(f) for f in folders}, key=lambda f: (f.count(os.sep),
                                                                                 f)):
        if folder in SYSTEM_FOLDERS or not os.path.isdir(folder) or folder in keep:
            continue
        inner = [k for k in keep if _inside(k, folder) and os.path.exists(k)]
        trees = {}
        try:
            for path in inner:
                fd = libc().syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD),
                                    path.encode(), ctypes.c_uint(OPEN_TREE_CLONE
                                                                 | OPEN_TREE_CLOEXEC
                                                                 | AT_RECURSIVE))
                if fd < 0:
                    _ok(-1, f"open_tree {path}")
                trees[path] = fd
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
            for path, fd in trees.items():
                parts = os.path.relpath(path, folder).split(os.sep)
                at = folder
                for part in parts[:-1]:
                    at = os.path.join(at, part)
                    if not os.path.isdir(at):
                        os.mkdir(at)
                        os.chmod(at, 0o755)
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(path)
                else:
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
                _ok(libc().syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(fd), b"",
                                   ctypes.c_int(AT_FDCWD), path.encode(),
                                   ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {path}")
            _set_read_only(folder, True, recursive=False)
        finally:
            for fd in trees.values():
                os.close(fd)
        covered.append(folder)
    return covered


def hide(folder: str) -> None:
    """Cover ``folder`` with an empty read-only tmpfs."""
    _mount("tmpfs", folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
           "size=4k,mode=555")


def private_workdir(workdir: str, max_bytes: int, owner: Optional[int]) -> None:
    """Replace ``workdir`` by a tmpfs of at most ``max_bytes`` holding a copy of its files (as many
    as fit: the submission's source itself travels in the request)."""
    source = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        options = f"size={max_bytes},nr_inodes=4096,mode=700"
        if owner is not None:
            options += f",uid={owner},gid={owner}"
        _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for name in os.listdir(source):
            try:
                if not stat.S_ISREG(os.stat(name, dir_fd=source, follow_symlinks=False).st_mode):
                    continue
                src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=source)
            except OSError:
                continue
            target = os.path.join(workdir, name)
            try:
                dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    while chunk := os.read(src, 1 << 20):
                        os.write(dst, chunk)
                finally:
                    os.close(dst)
                if owner is not None:
                    os.chown(target, owner, owner)
            except OSError:  # no room left: the submission gets the files that fit
                try:
                    os.unlink(target)
                except OSError:
                    pass
            finally:
                os.close(src)
    finally:
        os.close(source)


def read_only_except(writable: Iterable[str]) -> None:
    """Every mount read-only (recursively), except the ``writable`` mounts."""
    _set_read_only("/", True, recursive=True)
    for path in writable:
        _set_read_only(path, False, recursive=False)


def mount_proc() -> None:
    """A /proc of this PID namespace: the submission sees only its own processes."""
    _mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


# --- privileges ----------------------------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities(keep_for_now: bool = False) -> None:
    """No capabilities after any exec and, unless ``keep_for_now``, none now either.

    ``keep_for_now`` leaves the current ones (to change user next, which clears them).
    """
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    try:
        _ok(libc().prctl(ctypes.c_int(PR_CAP_AMBIENT), ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL),
                         ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), "ambient")
    except OSError:
        pass
    if keep_for_now:
        return
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _ok(libc().capset(ctypes.byref(header), data), "capset")


def become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


# --- system calls --------------------------------------------------------------------------

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
#: system calls with the same number on every architecture (the newer ones)
_GENERIC = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
            "fspick": 433, "mount_setattr": 442, "io_uring_setup": 425, "pidfd_send_signal": 424,
            "clone3": 435, "pidfd_getfd": 438}
_SYSCALLS = {
    "x86_64": {"clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62, "ptrace": 101,
               "rt_sigqueueinfo": 129, "tkill": 200, "tgkill": 234, "rt_tgsigqueueinfo": 297,
               "process_vm_readv": 310, "process_vm_writev": 311, "execveat": 322,
               "socket": 41, "add_key": 248, "request_key": 249, "keyctl": 250,
               "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
               "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64, "semop": 65,
               "semctl": 66, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
               "semtimedop": 220, "mq_open": 240, "bpf": 321, "perf_event_open": 298,
               "userfaultfd": 323, **_GENERIC},
    "aarch64": {"clone": 220, "execve": 221, "kill": 129, "ptrace": 117, "rt_sigqueueinfo": 138,
                "tkill": 130, "tgkill": 131, "rt_tgsigqueueinfo": 240, "process_vm_readv": 270,
                "process_vm_writev": 271, "execveat": 281, "socket": 198, "add_key": 217,
                "request_key": 218, "keyctl": 219, "unshare": 97, "setns": 268, "mount": 40,
                "umount2": 39, "pivot_root": 41, "msgget": 186, "msgctl": 187, "msgrcv": 188,
                "msgsnd": 189, "semget": 190, "semctl": 191, "semtimedop": 192, "semop": 193,
                "shmget": 194, "shmctl": 195, "shmat": 196, "mq_open": 180, "bpf": 280,
                "perf_event_open": 241, "userfaultfd": 282, **_GENERIC},
}
#: system calls that act on the process named by their first argument: allowed on itself only
_SELF_ONLY = ("kill", "rt_sigqueueinfo", "tkill", "tgkill", "rt_tgsigqueueinfo")
_DENIED = ("fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv",
           "process_vm_writev", "pidfd_send_signal", "pidfd_getfd",
           # channels that outlive a run or cross between runs: the kernel keyring, System V
           # and POSIX message queues and shared memory
           "add_key", "request_key", "keyctl", "shmget", "shmat", "shmctl", "semget", "semop",
           "semctl", "semtimedop", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open",
           # no new namespaces, mounts or kernel programs (the view it was given stays)
           "unshare", "setns", "mount", "umount2", "pivot_root", "open_tree", "move_mount",
           "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "bpf", "perf_event_open",
           "userfaultfd", "io_uring_setup")
SYSCALL_FILTER = ("no new processes or programs (fork, exec), signals to itself only, "
                  "no ptrace, keyring, System V IPC, message queues, mounts or namespaces "
                  "(seccomp)")
#: added to SYSCALL_FILTER where no network namespace stands between the run and the network
UNIX_SOCKETS_ONLY = "sockets of the unix family only"
AF_UNIX = 1

_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_RET_ERRNO = 0x00050000
_LD_ABS, _JEQ, _JSET, _JGE, _RET = 0x20, 0x15, 0x45, 0x35, 0x06


def _filter_program(arch: str, self_pid: int, unix_sockets_only: bool = False) -> bytes:
    """A classic-BPF seccomp program (see seccomp(2)); jumps are resolved from labels."""
    numbers = _SYSCALLS[arch]
    code: list[tuple] = []  # (op, k, jump-if-true label, jump-if-false label) or a label
    code += [(_LD_ABS, 4, None, None),
             (_JEQ, _AUDIT_ARCH[arch], None, "kill"),
             (_LD_ABS, 0, None, None)]
    if arch == "x86_64":
        code.append((_JGE, 0x40000000, "eperm", None))  # the x32 ABI
    code.append((_JEQ, numbers["clone"], "clone", None))
    code.append((_JEQ, numbers["clone3"], "enosys", None))
    for name in _SELF_ONLY:
        code.append((_JEQ, numbers[name], "self", None))
    if unix_sockets_only:
        code.append((_JEQ, numbers["socket"], "socket", None))
    for name in _DENIED:
        if name in numbers:
            code.append((_JEQ, numbers[name], "eperm", None))
    code += [(_RET, _RET_ALLOW, None, None),
             "clone", (_LD_ABS, 16, None, None), (_JSET, CLONE_THREAD, "allow", "eperm"),
             "self", (_LD_ABS, 16, None, None), (_JEQ, self_pid, "allow", "eperm"),
             "socket", (_LD_ABS, 16, None, None), (_JEQ, AF_UNIX, "allow", "eperm"),
             "allow", (_RET, _RET_ALLOW, None, None),
             "eperm", (_RET, _RET_ERRNO | errno.EPERM, None, None),
             # clone3 says "not implemented", so the C library falls back to clone for threads
             "enosys", (_RET, _RET_ERRNO | errno.ENOSYS, None, None),
             "kill", (_RET, _RET_KILL, None, None)]
    labels, index = {}, 0
    for item in code:
        if isinstance(item, str):
            labels[item] = index
        else:
            index += 1
    out, index = [], 0
    for item in code:
        if isinstance(item, str):
            continue
        op, k, yes, no = item
        jt = labels[yes] - index - 1 if yes else 0
        jf = labels[no] - index - 1 if no else 0
        out.append(struct.pack("=HBBI", op, jt, jf, k))
        index += 1
    return b"".join(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def filter_syscalls(unix_sockets_only: bool = False) -> Optional[str]:
    """Install the seccomp filter in this thread (and every thread it starts); why not, if not.
    ``unix_sockets_only``: ``socket`` too is refused for every family but AF_UNIX."""
    arch = platform.machine()
    if arch not in _SYSCALLS:
        return f"no filter (gradkit has no system-call table for {arch})"
    program = _filter_program(arch, os.getpid(), unix_sockets_only)
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _ok(libc().prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                     ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")
    return None


# --- resource limits -----------------------------------------------------------------------

def apply_limits(limits: dict[str, Any], bind_processes: bool) -> list[str]:
    """Set the rlimits ``limits`` asks for; return the names of those set."""
    applied = []
    wanted = {
        "cpu_seconds": (resource.RLIMIT_CPU, limits["cpu_seconds"]),
        "address_space": (resource.RLIMIT_AS, limits["address_space"]),
        "file_size": (resource.RLIMIT_FSIZE, limits["file_size"]),
        "open_files": (resource.RLIMIT_NOFILE, limits["open_files"]),
        "core_dumps": (resource.RLIMIT_CORE, 0),
    }
    if bind_processes:  # RLIMIT_NPROC does not bind root
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
