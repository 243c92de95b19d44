"""The user's patience with an unreachable peer (docs/specification.md §3: a peer that "stays
unreachable past the user's patience" gets its channels settled on-chain).

Every few seconds (a quarter of the patience, between 0.05 and 60 s) the peers with an open or
updating channel are looked at; one that has not been connected at any look for `dispute_after`
seconds gets each of those channels force-closed, once (its clock starts again afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.logger import Logger

from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.session.ports import PeerLinks
from perund.words import duration_text, plural

log = Logger(namespace="perund.client")


class Patience:
    """Watches the peers of the client's open channels (module doc); `force_close` settles a
    channel on-chain (the client feeds `ForceClose` to the core)."""

    def __init__(self, reactor: Any, *, links: PeerLinks, channels: Mapping[ChannelID, Channel],
                 force_close: Callable[[ChannelID], None]) -> None:
        self._reactor = reactor
        self._links = links
        self._channels = channels
        self._force_close = force_close
        self.dispute_after: float | None = None
        self._unreachable_since: dict[Address, float] = {}
        self._timer: DelayedCall | None = None

    def watch(self, dispute_after: float) -> None:
        """Settle the channels of a peer unreachable for `dispute_after` seconds from now on."""
        self.dispute_after = dispute_after
        self._cancel()
        self._timer = self._reactor.callLater(self._interval(), self._check)

    def stop(self) -> None:
        """Watch no more."""
        self.dispute_after = None
        self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _interval(self) -> float:
        return min(max((self.dispute_after or 0.0) / 4, 0.05), 60.0)

    def _check(self) -> None:
        self._timer = None
        if self.dispute_after is None:
            return
        now = self._reactor.seconds()
        waiting: dict[Address, list[ChannelID]] = {}
        for channel in self._channels.values():
            if channel.phase is Phase.OPEN or channel.phase is Phase.UPDATING:
                waiting.setdefault(channel.peer, []).append(channel.channel_id)
        for peer in list(self._unreachable_since):
            if peer not in waiting:
                del self._unreachable_since[peer]
        for peer, channel_ids in waiting.items():
            if self._links.is_connected(peer):
                self._unreachable_since.pop(peer, None)
                continue
            since = self._unreachable_since.setdefault(peer, now)
            if now - since < self.dispute_after:
                continue
            del self._unreachable_since[peer]
            log.warn("peer {peer} has been unreachable for {duration}: settling its "
                     "{channels} on-chain", peer="0x" + peer.hex(),
                     duration=duration_text(round(now - since)),
                     channels=plural(len(channel_ids), "channel"),
                     seconds=round(now - since), count=len(channel_ids))
            for channel_id in channel_ids:
                self._force_close(channel_id)
        self._timer = self._reactor.callLater(self._interval(), self._check)
