"""Free space on the disks the sessions' stores live on: below `limits.min_free_disk` a session
takes no payment, so that nothing fills the disk its channels' states need (docs/security.md).

A payment costs its sender a wei and its payee's store a history record: a peer or a user
sending 1-wei payments by the thousand fills a disk at 0.4 to 0.8 MB/s, and every store on it then
fails (docs/storage.md, "Durability"): every session there signs nothing more. Below the floor
a session refuses every update but one that winds a channel down (a close, a virtual channel's
fold), ours and the peer's, with a clear error, and says so once (critical); disputes are
answered. Above it
again, it takes payments as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from perund.errors import FailedPrecondition

log = Logger(namespace="perund.node")

CHECK_INTERVAL: Final = 2.0
"""Seconds between two looks at the free space (a statvfs per session: cheap)."""

LOW: Final = "the node's disk is nearly full: it takes no payments for now"
"""What a refused update says, to the user and to the peer."""


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write on `folder`'s filesystem."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


class DiskGuard:
    """Watches the free space of each open session's store folder (module doc)."""

    def __init__(self, reactor: Any, min_free: int,
                 free: Callable[[Path], int] = free_bytes) -> None:
        self._reactor = reactor
        self.min_free = min_free
        self._free = free
        self._folders: dict[str, Path] = {}
        self.low: set[str] = set()
        """Sessions whose store's disk has less than `min_free` bytes free."""
        self._loop: LoopingCall | None = None

    def watch(self, session_id: str, folder: Path) -> None:
        """Watch `session_id`'s store folder (looked at at once, and from then on)."""
        self._folders[session_id] = folder
        self._look(session_id, folder)
        if self._loop is None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self._reactor
            self._loop.start(CHECK_INTERVAL, now=False)

    def unwatch(self, session_id: str) -> None:
        """The session closed."""
        self._folders.pop(session_id, None)
        self.low.discard(session_id)

    def check(self) -> None:
        """Look at every watched folder now."""
        for session_id, folder in list(self._folders.items()):
            self._look(session_id, folder)

    def refusal(self, session_id: str, winding_down: bool) -> FailedPrecondition | None:
        """Why the session takes no update now, or None; one that winds a channel down (a
        close, a fold) always passes."""
        if winding_down or session_id not in self.low:
            return None
        return FailedPrecondition(LOW, session=session_id)

    def stop(self) -> None:
        """Look no more."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _look(self, session_id: str, folder: Path) -> None:
        try:
            free = self._free(folder)
        except OSError:
            return  # a folder gone or unreadable: the store's own errors say more
        if free < self.min_free and session_id not in self.low:
            self.low.add(session_id)
            log.critical("session {session_id}: {free} bytes free on the disk of its store "
                         "({folder}), under limits.min_free_disk ({floor}): it takes no "
                         "payments until there is more (closes and disputes go on)",
                         session_id=session_id, free=free, folder=str(folder),
                         floor=self.min_free)
        elif free >= self.min_free and session_id in self.low:
            self.low.discard(session_id)
            log.info("session {session_id}: {free} bytes free on the disk of its store again: "
                     "it takes payments", session_id=session_id, free=free)
