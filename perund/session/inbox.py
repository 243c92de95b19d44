"""What the peers send us: the owner of a client's peer links (`PeerManagerOwner`).

A (re)connection makes every unsettled channel with that peer sync (`StartSync`); the peer's
dial replacing the connection in use makes it answer the peer's next Sync (`Relinked`). A message
about a channel becomes the core input it stands for; one about a channel we do not have is
refused (counted against the peer; an `Update` is answered with `UpdateReject`, a `Sync` with
`ChannelClosed`, so that the peer settles on-chain a channel we retired or lost). A proposal
is checked by the core's proposal rules and, if valid, becomes a question for our user
(`perund.session.questions`); a repeated one is refused. Anything else (a late answer to a
proposal we gave up on) is ignored, and counted against the peer like a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from twisted.logger import Logger

from perund.channel import events as ev
from perund.channel.changes import (
    Change,
    ChannelClosedReceived,
    Relinked,
    StartSync,
    SyncReceived,
    UpdateAcceptReceived,
    UpdateReceived,
    UpdateRejectReceived,
)
from perund.channel.encoding import Signer
from perund.channel.memo import one_way
from perund.channel.phases import TERMINAL
from perund.channel.proposal import Deployment, receive_proposal
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.errors import PerundError
from perund.peer.manager import undelivered
from perund.session.memos import Memos
from perund.session.ports import PeerLinks
from perund.session.questions import Questions
from perund.wire.fields import MAX_REASON_LENGTH
from perund.wire.messages import (
    ChannelClosed,
    FeeQuery,
    Message,
    Propose,
    Sync,
    Update,
    UpdateAccept,
    UpdateReject,
    VirtualFold,
    VirtualLock,
    VirtualPropose,
)

if TYPE_CHECKING:
    from perund.session.intermediary import Intermediary
    from perund.session.virtual import Virtuals

log = Logger(namespace="perund.client")


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class Inbox:
    """Turns what arrives on the peer links into core inputs and questions (module doc).

    `by_peer` is the client's index of channels per peer; `apply(channel_id, change)` feeds the
    core, `execute(events)` runs the events of a refused proposal; `is_contact` says whether a
    proposal's sender is known.
    """

    def __init__(self, *, signer: Signer, deployment: Deployment, links: PeerLinks,
                 channels: Mapping[ChannelID, Channel], by_peer: Mapping[Address, set[ChannelID]],
                 questions: Questions, is_contact: Callable[[Address], bool],
                 apply: Callable[[ChannelID, Change], None],
                 execute: Callable[[Sequence[ev.Event]], None], memos: Memos,
                 virtual: Virtuals, intermediary: Intermediary,
                 refused: Callable[[ChannelID, bool], PerundError | None] = lambda _, __: None
                 ) -> None:
        self._signer = signer
        self._deployment = deployment
        self._links = links
        self._channels = channels
        self._by_peer = by_peer
        self._questions = questions
        self._is_contact = is_contact
        self._apply = apply
        self._execute = execute
        self._memos = memos
        self._virtual = virtual
        self._intermediary = intermediary
        self._refused = refused

    def peer_connected(self, peer: Address) -> None:
        """A (new) link to `peer`: every unsettled channel with it syncs."""
        for channel_id in list(self._by_peer.get(peer, ())):
            if self._channels[channel_id].phase not in TERMINAL:
                self._apply(channel_id, StartSync())

    def peer_disconnected(self, peer: Address) -> None:
        """Nothing to do at once: `Patience` looks at the links in its own time."""

    def peer_relinked(self, peer: Address) -> None:
        """The peer's dial replaced the link in use: every unsettled channel with it answers
        the peer's next Sync (`Relinked`)."""
        for channel_id in list(self._by_peer.get(peer, ())):
            if self._channels[channel_id].phase not in TERMINAL:
                self._apply(channel_id, Relinked())

    def message_received(self, peer: Address, msg: Message) -> None:
        """Route a peer's message: to its channel's core, or a proposal to our user."""
        if isinstance(msg, Update | VirtualLock | VirtualFold):
            held = self._channels.get(msg.state.channel_id)
            refused = None if held is None or held.peer != peer \
                else self._refused(msg.state.channel_id,
                                   # A fold winds a virtual channel down, as a close does.
                                   msg.state.is_final or isinstance(msg, VirtualFold))
            if refused is not None:
                # Nothing of it reaches the core: its payee would hear of money the chain does
                # not hold, or its store would need a disk that is nearly full.
                self._links.send(peer, UpdateReject(
                    msg.state.channel_id, msg.state.version,
                    refused.message[:MAX_REASON_LENGTH])).addErrback(undelivered)
                return
        match msg:
            case Update(state=state, signature=signature, memo=memo):
                channel = self._channels.get(state.channel_id)
                if channel is not None and channel.peer == peer:
                    # The channel's peer only: anyone else's update is refused by the core,
                    # and its memo would otherwise describe the channel's next update of that
                    # version. An update without one clears what an earlier one left there,
                    # and so does one whose parts go both ways (`one_way`).
                    self._memos.note(state.channel_id, state.version,
                                     memo if one_way(memo) else ())
                self._about_channel(peer, msg, state.channel_id,
                                    UpdateReceived(peer, state, signature, self._signer))
            case UpdateAccept(channel_id=channel_id, version=version, signature=signature):
                self._about_channel(peer, msg, channel_id,
                                    UpdateAcceptReceived(peer, channel_id, version, signature))
            case UpdateReject(channel_id=channel_id, version=version, reason=reason):
                self._about_channel(peer, msg, channel_id,
                                    UpdateRejectReceived(peer, channel_id, version, reason))
            case Sync(state=state, signatures=signatures, awaiting=awaiting):
                self._about_channel(peer, msg, state.channel_id,
                                    SyncReceived(peer, state, signatures, awaiting))
            case ChannelClosed(channel_id=channel_id, reason=reason):
                self._about_channel(peer, msg, channel_id,
                                    ChannelClosedReceived(peer, channel_id, reason))
            case Propose():
                self._proposal(peer, msg)
            case VirtualLock() | VirtualFold():
                ledger = msg.state.channel_id
                if ledger not in self._channels:
                    self._about_channel(peer, msg, ledger, UpdateReceived(
                        peer, msg.state, msg.signature, self._signer, msg.proof))
                    return
                change = self._intermediary.received(peer, msg)
                if change is not None:
                    self._apply(ledger, change)
            case VirtualPropose():
                self._virtual.proposal_received(peer, msg)
            case FeeQuery():
                self._intermediary.quote(peer, msg)
            case _:
                # Late answers to proposals we gave up on, and anything else unsolicited. Rare
                # from an honest peer; counted as refusals, so that a stream of them is cut off
                # and logged only at first (each costs a log line otherwise).
                if self._links.refused(peer):
                    log.info("ignored an unsolicited {kind} from {peer}",
                             kind=type(msg).__name__, peer=_hex(peer))

    def _about_channel(self, peer: Address, msg: Message, channel_id: ChannelID,
                       change: Change) -> None:
        if channel_id in self._channels:
            self._apply(channel_id, change)
            return
        if self._links.refused(peer):
            log.warn("refused {kind} from {peer} about unknown channel {channel_id}",
                     kind=type(msg).__name__, peer=_hex(peer), channel_id=_hex(channel_id))
        if isinstance(msg, Update | VirtualLock | VirtualFold):
            self._links.send(peer, UpdateReject(channel_id, msg.state.version, "unknown channel")
                             ).addErrback(undelivered)
        elif isinstance(msg, Sync):
            # The peer takes for live a channel we do not hold: one we retired after closing
            # it (perhaps without the chain, while the peer was away), or lost. We sign nothing
            # on it, so the peer settles it on-chain with what it holds (docs/protocol.md, "A
            # channel closed without the chain"). Never answered back: no loop.
            self._links.post(peer, ChannelClosed(channel_id, "unknown channel"))

    def _proposal(self, peer: Address, msg: Propose) -> None:
        if self._questions.seen(msg.proposal_id):
            if self._links.refused(peer):
                log.warn("refused a repeated proposal {proposal_id} from {peer}",
                         proposal_id=_hex(msg.proposal_id), peer=_hex(peer))
            return
        events = receive_proposal(msg, sender=peer, me=self._signer.address,
                                  peer_known=self._is_contact(peer),
                                  deployment=self._deployment)
        if any(isinstance(e, ev.ProposalReceived) for e in events):
            self._questions.ask_proposal(peer, msg)
        else:
            self._execute(events)
