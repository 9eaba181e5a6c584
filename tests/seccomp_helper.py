"""Make io_uring unavailable in this process, as Docker's default seccomp
profile does: a seccomp filter that answers io_uring_setup, io_uring_enter and
io_uring_register with an errno. Pure Python (ctypes); irreversible for the
process and its children, so call it only in a subprocess, before
``import ouring``.

    python tests/seccomp_helper.py EPERM -- python -m pytest ...

runs a command under the filter (``exec``: the filter is inherited).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

# The io_uring syscalls have the same numbers on x86_64 and aarch64 (the
# generic table): io_uring_setup 425, io_uring_enter 426, io_uring_register 427.
IO_URING_SYSCALLS = (425, 426, 427)
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
_NR_OFFSET = 0  # offsetof(struct seccomp_data, nr)
_ARCH_OFFSET = 4  # offsetof(struct seccomp_data, arch)


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)  # struct sock_filter


def block_io_uring(code: int = errno.EPERM) -> None:
    """Install the filter: the io_uring syscalls fail with ``code``; every
    other syscall, and every other architecture's, is allowed."""
    machine = platform.machine()
    if machine not in _AUDIT_ARCH:
        raise RuntimeError(f"no io_uring syscall numbers known for {machine}")
    n = len(IO_URING_SYSCALLS)
    program = [
        _insn(_BPF_LD_W_ABS, 0, 0, _ARCH_OFFSET),
        _insn(_BPF_JEQ_K, 0, n + 1, _AUDIT_ARCH[machine]),  # other arch: allow
        _insn(_BPF_LD_W_ABS, 0, 0, _NR_OFFSET),
    ]
    for i, nr in enumerate(IO_URING_SYSCALLS):
        program.append(_insn(_BPF_JEQ_K, n - i, 0, nr))  # match: jump to the errno return
    program.append(_insn(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW))
    program.append(_insn(_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | (code & 0xFFFF)))
    code_buf = ctypes.create_string_buffer(b"".join(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("=H6xQ", len(program), ctypes.addressof(code_buf))
    fprog_buf = ctypes.create_string_buffer(fprog)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog_buf), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def io_uring_setup_errno() -> int:
    """What a raw io_uring_setup answers here (0: it worked)."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(IO_URING_SYSCALLS[0], 1, params)
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()


if __name__ == "__main__":
    # seccomp_helper.py ERRNO_NAME -- command...
    name, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        raise SystemExit("usage: seccomp_helper.py EPERM|ENOSYS -- command [args...]")
    block_io_uring(getattr(errno, name))
    os.execvp(command[0], command)
