"""Sends held while a restarted channel waits for its peer's Sync (`Channel.resyncing`,
docs/protocol.md "Durability by interest").

After a restart a channel signs nothing until the peer's Sync has brought back whatever fully
signed state the node may have lost; a payment the user makes meanwhile waits for it (at most
the request timeout: then it goes on, and the core refuses it with a clear reason) instead of
failing at once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from perund.channel.types import ChannelID
from perund.session.timing import Timing


class ResyncWaits:
    """The senders waiting per channel, in the order they came, and each channel's timer."""

    def __init__(self, reactor: Any, timing: Timing) -> None:
        self._reactor = reactor
        self._timing = timing
        self._waiting: dict[ChannelID, tuple[list[Deferred[None]], Any]] = {}

    def hold(self, channel_id: ChannelID) -> Deferred[None]:
        """Fires once `resynced(channel_id)` is called, or after the request timeout."""
        waiting: Deferred[None] = Deferred()
        held = self._waiting.get(channel_id)
        if held is None:
            timer = self._reactor.callLater(self._timing.request_timeout, self.resynced,
                                            channel_id)
            self._waiting[channel_id] = ([waiting], timer)
        else:
            held[0].append(waiting)
        return waiting

    def resynced(self, channel_id: ChannelID) -> None:
        """Let the sends held for the channel go on, in the order they came."""
        held = self._waiting.pop(channel_id, None)
        if held is None:
            return
        waiting, timer = held
        if timer.active():
            timer.cancel()
        for one in waiting:
            one.callback(None)

    def release_all(self) -> None:
        """Let every held send go on (the client stops: they fail with its reason)."""
        for channel_id in list(self._waiting):
            self.resynced(channel_id)
