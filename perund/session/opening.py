"""Opening channels: our proposals to peers, and our user's answers to theirs.

A proposal is a request to the peer, whose user may take up to its response timeout to decide:
a `Reject` fails the opening with PeerRejected, an invalid `Accept` with PeerProtocolError (the
refusal is counted against the peer). Accepted either way, the new channel is handed to the
client (`start`), which funds it; the opening fires once it is open. The peer's proposals wait
for our user in `perund.session.questions`.

A proposal we accepted waits for the proposer's signature on version 0 at most its response and
request timeouts, also after a restart (`wait_for_version_zero`); if it does not come (the
proposer's node crashed before it kept the channel, say), the channel closes unfunded
(`VersionZeroLapsed`) and our user's answer fails, instead of waiting for ever (an audit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from perund.channel import events as ev
from perund.channel.changes import Change, VersionZeroLapsed
from perund.channel.encoding import Signer, random_share
from perund.channel.phases import Phase
from perund.channel.proposal import (
    Deployment,
    OpenRequest,
    accept_proposal,
    complete_proposal,
    make_proposal,
)
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID
from perund.errors import PeerProtocolError, PeerRejected, PeerRequestTimedOut, PerundError
from perund.session.ports import PeerLinks
from perund.session.questions import IncomingProposal, Questions
from perund.session.timing import Timing, VersionZeroWaits
from perund.wire.messages import Accept, Propose, Reject, VirtualPropose
from perund.words import seconds_text

Start = Callable[[Channel, Sequence[ev.Event]], Deferred[Channel]]
"""Tracks a new channel and executes its first events; fires once it is open (the client's)."""


log = Logger(namespace="perund.session")


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class Opening:
    """Proposes channels and answers the peer's proposals for our user (module doc)."""

    def __init__(self, reactor: Any, *, signer: Signer, receiver: Address,
                 deployment: Deployment, confirm_updates: bool, links: PeerLinks, timing: Timing,
                 questions: Questions, start: Start, execute: Callable[[Sequence[ev.Event]], None],
                 answer_virtual: Callable[[IncomingProposal, bool], Awaitable[Channel | None]],
                 channels: Mapping[ChannelID, Channel],
                 apply: Callable[[ChannelID, Change], object],
                 not_open_yet: Callable[[ChannelID, PerundError], None]) -> None:
        self._channels = channels
        self._apply = apply
        self._not_open_yet = not_open_yet
        self._version_zero_waits = VersionZeroWaits(reactor, timing,
                                                    self._version_zero_expired)
        self._signer = signer
        self._receiver = receiver
        self._deployment = deployment
        self._confirm_updates = confirm_updates
        self._links = links
        self._timing = timing
        self._questions = questions
        self._start = start
        self._execute = execute
        self._answer_virtual = answer_virtual

    async def propose(self, request: OpenRequest) -> Channel:
        """Propose a channel to `request.peer`; the channel once funded and open."""
        proposal = make_proposal(
            request, participant=self._signer.address, receiver=self._receiver,
            proposal_id=random_share(), nonce_share=random_share(), deployment=self._deployment,
        )
        message = Propose(
            proposal.proposal_id, proposal.chain_id, proposal.adjudicator,
            proposal.challenge_duration, proposal.nonce_share, proposal.assets,
            proposal.balances, proposal.participant, proposal.receiver,
        )
        # The peer's user may take up to its response timeout to decide.
        answer = await self._links.request(
            request.peer, message, self._timing.response_timeout + self._timing.request_timeout)
        if isinstance(answer, Reject):
            raise PeerRejected(f"the peer rejected the proposal: {answer.reason}",
                               peer=_hex(request.peer), reason=answer.reason)
        if not isinstance(answer, Accept):  # pragma: no cover - the peer layer correlates
            raise PeerProtocolError("unexpected answer to a proposal", peer=_hex(request.peer))
        channel, events = complete_proposal(
            proposal, answer, sender=request.peer, peer=request.peer, signer=self._signer,
            deployment=self._deployment, confirm_updates=self._confirm_updates,
        )
        if channel is None:
            refused = next(e for e in events if isinstance(e, ev.ProposalRefused))
            self._execute(events)
            raise PeerProtocolError(f"the peer's acceptance is invalid: {refused.reason.value}",
                                    peer=_hex(request.peer), reason=refused.reason.value)
        return await self._start(channel, events)

    def deposits(self, proposal_id: bytes) -> dict[Address, int]:
        """What accepting the waiting proposal `proposal_id` would have us deposit, per asset
        (if none waits, the error a late answer gets: `Questions.proposal`)."""
        proposal = self._questions.proposal(proposal_id)
        if isinstance(proposal, VirtualPropose):
            return {}  # a virtual channel is funded by a lock in a ledger channel
        return {asset: row[1] for asset, row in zip(proposal.assets, proposal.balances,
                                                    strict=True)}

    async def answer(self, proposal_id: bytes, accept: bool) -> Channel | None:
        """Our user's answer to a waiting proposal: the channel once funded and open, or None
        once the rejection is sent."""
        pending = self._questions.take_proposal(proposal_id)
        if isinstance(pending.proposal, VirtualPropose):
            return await self._answer_virtual(pending, accept)
        if not accept:
            await self._links.send(pending.peer, Reject(proposal_id, "rejected by the user"))
            return None
        channel, events = accept_proposal(
            pending.proposal, signer=self._signer, receiver=self._receiver,
            nonce_share=random_share(), deployment=self._deployment,
            confirm_updates=self._confirm_updates,
        )
        opened = self._start(channel, events)
        self.wait_for_version_zero(channel.channel_id)
        return await opened

    def wait_for_version_zero(self, channel_id: ChannelID) -> None:
        """Close `channel_id` (proposing: we accepted it) unless the proposer's signature on
        version 0 comes within its response and request timeouts (module doc)."""
        self._version_zero_waits.start(channel_id)

    def version_zero_signed(self, channel_id: ChannelID) -> None:
        """The proposer's signature on version 0 came: the wait for it ends."""
        self._version_zero_waits.signed(channel_id)

    def stop(self) -> None:
        """Cancel the waits for version 0 (the next start waits again)."""
        self._version_zero_waits.stop()

    def _version_zero_expired(self, channel_id: ChannelID) -> None:
        channel = self._channels.get(channel_id)
        if channel is None or channel.phase is not Phase.PROPOSING:
            return
        waited = self._version_zero_waits.patience
        log.warn("channel {channel_id}: the proposer did not countersign version 0 within "
                 "{within}; closing it (nothing was deposited)",
                 channel_id=_hex(channel_id), waited=waited, within=seconds_text(waited))
        self._not_open_yet(channel_id, PeerRequestTimedOut(
            f"the proposer did not countersign version 0 within {seconds_text(waited)}; the "
            "channel is closed (nothing was deposited)", peer=_hex(channel.peer), timeout=waited))
        self._apply(channel_id, VersionZeroLapsed())
