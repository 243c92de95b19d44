"""When a virtual channel's fold that failed goes again (docs/protocol.md, "A fold goes again
before anything goes on-chain").

Rules, stated once:

- a failure may pass (`passing`) when the intermediary was unreachable, the connection
  dropped under the fold, or she refused it for want of a match in her window; any other
  failure does not (she refused it as wrong, or let her whole time pass without an answer on
  a live connection: hung, or keeping the fold; or the store broke): the ledger goes
  on-chain;
- after a dropped connection the fold goes again at once, `REFOLDS` times (the send queue
  first waits for her Sync, which shows whether she signed it); otherwise, and after those,
  after a pause of 1, 2, then `PAUSE_MAX` seconds, each shortened by a random share of up to
  half (two parties whose folds keep missing each other's in her window do not keep the same
  rhythm), for `PATIENCE` seconds from its first passing failure. Nothing is urgent
  meanwhile: the virtual channel's final state is signed by both parties, and the ledger's
  latest state holds the lock, which that state settles;
- `hurry` (a close of the ledger waits for the fold): a pausing fold goes at once, and nothing
  that fails after that goes again;
- each time the fold is due, `send` is told; it checks that the fold is still wanted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.base import DelayedCall
from twisted.logger import Logger

from perund.channel.events import Reason
from perund.channel.types import ChannelID, VirtualProof
from perund.errors import PeerDisconnected, PeerRejected, PeerUnreachable

log = Logger(namespace="perund.virtual")

REFOLDS: Final = 3
"""How often a fold goes again at once after its connection dropped."""

PATIENCE: Final = 300.0
"""Seconds, from its first passing failure, a fold goes on going again."""

PAUSE_MAX: Final = 4.0
"""The longest pause before a fold goes again. Below the intermediary's default lock window
(10 s): two parties pausing by turns meet within one window whatever their rhythm."""

Send = Callable[[ChannelID, ChannelID, VirtualProof], None]
"""Send the fold of a virtual channel (its ID, its parent's, the proof) if still wanted."""


def pause_before(attempt: int, share: float) -> float:
    """Seconds to wait before going again for the `attempt`-th time (1, 2, then `PAUSE_MAX`),
    less `share` (0 ≤ share < 1, random) of up to half of it."""
    return min(PAUSE_MAX, 0.5 * 2.0 ** attempt) * (1 - share / 2)


def passing(error: BaseException | None) -> bool:
    """Whether a fold's failure may pass if it goes again (module doc)."""
    if isinstance(error, PeerUnreachable | PeerDisconnected):
        return True
    return isinstance(error, PeerRejected) and error.data.get("reason") == Reason.NO_MATCH.value


@dataclass(slots=True)
class _Retry:
    """A fold that failed: since when, how often it went again, and the call sending it next."""

    since: float
    reconnections: int = 0
    pauses: int = 0
    hurried: bool = False
    timer: DelayedCall | None = None


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class FoldRetries:
    """The folds of one client that failed and go again (module doc), sent with `send`;
    `rng` shortens the pauses (a seeded one in tests)."""

    def __init__(self, reactor: Any, send: Send, rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._send = send
        self._random = (rng or random.Random()).random
        self._retries: dict[ChannelID, _Retry] = {}

    def again(self, vid: ChannelID, parent_id: ChannelID, proof: VirtualProof,
              error: BaseException | None) -> bool:
        """Whether the fold of `vid` goes again after `error`; if it does, `send` is told at
        once or after a pause."""
        if not passing(error):
            self.forget(vid)
            return False
        now = self._reactor.seconds()
        retry = self._retries.setdefault(vid, _Retry(now))
        if retry.hurried or now - retry.since >= PATIENCE:
            self.forget(vid)
            return False
        if isinstance(error, PeerDisconnected) and retry.reconnections < REFOLDS:
            retry.reconnections += 1
            log.info("virtual channel {vid}: the connection to the intermediary dropped under "
                     "its fold; folding again once it is back", vid=_hex(vid))
            self._send(vid, parent_id, proof)
            return True
        retry.pauses += 1
        delay = pause_before(retry.pauses, self._random())
        log.info("virtual channel {vid}: the intermediary did not fold it ({why}); folding "
                 "again in {delay:.1f} s", vid=_hex(vid), why=getattr(error, "message", error),
                 delay=delay)
        retry.timer = self._reactor.callLater(delay, self._due, vid, parent_id, proof)
        return True

    def pausing(self, vid: ChannelID) -> bool:
        """Whether the fold of `vid` waits to go again."""
        retry = self._retries.get(vid)
        return retry is not None and retry.timer is not None

    def hurry(self, vid: ChannelID) -> None:
        """A close of the ledger waits for this fold: if it pauses, it goes now; whatever
        fails after this (also a first attempt still under way) does not go again."""
        retry = self._retries.setdefault(vid, _Retry(self._reactor.seconds()))
        retry.hurried = True
        if retry.timer is not None and retry.timer.active():
            retry.timer.reset(0)

    def forget(self, vid: ChannelID) -> None:
        """The fold of `vid` is over (signed, or given up): drop what was kept of it."""
        retry = self._retries.pop(vid, None)
        if retry is not None and retry.timer is not None and retry.timer.active():
            retry.timer.cancel()

    def stop(self) -> None:
        """Cancel every pause (the next start folds again)."""
        for vid in list(self._retries):
            self.forget(vid)

    def _due(self, vid: ChannelID, parent_id: ChannelID, proof: VirtualProof) -> None:
        retry = self._retries.get(vid)
        if retry is not None:
            retry.timer = None
        self._send(vid, parent_id, proof)
