"""Intel AMX on x86-64 Linux: whether this process was granted it, and denying it to a benchmark.

XNNPACK (inside LiteRT) asks Linux for the AMX tile state with
``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``; when it is granted, int8 GEMMs and 1x1
convolutions run on AMX kernels that multiply 16 x 64-byte tiles. A reduction dimension below 64
is padded to 64, so the narrow 1x1 convolutions of a mobile network (16..96 input channels) cost
about as much as 64-channel ones and int8 gains little over fp32 on such a host, while phones
and most x86 CPUs (AVX512-VNNI, AVX-VNNI, AVX2) have no AMX at all.

``deny()`` installs a seccomp filter that fails that one request with EPERM, so XNNPACK falls back
to the kernels it uses on CPUs without AMX. It must run before the runtime initialises (at the
start of a benchmark child process); it lasts for the life of the process and its children.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
import sys

ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158  # x86-64
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000

_denied = False


def supported() -> bool:
    """x86-64 Linux, where both the question and the filter make sense."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def cpu_has_amx() -> bool:
    """The CPU advertises AMX int8 tiles (``amx_int8`` in /proc/cpuinfo)."""
    from ._host import cpu_flags

    return "amx_int8" in cpu_flags()


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def granted() -> bool | None:
    """Whether this process holds AMX tile permission (None where the question does not apply)."""
    if not supported():
        return None
    mask = ctypes.c_uint64(0)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(ARCH_GET_XCOMP_PERM),
                    ctypes.byref(mask)) != 0:
        return None  # kernel without dynamic xstate permissions (< 5.16)
    return bool(mask.value >> XFEATURE_XTILEDATA & 1)


def state() -> str:
    """AMX in this process: "granted" (a runtime asked and may run AMX kernels), "denied",
    "not requested", or "n/a" (no AMX on this CPU or OS)."""
    if not supported() or not cpu_has_amx():
        return "n/a"
    if _denied:
        return "denied"
    return "granted" if granted() else "not requested"


def _filter() -> bytes:
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    prog = [
        (ld, 0, 0, 4),                        # seccomp_data.arch
        (jeq, 0, 5, _AUDIT_ARCH_X86_64),      # another ABI: allow
        (ld, 0, 0, 0),                        # seccomp_data.nr
        (jeq, 0, 3, _SYS_ARCH_PRCTL),         # not arch_prctl: allow
        (ld, 0, 0, 16),                       # args[0], low 32 bits
        (jeq, 0, 1, ARCH_REQ_XCOMP_PERM),     # not the AMX request: allow
        (ret, 0, 0, _SECCOMP_RET_ERRNO | errno.EPERM),
        (ret, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def deny() -> None:
    """Make every later AMX permission request of this process (and its children) fail.

    Raises OSError where it cannot be done (not x86-64 Linux, seccomp unavailable).
    """
    global _denied
    if not supported():
        raise OSError(f"denying AMX needs x86-64 Linux, this is {platform.system()} {platform.machine()}")
    if granted():
        raise OSError("AMX was already granted to this process: deny it before any runtime loads")
    code = _filter()
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code) // 8, ctypes.addressof(buf))
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {errno.errorcode.get(err, err)}")
    _denied = True
