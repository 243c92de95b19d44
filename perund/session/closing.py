"""Closing channels for our user: cooperatively with a final update, or through a dispute.

Rules, stated once: a channel open for updates closes with a final update; when the peer
refuses or does not answer it, or it cannot be made (an earlier update of ours is unresolved,
the peer's awaits an answer), the channel is settled on-chain (`ForceClose`); a channel still
funding is settled on-chain at once. A ledger channel that funds an open virtual channel does
not close at all (FailedPrecondition naming the virtual channels: they close first). The user
is answered once the channel is closed on-chain (or its virtual channel folded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from perund.channel.changes import Change, ForceClose
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import FailedPrecondition, PeerRejected, PeerRequestTimedOut, ResourceNotFound

log = Logger(namespace="perund.client")


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class Closing:
    """Closes channels for our user (module doc). `final(channel_id)` sends the final update
    (the send queue), `apply` feeds the user's ForceClose, `closed_later` waits for the
    closure, `refusal` raises when the channel may not close (it funds a virtual channel)."""

    def __init__(self, *, channels: Mapping[ChannelID, Channel],
                 final: Callable[[ChannelID], Deferred[Channel]],
                 apply: Callable[[ChannelID, Change, bool], None],
                 closed_later: Callable[[ChannelID], Deferred[Channel]],
                 refusal: Callable[[ChannelID], None]) -> None:
        self._channels = channels
        self._final = final
        self._apply = apply
        self._closed_later = closed_later
        self._refusal = refusal

    def _channel(self, channel_id: ChannelID) -> Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise ResourceNotFound("no such channel", type="channel", id=_hex(channel_id))
        self._refusal(channel_id)
        return channel

    async def close(self, channel_id: ChannelID) -> Channel:
        """Close cooperatively if possible, else through a dispute; the channel once closed."""
        channel = self._channel(channel_id)
        closed = self._closed_later(channel_id)
        if channel.phase in (Phase.OPEN, Phase.UPDATING) and not channel.latest.is_final:
            # The core turns a refused or unanswered final update into a dispute by itself.
            try:
                await self._final(channel_id)
            except (PeerRejected, PeerRequestTimedOut) as exc:
                log.warn("channel {channel_id}: the peer did not sign the final state ({why}); "
                         "closing through a dispute", channel_id=_hex(channel_id), why=exc)
            except FailedPrecondition as exc:
                # A lock signed while our final update waited in the line: the ledger funds a
                # virtual channel now, and a dispute would take that one on-chain too.
                self._refusal(channel_id)
                # An earlier update of ours is unresolved (the peer went silent) or the peer's
                # update awaits an answer: no cooperative close is possible now.
                log.warn("channel {channel_id}: cannot close cooperatively ({why}); closing "
                         "through a dispute", channel_id=_hex(channel_id), why=exc)
            if self._channels[channel_id].phase in (Phase.OPEN, Phase.UPDATING):
                # The final update never left (the peer is unreachable): register ourselves.
                self._apply(channel_id, ForceClose(), True)
        elif channel.phase is Phase.FUNDING:
            self._apply(channel_id, ForceClose(), True)
        return await closed

    async def force_close(self, channel_id: ChannelID) -> Channel:
        """Settle on-chain without the peer; the channel once closed."""
        self._channel(channel_id)
        closed = self._closed_later(channel_id)
        self._apply(channel_id, ForceClose(), True)
        return await closed
