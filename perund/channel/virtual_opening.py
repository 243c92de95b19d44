"""Opening a virtual channel: from a user's request to a fully signed version 0 and the locks.

docs/protocol.md "Virtual channels", opening steps 1-3:

    alice (proposer)                                carol (responder)
    make_virtual_proposal ── VirtualPropose ──────▶ receive_virtual_proposal → ask the user
                                                    accept_virtual_proposal → V(PROPOSING)
    complete_virtual_proposal ◀─ VirtualAccept ──── (Persist, SendVirtualAccept{sig1 on v0})
    → V(FUNDING, v0 fully signed)
    (Persist, SendUpdateAccept{v0, sig0}, LockParent) ──▶ UpdateAcceptReceived → FUNDING,
                                                          LockParent

Each party then locks V in its ledger with the intermediary (`LockParent`, executed by the
shell); V opens for a party once its own lock is fully signed (`Funded`). A party checks that
it has an open ledger channel with the intermediary whose free balances cover its own share
(its side) and the other party's (the intermediary's side), per asset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from perund.channel.encoding import Signer, nonce_from_shares, signing_digest, virtual_channel_id
from perund.channel.events import (
    Event,
    Persist,
    ProposalReceived,
    ProposalRefused,
    Reason,
    SendReject,
    SendUpdateAccept,
    SendVirtualAccept,
)
from perund.channel.fees import fee_amounts
from perund.channel.phases import Phase
from perund.channel.proposal import (
    AcceptingTerms,
    Deployment,
    OpeningTerms,
    Proposal,
    challenge_duration_refused,
    proposal_rules,
)
from perund.channel.records import Channel, SignedState, Staged
from perund.channel.rules import signed_by
from perund.channel.types import Address, ChannelID, State, VirtualParams
from perund.channel.virtual import is_virtual, lock_parent
from perund.errors import FailedPrecondition, Internal, InvalidArgument

LEDGER_PHASES = frozenset({Phase.OPEN, Phase.UPDATING})
"""Phases in which a ledger channel can lock funds for a new virtual channel."""


class VirtualProposalTerms(OpeningTerms, Protocol):
    """What a virtual proposal says (the fields of the wire's `VirtualPropose`)."""

    @property
    def intermediary(self) -> Address: ...
    @property
    def parent(self) -> ChannelID: ...


class VirtualAcceptanceTerms(AcceptingTerms, Protocol):
    """What a virtual acceptance says (the fields of the wire's `VirtualAccept`)."""

    @property
    def parent(self) -> ChannelID: ...


@dataclass(frozen=True, slots=True)
class VirtualOpenRequest:
    """The user's request to open a virtual channel with `peer` through `intermediary`.

    `balances[a] = (ours, the peer's)` initial amount of `assets[a]`."""

    peer: Address
    intermediary: Address
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, int], ...]
    challenge_duration: int
    max_fee: tuple[int, ...] = ()
    """The most we pay the intermediary, per asset (empty: nothing)."""


@dataclass(frozen=True, slots=True)
class VirtualProposal:
    """A virtual proposal as sent (the core's value with the wire message's fields)."""

    proposal_id: bytes
    chain_id: int
    adjudicator: Address
    challenge_duration: int
    nonce_share: bytes
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, int], ...]
    participant: Address
    intermediary: Address
    parent: ChannelID


def covers(ledger: Channel, intermediary: Address, assets: tuple[Address, ...],
           ours: tuple[int, ...], theirs: tuple[int, ...]) -> str | None:
    """None when `ledger` is an open ledger channel with `intermediary` whose current free
    balances cover `ours` (our side) and `theirs` (the intermediary's side) of each asset in
    `assets`; else why not."""
    if is_virtual(ledger) or ledger.peer != intermediary:
        return "not a ledger channel with the intermediary"
    if ledger.phase not in LEDGER_PHASES or ledger.current is None:
        return f"the ledger channel is {ledger.phase.value}"
    state = ledger.current.state
    if state.is_final:
        return "the ledger channel is closing"
    for asset, mine, other in zip(assets, ours, theirs, strict=True):
        if asset not in state.assets:
            return "the ledger channel lacks an asset of the virtual channel"
        row = state.balances[state.assets.index(asset)]
        if row[ledger.index] < mine or row[ledger.peer_index] < other:
            return "the ledger channel's free balances do not cover the virtual channel"
    return None


