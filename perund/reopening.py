"""Sessions the node could not open again at its start for a passing chain error: tried again,
with growing waits, until they open (docs/operations.md, "Restarts").

A session reopened at start has channels that may be in dispute: while it is not open nobody
watches them. The chain review saw a start whose chain check met two HTTP 502s leave a
session closed for good while the peer registered and concluded an old state. A chain error
(unreachable, an error object, a reply that does not decode) passes; a session file that no
longer opens (a bad config, a wrong password) does not, and waits for the operator as before.
A peer port held by another socket passes too: it may be let go (another program's, or a node
of a moment ago still closing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from perund.errors import (
    ChainMismatch,
    InvalidContracts,
    PortInUse,
    ProtocolError,
    ResourceExists,
)
from perund.words import plural

log = Logger(namespace="perund.node")

FIRST_RETRY: Final = 2.0
"""Seconds before the first retry; each later one waits twice as long, up to `MAX_RETRY`."""
MAX_RETRY: Final = 60.0

PASSING: Final = (ProtocolError, InvalidContracts, PortInUse)
"""The failures of an open that a retry may get past: the chain's, and a peer port another
socket holds for a while (an audit: a session with a channel in dispute stayed closed for good
after its port was busy for 40 s at the start)."""


class Reopener:
    """Tries again to open the sessions handed to `retry`, each until it opens or fails for
    a reason a retry cannot mend. `open_session(path)` opens one."""

    def __init__(self, reactor: Any, open_session: Callable[[str], Awaitable[Any]]) -> None:
        self._reactor = reactor
        self._open = open_session
        self._waiting: dict[str, DelayedCall] = {}

    @property
    def waiting(self) -> int:
        """Sessions waiting for their next try."""
        return len(self._waiting)

    def retry(self, path: str, error: Exception, attempt: int = 1) -> bool:
        """Try `path` again later if `error` may pass; whether it will be."""
        if not isinstance(error, PASSING):
            return False
        delay = min(FIRST_RETRY * 2 ** (attempt - 1), MAX_RETRY)
        log.error("could not open session {path} again: {error}; its channels are not watched "
                  "until it is: trying again in {delay:g} s", path=path, error=error,
                  delay=delay)
        self._waiting[path] = self._reactor.callLater(delay, self._try, path, attempt + 1)
        return True

    def _try(self, path: str, attempt: int) -> None:
        self._waiting.pop(path, None)
        Deferred.fromCoroutine(self._open_now(path, attempt))

    async def _open_now(self, path: str, attempt: int) -> None:
        try:
            session = await self._open(path)
        except ResourceExists:
            return  # a user opened it meanwhile
        except ChainMismatch as exc:
            # The node runs already: it cannot refuse to start any more. The operator decides.
            log.critical("session {path} is not opened again: {error}", path=path, error=exc)
        except Exception as exc:
            if not self.retry(path, exc, attempt):
                log.error("could not open session {path} again: {error}; the next start tries "
                          "again", path=path, error=exc)
        else:
            log.info("session {path} open again as {session_id} ({channels} restored)",
                     path=path, session_id=session.id, count=len(session.restored),
                     channels=plural(len(session.restored), "channel"))

    def stop(self) -> None:
        """Try no more (the node stops; its next start tries again)."""
        for call in self._waiting.values():
            if call.active():
                call.cancel()
        self._waiting.clear()
