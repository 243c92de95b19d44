"""What becomes of a channel, told to those who wait for it: the user who opens or closes it
(their Deferreds) and the observers (notices), from the core's reports of a channel's life:
`Opened`, `FundingFailed`, `Disputed`, `Conflict`, `Lost`, `Closed`.

Rules, stated once: a user waiting for a channel to open learns that it opened, or why not (our
deposit failed, the peer did not fund, the channel was registered or closed first, the chain
lost it); one waiting for it to close learns that it closed, or that the chain lost it. Once
the store broke, every waiting user learns that instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from perund.channel import events as ev
from perund.channel.phases import TERMINAL
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.errors import FailedPrecondition, PeerNotFunded, PerundError
from perund.session.notices import ChannelNotice, Notice
from perund.session.payouts import Payouts
from perund.session.ports import PeerLinks
from perund.words import utc_text

log = Logger(namespace="perund.client")

_Waiters = dict[ChannelID, list[Deferred[Channel]]]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _wait(waiters: _Waiters, channel_id: ChannelID) -> Deferred[Channel]:
    d: Deferred[Channel] = Deferred()
    waiters.setdefault(channel_id, []).append(d)
    return d


def _resolve(waiters: _Waiters, channel_id: ChannelID, result: Channel | PerundError) -> None:
    for d in waiters.pop(channel_id, []):
        if isinstance(result, PerundError):
            d.errback(result)
        else:
            d.callback(result)


class Outcomes:
    """The users waiting for channels to open or close, told what became of them (module doc).

    `by_peer` is the client's index of channels per peer (a peer whose channels are all
    settled is no longer kept connected); `funding_error` says why our own deposit failed;
    `payouts` keeps what each conclusion paid us.
    """

    def __init__(self, *, links: PeerLinks, channels: Mapping[ChannelID, Channel],
                 by_peer: Mapping[Address, set[ChannelID]], notify: Callable[[Notice], None],
                 funding_error: Callable[[ChannelID], PerundError | None],
                 payouts: Payouts) -> None:
        self._links = links
        self._channels = channels
        self._by_peer = by_peer
        self._notify = notify
        self._funding_error = funding_error
        self._opening: _Waiters = {}
        self._closing: _Waiters = {}
        self._payouts = payouts

    def opened_later(self, channel_id: ChannelID) -> Deferred[Channel]:
        """Fires with the channel once open, or fails with why it did not open."""
        return _wait(self._opening, channel_id)

    def closed_later(self, channel_id: ChannelID) -> Deferred[Channel]:
        """Fires with the channel once closed on-chain, or fails with why it cannot be."""
        return _wait(self._closing, channel_id)

    def fail_everything(self, error: PerundError) -> None:
        """Everyone waiting learns `error` (the store broke)."""
        for waiters in (self._opening, self._closing):
            for channel_id in list(waiters):
                _resolve(waiters, channel_id, error)

    def not_open_yet(self, channel_id: ChannelID, error: PerundError) -> None:
        """The user waiting for the channel to open learns `error` now; the channel itself
        may still open later (a virtual channel whose lock's fate is unknown)."""
        _resolve(self._opening, channel_id, error)

    def opened(self, e: ev.Opened) -> None:
        channel = self._channels[e.channel_id]
        _resolve(self._opening, e.channel_id, channel)
        self._notify(ChannelNotice(channel, e))

    def funding_failed(self, e: ev.FundingFailed) -> None:
        channel = self._channels[e.channel_id]
        error = self._funding_error(e.channel_id) or PeerNotFunded(
            "the peer did not fund the channel in time", peer=_hex(channel.peer))
        _resolve(self._opening, e.channel_id, error)
        self._notify(ChannelNotice(channel, e))

    def disputed(self, e: ev.Disputed) -> None:
        channel = self._channels[e.channel_id]
        # Registered while someone waits for it to open: only the peer can have registered it
        # (we register a funding channel only after telling that waiter), and the peer's node
        # does so when its own deposit failed or it stopped waiting for ours. Which, this node
        # cannot know: the message says what it knows, and blames no one for a deposit the
        # Adjudicator refused (a token that charges a fee on transfer, say).
        if e.channel_id in self._opening:
            ours = self._funding_error(e.channel_id)
            _resolve(self._opening, e.channel_id, ours or PeerNotFunded(
                "the peer's node registered version 0 on-chain before the channel was funded: "
                "its deposit did not go through (the Adjudicator refuses a token that does not "
                "deliver the exact amount), or it stopped waiting for the funding; whatever "
                "was deposited comes back when the channel concludes after the challenge "
                "period", peer=_hex(channel.peer)))
        log.warn("channel {channel_id}: version {version} is registered on-chain; the challenge "
                 "period ends {ends}", channel_id=_hex(e.channel_id), version=e.version,
                 timeout=e.timeout, ends=utc_text(e.timeout))
        self._notify(ChannelNotice(channel, e))

    def conflict(self, e: ev.Conflict) -> None:
        log.critical("channel {channel_id}: the peer holds a different fully signed state of "
                     "version {version}; disputing on-chain", channel_id=_hex(e.channel_id),
                     version=e.ours.version)
        self._notify(ChannelNotice(self._channels[e.channel_id], e))

    def given_up(self, e: ev.Lost) -> None:
        channel = self._channels[e.channel_id]
        log.error("channel {channel_id} with {peer} is lost: {detail}",
                  channel_id=_hex(e.channel_id), peer=_hex(channel.peer), detail=e.detail)
        error = FailedPrecondition(f"the chain lost this channel: {e.detail}",
                                   channel_id=_hex(e.channel_id))
        _resolve(self._closing, e.channel_id, error)
        _resolve(self._opening, e.channel_id, error)
        self._notify(ChannelNotice(channel, e))

    def closed(self, e: ev.Closed) -> None:
        channel = self._channels[e.channel_id]
        if e.paid is not None:
            # Kept in the store with the closed channel (perund.session.payouts).
            self._payouts.concluded(e.channel_id, e.paid, e.credited)
        _resolve(self._closing, e.channel_id, channel)
        _resolve(self._opening, e.channel_id,
                 PeerNotFunded("the channel closed before it opened", peer=_hex(channel.peer)))
        peer_channels = self._by_peer.get(channel.peer, set())
        if all(self._channels[c].phase in TERMINAL for c in peer_channels):
            self._links.keep_connected(channel.peer, False)
        self._notify(ChannelNotice(channel, e))
