"""The converter's sandbox: a process that can write only its work directory and cannot network.

Loading a TorchScript model runs code from the archive (a module's ``__setstate__``
runs inside ``torch.jit.load``), and ``torch.from_file(path, shared=True)`` creates
or overwrites any file the user may write. So a conversion runs in a child process
that confines itself with :func:`confine` before it imports torch or reads the model:

* **Landlock** (Linux >= 5.13, unprivileged): the process may read only the Python
  installation and its import path, the system libraries, ``/proc``, ``/sys`` and a
  few device and ``/etc`` files; it may write only inside its work directory. It
  cannot ptrace or signal (Landlock ABI >= 6) processes outside the sandbox, nor
  mount anything. With ABI >= 4 TCP ``bind``/``connect`` are denied as well.
* **seccomp** (a small BPF filter, x86-64 and arm64): ``socket`` (every family:
  TCP, UDP, Unix, netlink), ``io_uring_setup``, ``execve``/``execveat``, path
  ``truncate``, the path-based ``chmod``/``chown``/``xattr`` calls and ``ptrace``
  fail with ``EPERM``; a syscall of another ABI (x32, i386) kills the process.
* ``no_new_privs``, and for root an empty capability set.

Both Landlock and seccomp apply to the calling thread and what it starts later, so
:func:`confine` must run while the process has one thread (before numpy or torch
start theirs); it checks that. Nothing here needs root, a setuid helper, user
namespaces or a package: :func:`unavailable` says why it cannot be done, if so.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

# Landlock (include/uapi/linux/landlock.h)
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # same number on every arch
_VERSION_FLAG = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | (1 << 14) | (1 << 15)  # + TRUNCATE, IOCTL_DEV
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_TCP = 0b11  # BIND_TCP | CONNECT_TCP, ABI >= 4
_SCOPES = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL, ABI >= 6

# seccomp (include/uapi/linux/seccomp.h, filter.h, audit.h)
_DENIED = (  # syscall: (x86_64 number, aarch64 number); 0 where the arch has no such call
    ("socket", 41, 198), ("io_uring_setup", 425, 425), ("execve", 59, 221),
    ("execveat", 322, 281), ("truncate", 76, 45), ("chmod", 90, 0), ("fchmodat", 268, 53),
    ("fchmodat2", 452, 452), ("chown", 92, 0), ("lchown", 94, 0), ("fchownat", 260, 54),
    ("setxattr", 188, 5), ("lsetxattr", 189, 6), ("removexattr", 197, 14),
    ("lremovexattr", 198, 15), ("setxattrat", 463, 463), ("removexattrat", 466, 466),
    ("ptrace", 101, 117),
)  # fmt: skip
_ARCH = {  # machine: (AUDIT_ARCH_*, index in _DENIED, first syscall of a foreign ABI (x32))
    "x86_64": (0xC000003E, 1, 0x40000000),
    "aarch64": (0xC00000B7, 2, None),
}
_RET_KILL, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_LD_W_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_CAPSET = {"x86_64": 126, "aarch64": 91}

# What the converter may read besides the Python paths (when they exist).
_SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/proc", "/sys")
_SYSTEM_FILES = (
    "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/etc/ld.so.cache",
    "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/nsswitch.conf",
    "/etc/passwd", "/etc/group", "/etc/os-release",
)  # fmt: skip


class SandboxError(Exception):
    """The sandbox cannot be made here; the message says why."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    if sys.platform != "linux":
        return 0
    abi = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(abi), 0)


def unavailable() -> str | None:
    """Why no sandbox can be made on this system, or None when it can."""
    if sys.platform != "linux":
        return f"the converter's sandbox needs Linux (this is {sys.platform})"
    if platform.machine() not in _ARCH:
        return f"the converter's sandbox supports x86_64 and aarch64, not {platform.machine()}"
    if landlock_abi() < 1:
        return (
            "the kernel has no Landlock (Linux >= 5.13 with landlock in its LSM list is needed; "
            f"this is {platform.release()})"
        )
    return None