def find_ledger(channels: Iterable[Channel], intermediary: Address, assets: tuple[Address, ...],
                ours: tuple[int, ...], theirs: tuple[int, ...]) -> Channel | None:
    """The first ledger channel among `channels` that `covers` the virtual channel."""
    for channel in channels:
        if covers(channel, intermediary, assets, ours, theirs) is None:
            return channel
    return None


def _as_proposal(p: VirtualProposalTerms) -> Proposal:
    """The terms the ledger proposal rules check (the intermediary stands in the receiver's
    place: an address, checked for its length)."""
    return Proposal(p.proposal_id, p.chain_id, p.adjudicator, p.challenge_duration,
                    p.nonce_share, p.assets, p.balances, p.participant, p.intermediary)


def virtual_proposal_rules(p: VirtualProposalTerms,
                           deployment: Deployment) -> tuple[Reason, str] | None:
    """Every rule a virtual proposal's terms must meet, whoever made it."""
    broken = proposal_rules(_as_proposal(p), deployment)
    if broken is not None:
        return broken
    if not isinstance(p.parent, bytes) or len(p.parent) != 32:
        return Reason.MALFORMED, "parent must have 32 bytes"
    if p.intermediary == p.participant:
        return Reason.INTERMEDIARY, "the proposer is the intermediary"
    return None


def make_virtual_proposal(request: VirtualOpenRequest, *, participant: Address, ledger: Channel,
                          proposal_id: bytes, nonce_share: bytes, deployment: Deployment,
                          fee: tuple[int, ...] = ()) -> VirtualProposal:
    """The proposal to send for the user's `request`, funded through our `ledger` channel with
    the intermediary, which must also cover the intermediary's `fee` (per asset; empty: none)
    on our side; InvalidArgument names the bad field, FailedPrecondition a ledger that cannot
    fund it."""
    for name, address in (("peer", request.peer), ("via", request.intermediary)):
        if address == participant:
            raise InvalidArgument(f"the {name} is ourselves", name=name,
                                  value="0x" + bytes(address).hex(),
                                  requirement="another participant")
    if request.peer == request.intermediary:
        raise InvalidArgument("the intermediary is the peer itself: open a ledger channel",
                              name="via", value="0x" + bytes(request.intermediary).hex(),
                              requirement="a third party")
    proposal = VirtualProposal(
        proposal_id, deployment.chain_id, deployment.adjudicator, request.challenge_duration,
        nonce_share, tuple(request.assets), tuple((r[0], r[1]) for r in request.balances),
        participant, request.intermediary, ledger.channel_id)
    broken = virtual_proposal_rules(proposal, deployment)
    if broken is not None:
        reason, detail = broken
        if reason is Reason.CHALLENGE_DURATION:
            raise challenge_duration_refused(request.challenge_duration, deployment)
        raise InvalidArgument(reason.value, name="balances", value=detail,
                              requirement=reason.value)
    for name, amounts in (("maxFee", request.max_fee), ("fee", fee)):
        if amounts and len(amounts) != len(proposal.assets):
            raise InvalidArgument(f"{name} has one amount per asset", name=name,
                                  value=str(len(amounts)),
                                  requirement=f"{len(proposal.assets)} amounts")
    paid = fee_amounts(fee, len(proposal.assets))
    why = covers(ledger, request.intermediary, proposal.assets,
                 tuple(row[0] + f for row, f in zip(proposal.balances, paid, strict=True)),
                 tuple(row[1] for row in proposal.balances))
    if why is not None:
        raise FailedPrecondition(f"cannot fund the virtual channel: {why}",
                                 channel_id="0x" + ledger.channel_id.hex())
    return proposal


def receive_virtual_proposal(p: VirtualProposalTerms, *, sender: Address, me: Address,
                             peer_known: bool, intermediary_known: bool,
                             deployment: Deployment,
                             ledger: Channel | None) -> tuple[Event, ...]:
    """Check a peer's virtual proposal: `ProposalReceived` (ask the user) or a refusal and a
    Reject. `ledger` is our ledger channel with the intermediary that covers it (None: none
    does); `intermediary_known` whether the intermediary is a contact."""
    broken: tuple[Reason, str] | None
    if p.participant != sender:
        broken = Reason.SENDER, "the proposer's address is not the connection's"
    elif p.participant == me:
        broken = Reason.SELF, ""
    elif not peer_known:
        broken = Reason.UNKNOWN_PEER, ""
    elif p.intermediary == me or not intermediary_known:
        broken = Reason.INTERMEDIARY, ""
    else:
        broken = virtual_proposal_rules(p, deployment)
        if broken is None and ledger is None:
            broken = Reason.NO_LEDGER, ""
    if broken is None:
        return (ProposalReceived(sender, p.proposal_id),)
    reason, detail = broken
    return (ProposalRefused(sender, p.proposal_id, reason, detail),
            SendReject(sender, p.proposal_id, reason.value))


