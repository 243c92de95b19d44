"""The core's messages to peers, and what comes back on our update requests.

Each `Send*` event becomes one wire message; a send that fails changes nothing (the message is
lost with the link, and the sync on reconnection repairs what the peer missed). An `Update` is a
request: its answer is routed like any other message of the peer, and when none comes (timed
out, disconnected, unreachable) or the one that came was refused (a bad countersignature: the
connection is dropped too), the core is told `UpdateTimedOut`, carrying the cause for the user.
Refusals of a peer's messages are counted against the peer and logged while it stays under its
limit (perund/peer/admission.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.changes import Change, UpdateTimedOut
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.errors import PeerRequestTimedOut, PerundError
from perund.peer.manager import undelivered
from perund.session.memos import Memos
from perund.session.ports import PeerLinks
from perund.session.timing import Timing
from perund.wire.messages import (
    Accept,
    ChannelClosed,
    Message,
    Reject,
    Sync,
    Update,
    UpdateAccept,
    UpdateReject,
    VirtualAccept,
    VirtualFold,
    VirtualLock,
)

log = Logger(namespace="perund.client")


_OUR_SIDE: Final = frozenset({ev.Reason.COLLISION, ev.Reason.SYNC_PENDING})
"""Refusals that follow from our side's state (our own update in flight, our sync pending),
not from anything wrong in the peer's message: they do not count towards its cut-off
(limits.peer_refusals) and are not logged as refusals."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class Outbox:
    """Executes the core's peer-facing events, one method per event type (module doc).
    `route(peer, msg)` hands an answer to the client's routing; `apply(channel_id, change)`
    feeds the core."""

    def __init__(self, *, links: PeerLinks, timing: Timing,
                 channels: Mapping[ChannelID, Channel],
                 route: Callable[[Address, Message], None],
                 apply: Callable[[ChannelID, Change], None], memos: Memos) -> None:
        self._links = links
        self._timing = timing
        self._channels = channels
        self._route = route
        self._apply = apply
        self._memos = memos

    def send_accept(self, e: ev.SendAccept) -> None:
        msg = Accept(e.proposal_id, e.nonce_share, e.participant, e.receiver, e.signature)
        self._links.post(e.peer, msg)

    def send_reject(self, e: ev.SendReject) -> None:
        self._links.post(e.peer, Reject(e.proposal_id, e.reason))

    def send_update_accept(self, e: ev.SendUpdateAccept) -> None:
        msg = UpdateAccept(e.channel_id, e.version, e.signature)
        self._links.post(e.peer, msg)

    def send_update_reject(self, e: ev.SendUpdateReject) -> None:
        msg = UpdateReject(e.channel_id, e.version, e.reason)
        self._links.post(e.peer, msg)

    def send_sync(self, e: ev.SendSync) -> None:
        self._links.post(e.peer, Sync(e.state, e.signatures, e.awaiting))

    def send_channel_closed(self, e: ev.SendChannelClosed) -> None:
        # Lost, it costs nothing: the peer's Sync on its next connection is answered so again.
        self._links.post(e.peer, ChannelClosed(e.channel_id, e.reason))

    def send_virtual_accept(self, e: ev.SendVirtualAccept) -> None:
        msg = VirtualAccept(e.proposal_id, e.nonce_share, e.participant, e.parent, e.signature)
        self._links.post(e.peer, msg)

    def send_update(self, e: ev.SendUpdate) -> None:
        channel_id, version = e.state.channel_id, e.state.version
        msg: Message
        if e.proof is None:
            msg = Update(e.state, e.signature, self._memos.of(channel_id, version))
        elif e.proof.is_fold:
            msg = VirtualFold(e.state, e.signature, e.proof)
        else:
            msg = VirtualLock(e.state, e.signature, e.proof)
        answer = self._links.request(e.peer, msg,
                                     self._timing.response_timeout + self._timing.request_timeout)
        answer.addCallbacks(self._answered, self._unanswered,
                            callbackArgs=(channel_id, version), errbackArgs=(channel_id, version))

    def _answered(self, answer: Message, channel_id: ChannelID, version: int) -> None:
        if isinstance(answer, UpdateAccept | UpdateReject):
            about = self._channels.get(answer.channel_id)
            if about is not None:
                self._route(about.peer, answer)
        channel = self._channels.get(channel_id)
        if channel is None:
            return
        staged = channel.staged
        if staged is not None and staged.proposer == channel.index \
                and staged.state.version == version:
            # The answer was refused (a bad countersignature): no other answer will come on
            # this request, and the peer may hold the state fully signed. That is exactly an
            # unanswered update, settled by a sync on a fresh connection: a peer that breaks
            # the protocol loses its connection, and the reconnection syncs.
            invalid = PeerRequestTimedOut(
                "the peer answered the update with an invalid countersignature",
                peer=_hex(channel.peer), timeout=0)
            self._apply(channel_id, UpdateTimedOut(version, invalid))
            log.warn("dropping the connection to {peer}: it answered update {version} of "
                     "channel {channel_id} with an invalid countersignature",
                     peer=_hex(channel.peer), version=version, channel_id=_hex(channel_id))
            self._links.disconnect(channel.peer).addErrback(undelivered)

    def _unanswered(self, failure: Failure, channel_id: ChannelID, version: int) -> None:
        log.info("update {version} of channel {channel_id} got no answer: {why}",
                 version=version, channel_id=_hex(channel_id), why=failure.getErrorMessage())
        if channel_id in self._channels:
            # Tell the user why (timed out, connection lost, unreachable), not just "no answer".
            cause = failure.value if isinstance(failure.value, PerundError) else None
            self._apply(channel_id, UpdateTimedOut(version, cause))

    def refused(self, e: ev.Refused) -> None:
        if e.reason in _OUR_SIDE:
            # Honest peers meet these in the normal run of things (two users paying each
            # other at once), at most once per update of ours: no misbehaviour to count.
            return
        if e.reason is ev.Reason.HOLDS_NOTHING_OF_OURS:
            # An honest peer restored from an older backup says so of every channel it lost,
            # on every connection: counted, a hundred of them would cut it off each time.
            log.info("channel {channel_id}: {reason} (peer {peer})", channel_id=_hex(e.channel_id),
                     peer=_hex(e.sender), reason=e.reason.value)
            return
        if self._links.refused(e.sender):
            log.warn("refused a message from {peer} about channel {channel_id}: {reason} "
                     "{detail}", peer=_hex(e.sender), channel_id=_hex(e.channel_id),
                     reason=e.reason.value, detail=e.detail)

    def proposal_refused(self, e: ev.ProposalRefused) -> None:
        if self._links.refused(e.peer):
            log.warn("refused proposal {proposal_id} from {peer}: {reason} {detail}",
                     proposal_id=_hex(e.proposal_id), peer=_hex(e.peer), reason=e.reason.value,
                     detail=e.detail)
