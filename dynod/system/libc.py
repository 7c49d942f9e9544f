"""The C library calls Python's standard library lacks: mount(2), umount2(2), unshare(2).

The only module that imports ctypes. Each call raises OSError with the C errno (like
``os`` functions do), so callers test ``exc.errno`` and never read ``errno`` themselves.
"""

from __future__ import annotations

import ctypes
import functools
import os

# <sys/mount.h>
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2
# <sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


@functools.cache
def _libc() -> ctypes.CDLL:
    """The process's own C library (the symbols of the running interpreter)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.unshare.argtypes = [ctypes.c_int]
    return libc


def _failed(target: str | os.PathLike[str] | None = None) -> OSError:
    """The OSError ``os`` would raise: the errno, its text, and the path if any."""
    err = ctypes.get_errno()
    if target is None:
        return OSError(err, os.strerror(err))
    return OSError(err, os.strerror(err), os.fspath(target))


def mount(source: str | os.PathLike[str], target: str | os.PathLike[str], fstype: str,
          flags: int, data: str | None = None) -> None:
    """mount(2). Raises OSError."""
    if _libc().mount(os.fsencode(source), os.fsencode(target), fstype.encode(), flags,
                     None if data is None else data.encode()):
        raise _failed(target)


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2). Raises OSError (EINVAL: not a mount point)."""
    if _libc().umount2(os.fsencode(target), flags):
        raise _failed(target)


def unshare(flags: int) -> None:
    """unshare(2): the calling thread leaves the namespaces in ``flags``. Raises OSError."""
    if _libc().unshare(flags):
        raise _failed()