def _params(p: VirtualProposalTerms, responder: Address, responder_share: bytes,
            responder_parent: ChannelID) -> VirtualParams:
    return VirtualParams(p.challenge_duration, nonce_from_shares(p.nonce_share, responder_share),
                         (p.participant, responder), (p.parent, responder_parent))


def _version_zero(p: VirtualProposalTerms, params: VirtualParams,
                  deployment: Deployment) -> tuple[ChannelID, State]:
    vid = virtual_channel_id(deployment.chain_id, deployment.adjudicator, params)
    return vid, State(vid, 0, tuple(p.assets), tuple((r[0], r[1]) for r in p.balances), False)


def accept_virtual_proposal(p: VirtualProposalTerms, *, signer: Signer, ledger: Channel,
                            nonce_share: bytes, deployment: Deployment,
                            confirm_updates: bool = False) -> tuple[Channel, tuple[Event, ...]]:
    """The responder accepts a virtual proposal, funded through its `ledger` channel with the
    intermediary: the new virtual channel (PROPOSING, version 0 staged with our signature) and
    the events: persist it, then send `VirtualAccept`."""
    params = _params(p, signer.address, nonce_share, ledger.channel_id)
    vid, v0 = _version_zero(p, params, deployment)
    digest = signing_digest(v0)
    signature = signer.sign_digest(digest)
    channel = Channel(channel_id=vid, params=params, index=1, phase=Phase.PROPOSING,
                      current=None, staged=Staged(1, v0, signature, digest),
                      confirm_updates=confirm_updates)
    accept = SendVirtualAccept(p.participant, p.proposal_id, nonce_share, signer.address,
                               ledger.channel_id, signature)
    return channel, (Persist(channel), accept)


def complete_virtual_proposal(
    p: VirtualProposalTerms, acceptance: VirtualAcceptanceTerms, *, sender: Address,
    peer: Address, signer: Signer, deployment: Deployment, confirm_updates: bool = False,
) -> tuple[Channel | None, tuple[Event, ...]]:
    """The proposer handles the responder's `VirtualAccept` for its own proposal `p` to `peer`.

    On success: the virtual channel (FUNDING, version 0 fully signed) and the events: persist
    it, send our version-0 signature (`UpdateAccept{0}`), lock it in our parent (`LockParent`).
    On a bad acceptance: None and a `ProposalRefused`."""
    if signer.address != p.participant:
        raise Internal("signer is not the proposal's participant")
    pid = p.proposal_id
    broken: tuple[Reason, str] | None = None
    if acceptance.proposal_id != pid:
        broken = Reason.NO_SUCH_PROPOSAL, ""
    elif sender != peer or acceptance.participant != peer:
        broken = Reason.SENDER, "the acceptance is not from the peer we proposed to"
    elif acceptance.participant in (p.participant, p.intermediary):
        broken = Reason.SELF, ""
    elif not isinstance(acceptance.nonce_share, bytes) or len(acceptance.nonce_share) != 32:
        broken = Reason.MALFORMED, "nonce share"
    elif acceptance.parent == p.parent:
        broken = Reason.MALFORMED, "the responder's parent is ours"
    if broken is not None:
        return None, (ProposalRefused(sender, pid, *broken),)
    params = _params(p, acceptance.participant, acceptance.nonce_share, acceptance.parent)
    vid, v0 = _version_zero(p, params, deployment)
    digest = signing_digest(v0)
    if not signed_by(digest, acceptance.signature, peer):
        return None, (ProposalRefused(sender, pid, Reason.SIGNATURE, "version 0"),)
    ours = signer.sign_digest(digest)
    channel = Channel(channel_id=vid, params=params, index=0, phase=Phase.FUNDING,
                      current=SignedState(v0, (ours, acceptance.signature)),
                      confirm_updates=confirm_updates)
    return channel, (Persist(channel), SendUpdateAccept(peer, vid, 0, ours),
                     lock_parent(channel))