def confine(work: Path, readable: Iterable[str | Path] = ()) -> None:
    """Confine this process (irreversibly): write only under ``work``, read only what it needs.

    ``readable`` adds directories or files to read (the Python import path is always
    added). Raises :class:`SandboxError` when a step fails; the process must then stop.
    """
    reason = unavailable()
    if reason is not None:
        raise SandboxError(reason)
    if _threads() != 1:
        raise SandboxError("the sandbox must be entered while the process has one thread")
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(f"prctl(NO_NEW_PRIVS): {_err()}")
    _landlock(libc, work, [*_python_paths(), *_SYSTEM_DIRS, *_SYSTEM_FILES, *readable])
    _seccomp(libc)
    if os.geteuid() == 0:
        _drop_capabilities(libc)


def _threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _err() -> str:
    return os.strerror(ctypes.get_errno())


def _python_paths() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in sys.path if p)
    paths.add(str(Path(sys.executable).resolve().parent))
    return sorted(paths)


def _landlock(libc: ctypes.CDLL, work: Path, readable: list[str | Path]) -> None:
    abi = landlock_abi()
    fs = _FS_BY_ABI[max(k for k in _FS_BY_ABI if k <= abi)]
    attr = struct.pack("=Q", fs)
    if abi >= 4:
        attr += struct.pack("=Q", _NET_TCP)
    if abi >= 6:
        attr += struct.pack("=Q", _SCOPES)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise SandboxError(f"landlock_create_ruleset: {_err()}")
    try:
        read = _EXECUTE | _READ_FILE | _READ_DIR
        for path in readable:
            _allow(libc, ruleset, Path(path), read & fs, missing_ok=True)
        _allow(libc, ruleset, Path("/dev/null"), _WRITE_FILE, missing_ok=True)
        _allow(libc, ruleset, work, fs, missing_ok=False)
        if libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise SandboxError(f"landlock_restrict_self: {_err()}")
    finally:
        os.close(ruleset)


def _allow(libc: ctypes.CDLL, ruleset: int, path: Path, access: int, *, missing_ok: bool) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        if missing_ok:
            return
        raise SandboxError(f"cannot open {path} for the sandbox") from None
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            access &= _FILE_ONLY
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, ctypes.c_uint32(0)) != 0:
            raise SandboxError(f"landlock_add_rule {path}: {_err()}")
    finally:
        os.close(fd)


def _seccomp(libc: ctypes.CDLL) -> None:
    arch, column, foreign = _ARCH[platform.machine()]
    denied = [int(row[column]) for row in _DENIED if row[column]]
    # Layout: check arch; load nr; [foreign ABI -> kill]; each denied nr -> errno; allow.
    prog: list[tuple[int, int, int, int]] = [(_LD_W_ABS, 0, 0, 4), (_JEQ, 1, 0, arch)]
    prog.append((_RET, 0, 0, _RET_KILL))
    prog.append((_LD_W_ABS, 0, 0, 0))
    if foreign is not None:  # -> the last RET KILL, past the denied checks, ALLOW and ERRNO
        prog.append((_JGE, len(denied) + 2, 0, foreign))
    for i, nr in enumerate(denied):
        prog.append((_JEQ, len(denied) - i, 0, nr))  # -> RET ERRNO
    prog.append((_RET, 0, 0, _RET_ALLOW))
    prog.append((_RET, 0, 0, _RET_ERRNO | errno.EPERM))
    prog.append((_RET, 0, 0, _RET_KILL))
    code = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    filters = ctypes.create_string_buffer(code, len(code))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Prog(len(prog), ctypes.cast(filters, ctypes.c_void_p))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise SandboxError(f"seccomp: {_err()}")


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)  # v3, this pid
    data = ctypes.create_string_buffer(bytes(24), 24)  # effective, permitted, inheritable x2
    if libc.syscall(_CAPSET[platform.machine()], header, data) != 0:
        raise SandboxError(f"capset: {_err()}")
