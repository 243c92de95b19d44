"""Exclusive, non-blocking flocks on lock files: one process at a time holds a session's store
(perund/storage/store.py) or a node's data folder (perund/node.py)."""

from __future__ import annotations

import errno
import fcntl
import os


class LockHeld(Exception):
    """Another process, or another open in this one, holds the lock; `holder` is the pid it
    wrote there ("unknown" if none)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def hold(lock_path: str | os.PathLike[str]) -> int:
    """Take an exclusive flock on `lock_path` (created 0600) and write our pid into it; the
    descriptor, whose closing releases the lock. `LockHeld` if it is held already; other
    failures (OSError, ELOOP for a symbolic link) as they come."""
    # Not through a symbolic link: a lock file is truncated and written (docs/security.md).
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise LockHeld(holder) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holder_of(lock_path: str | os.PathLike[str]) -> str | None:
    """The pid written in `lock_path` ("unknown" if none) while another process holds its
    lock; None when nobody does (or there is no lock file). Takes nothing: a look before a
    daemon forks, so that a second node fails where its operator sees it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            return None
        return None
    finally:
        os.close(fd)  # drops the shared lock, if taken
