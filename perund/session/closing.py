"""Closing channels for our user: cooperatively with a final update, or through a dispute.

Rules, stated once: a channel open for updates closes with a final update; when the peer
refuses or does not answer it, or it cannot be made (an earlier update of ours is unresolved,
the peer's awaits an answer), the channel is settled on-chain (`ForceClose`); a channel still
funding is settled on-chain at once. A final update whose connection dropped before the answer
is not unanswered yet: once the peer is back (the send queue waits for its Sync, which also
tells whether it countersigned), the final update goes again, at most `RECONNECTIONS` times. A
peer that cannot be reached is waited for: the final update goes again after a pause, for as
long as a fold waits for the intermediary (`fold_retries.PATIENCE`), and only then is the
channel settled on-chain. A dispute costs both sides gas and a challenge period, and a peer
away for a moment (its node restarting, a network blip) is the common case; a virtual
channel's dispute would even take both ledgers that fund it on-chain. `force_close` (the API's
`force`) does not wait. A ledger channel that funds an open virtual channel does not close
at all (FailedPrecondition naming the virtual channels: they close first). The user is
answered once the channel is closed on-chain (or its virtual channel folded).

A close our user asked for is noted in the store (meta `closing:<channel ID hex>`, durable
before anything goes out) until it ends: a restart meanwhile (a crash, a stop) resumes it
(`resume`) instead of leaving the channel open with nobody waiting to close it.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel.changes import Change, ForceClose
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import (
    FailedPrecondition,
    PeerDisconnected,
    PeerRejected,
    PeerRequestTimedOut,
    PeerUnreachable,
    PerundError,
    ResourceNotFound,
)
from perund.session import fold_retries
from perund.storage import ChannelStore

log = Logger(namespace="perund.client")

RECONNECTIONS: Final = 3
"""How often a close proposes its final update again after its connection dropped."""

INTENT: Final = "closing:"
"""Store meta prefix of the closes under way (module doc); the value is when the close stops
waiting for a peer that cannot be reached (the clock's seconds, as text)."""

PEER_WAIT: Final = fold_retries.PATIENCE
"""Seconds a close waits for a peer that cannot be reached, unless its caller says otherwise:
as long as a virtual channel's fold waits for its intermediary."""

MAX_PEER_WAIT: Final = 86_400
"""The longest wait a caller may ask for (a day): the call waits that long for its answer."""

PAUSES_PER_LINE: Final = 15
"""A close waiting for an unreachable peer logs its first pause, then one in this many (about
once a minute): a day's wait of many channels would otherwise log thousands of lines each."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _settling(channel: Channel) -> bool:
    """Whether the channel is past taking a final update: final already, or settling."""
    return channel.latest.is_final or channel.phase not in (Phase.OPEN, Phase.UPDATING)


def _noted_wait(noted: bytes | None, now: float) -> float | None:
    """What is left at `now` of the peer wait noted with a close (None: the default; a note
    from before the wait was noted is empty). A restart does not start the wait again: a node
    that keeps crashing would otherwise never settle."""
    try:
        until = float((noted or b"").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not math.isfinite(until):
        return None
    return min(max(0.0, until - now), MAX_PEER_WAIT)


class Closing:
    """Closes channels for our user (module doc). `final(channel_id)` sends the final update
    (the send queue), `apply` feeds the user's ForceClose, `closed_later` waits for the
    closure, `refusal` raises when the channel may not close (it funds a virtual channel);
    `forced_refusal(channel_id, accept_deposits_back)` raises when it may not close by force
    (a channel held for missing deposits: perund.session.held_close); `store` keeps the
    closes under way, `stopped` says whether the client stopped (a close
    cut short by it stays noted); `clock` times the pauses, `rng` shortens them (a seeded
    one in tests)."""

    def __init__(self, clock: Any, *, channels: Mapping[ChannelID, Channel],
                 store: ChannelStore, stopped: Callable[[], bool],
                 final: Callable[[ChannelID], Deferred[Channel]],
                 apply: Callable[[ChannelID, Change, bool], None],
                 closed_later: Callable[[ChannelID], Deferred[Channel]],
                 refusal: Callable[[ChannelID], None],
                 forced_refusal: Callable[[ChannelID, bool], None],
                 folds_done: Callable[[ChannelID], Deferred[None] | None],
                 rng: random.Random | None = None) -> None:
        self._clock = clock
        self._store = store
        self._stopped = stopped
        self._random = (rng or random.Random()).random
        self._channels = channels
        self._final = final
        self._apply = apply
        self._closed_later = closed_later
        self._refusal = refusal
        self._forced_refusal = forced_refusal
        self._folds_done = folds_done

    def _channel(self, channel_id: ChannelID) -> Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise ResourceNotFound("no such channel", type="channel", id=_hex(channel_id))
        self._refusal(channel_id)
        return channel

    async def close(self, channel_id: ChannelID, peer_wait: float | None = None) -> Channel:
        """Close cooperatively if possible, else through a dispute; the channel once closed.
        A peer that cannot be reached is waited for `peer_wait` seconds (None: `PEER_WAIT`)
        before the channel is settled on-chain without it."""
        self._channel(channel_id)
        until = self._clock.seconds() + (PEER_WAIT if peer_wait is None else peer_wait)
        intent = INTENT + channel_id.hex()
        # The wait's end goes with the note: a resumed close waits what is left of it.
        self._store.set_meta(intent, repr(float(until)).encode())
        try:
            # Durable before the final update leaves: a crash at any later moment resumes.
            written = self._store.flush()
            if written is not None:
                await written
            return await self._close(channel_id, until)
        finally:
            if not self._stopped():
                # A failed store: the session says so, and the next start resumes the close.
                with contextlib.suppress(PerundError):
                    self._store.delete_meta(intent)

    def resume(self) -> list[Deferred[Channel | None]]:
        """Go on with the closes noted before a restart (module doc); their Deferreds (each
        logs its failure)."""
        resumed = []
        for name, noted in self._store.metas(INTENT).items():
            try:
                channel_id = ChannelID(bytes.fromhex(name[len(INTENT):]))
            except ValueError:
                channel_id = ChannelID(b"")
            channel = self._channels.get(channel_id)
            if channel is None or channel.phase is Phase.CLOSED:
                self._store.delete_meta(name)
                continue
            try:
                self._refusal(channel_id)
            except PerundError as exc:
                log.warn("channel {channel_id}: not resuming the close asked for before the "
                         "restart: {why}", channel_id=_hex(channel_id), why=exc)
                self._store.delete_meta(name)
                continue
            log.info("channel {channel_id}: resuming the close asked for before the restart",
                     channel_id=_hex(channel_id))
            closing = Deferred.fromCoroutine(
                self.close(channel_id, _noted_wait(noted, self._clock.seconds())))
            resumed.append(closing.addErrback(self._resumed_close_failed, channel_id))
        return resumed

    def _resumed_close_failed(self, failure: Failure, channel_id: ChannelID) -> None:
        if self._stopped():
            return  # cut short by the stop: noted still, it resumes at the next start
        log.warn("channel {channel_id}: the close resumed after the restart failed: {why}",
                 channel_id=_hex(channel_id), why=failure.getErrorMessage())

    async def _close(self, channel_id: ChannelID, until: float) -> Channel:
        channel = self._channels[channel_id]
        if channel.phase is Phase.CLOSED:
            return channel  # while the note was written
        closed = self._closed_later(channel_id)
        folding = self._folds_done(channel_id)
        if folding is not None:
            # A virtual channel it funds is closed but for its fold: that ends first.
            await folding
            channel = self._channels[channel_id]
        if not _settling(channel):
            await self._cooperatively(channel_id, until)
            if self._stopped():
                raise FailedPrecondition("the session is closing")
            if not _settling(self._channels[channel_id]):
                # Refused or unanswered, or it never left (the peer is unreachable): register
                # ourselves. (The core registers a refused final update by itself.)
                self._apply(channel_id, ForceClose(), True)
        elif channel.phase is Phase.FUNDING:
            self._apply(channel_id, ForceClose(), True)
        return await closed

    async def _cooperatively(self, channel_id: ChannelID, until: float) -> None:
        """Send the final update, again after a dropped connection, or while the peer is
        away, until `until` (module doc); logs why it did not get through, if it did not
        (and nothing once the session stops: the close stays noted for the next start)."""
        reconnections = pauses = 0
        while True:
            if self._stopped():
                return
            try:
                await self._final(channel_id)
                return
            except PeerUnreachable as exc:
                # Nothing was signed: the send queue proposes only once the link is up.
                left = until - self._clock.seconds()
                if left <= 0:
                    why: Exception = exc
                    break
                pauses += 1
                delay = min(left, fold_retries.pause_before(pauses, self._random()))
                if pauses % PAUSES_PER_LINE == 1:
                    log.info("channel {channel_id}: the peer cannot be reached ({why}); "
                             "proposing the final update again, for up to {left:.0f} s more, "
                             "then disputing", channel_id=_hex(channel_id), why=exc, left=left)
                await deferLater(self._clock, delay, lambda: None)
                if _settling(self._channels[channel_id]) or self._stopped():
                    return  # a Sync or a dispute meanwhile, or the session stopped
                if self._clock.seconds() >= until:
                    why = exc
                    break
            except PeerDisconnected as exc:
                if _settling(self._channels[channel_id]):
                    return  # the peer's Sync brought the final state: it concludes
                if reconnections == RECONNECTIONS:
                    why = exc
                    break
                reconnections += 1
                log.info("channel {channel_id}: the connection dropped under the final update "
                         "({why}); proposing it again once the peer is back",
                         channel_id=_hex(channel_id), why=exc)
            except (PeerRejected, PeerRequestTimedOut) as exc:
                why = exc
                break
            except FailedPrecondition as exc:
                if self._stopped():
                    return  # the session is closing: the close resumes at the next start
                if (reconnections or pauses) and _settling(self._channels[channel_id]):
                    return  # settling already: the peer's Sync brought the final state
                # A lock signed while our final update waited in the line: the ledger funds a
                # virtual channel now, and a dispute would take that one on-chain too.
                self._refusal(channel_id)
                # An earlier update of ours is unresolved (the peer went silent) or the peer's
                # update awaits an answer: no cooperative close is possible now.
                log.warn("channel {channel_id}: cannot close cooperatively ({why}); closing "
                         "through a dispute", channel_id=_hex(channel_id), why=exc)
                return
        log.warn("channel {channel_id}: the peer did not sign the final state ({why}); "
                 "closing through a dispute", channel_id=_hex(channel_id), why=why)

    async def force_close(self, channel_id: ChannelID,
                          accept_deposits_back: bool = False) -> Channel:
        """Settle on-chain without the peer; the channel once closed. `accept_deposits_back`:
        the caller accepts the terms of a channel held because the peer's deposit is missing
        (each side gets back its own deposit). The decision is durable as any forced close's:
        the core's ForceClose moves the channel to settling in its record before anything is
        sent, and a restart goes on settling it."""
        if channel_id not in self._channels:
            raise ResourceNotFound("no such channel", type="channel", id=_hex(channel_id))
        self._forced_refusal(channel_id, accept_deposits_back)
        closed = self._closed_later(channel_id)
        self._apply(channel_id, ForceClose(), True)
        return await closed
