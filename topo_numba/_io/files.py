"""Files on disk: removing a path, whatever it is; reserving a file's blocks."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _reserve(path: Path, start: int) -> None:
    """Allocate the disk blocks of a file from byte `start` on (a memory-mapped
    file written on a full disk kills the process with SIGBUS; reserved first,
    a full disk is an OSError here)."""
    size = path.stat().st_size
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, start, size - start)
            return
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    except AttributeError:   # no posix_fallocate (not POSIX)
        pass
    block = 1 << 24          # the file system cannot reserve: write the zeros
    with open(path, "r+b") as f:
        f.seek(start)
        for offset in range(start, size, block):
            f.write(bytes(min(block, size - offset)))
