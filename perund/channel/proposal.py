"""Opening a channel: from a user's request to a fully signed version 0.

docs/specification.md §3, "Open", is the flow.

    proposer                                   responder
    make_proposal(request) ── Propose ───────▶ receive_proposal → ProposalReceived (ask user)
                                               accept_proposal → Channel(PROPOSING, v0 staged)
    complete_proposal ◀────── Accept{sig1} ─── (Persist, SendAccept)
    → Channel(FUNDING, v0 fully signed)
    (Persist, SendUpdateAccept{0, sig0}, Fund) ──▶ transition(UpdateAcceptReceived) → FUNDING, Fund

Functions here take the proposal and acceptance through the read-only protocols
`ProposalTerms` / `AcceptanceTerms`, so the wire's `Propose` and `Accept` messages can be passed
as they are; `Proposal` is the core's own value with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from perund.channel.encoding import Signer, channel_id, nonce_from_shares, signing_digest
from perund.channel.events import (
    Event,
    Fund,
    Persist,
    ProposalReceived,
    ProposalRefused,
    Reason,
    SendAccept,
    SendReject,
    SendUpdateAccept,
)
from perund.channel.phases import Phase
from perund.channel.records import Channel, SignedState, Staged
from perund.channel.rules import signed_by
from perund.channel.types import (
    ETH,
    MAX_ASSETS,
    UINT64_MAX,
    UINT256_MAX,
    Address,
    ChannelID,
    Params,
    Signature,
    State,
)
from perund.errors import Internal, InvalidArgument
from perund.words import duration_text


class OpeningTerms(Protocol):
    """What every proposal says, a ledger channel's or a virtual one's."""

    @property
    def proposal_id(self) -> bytes: ...
    @property
    def chain_id(self) -> int: ...
    @property
    def adjudicator(self) -> Address: ...
    @property
    def challenge_duration(self) -> int: ...
    @property
    def nonce_share(self) -> bytes: ...
    @property
    def assets(self) -> tuple[Address, ...]: ...
    @property
    def balances(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def participant(self) -> Address: ...


class ProposalTerms(OpeningTerms, Protocol):
    """What a proposal says (the fields of the wire's `Propose`)."""

    @property
    def receiver(self) -> Address: ...


class AcceptingTerms(Protocol):
    """What every acceptance says, of a ledger channel or a virtual one."""

    @property
    def proposal_id(self) -> bytes: ...
    @property
    def nonce_share(self) -> bytes: ...
    @property
    def participant(self) -> Address: ...
    @property
    def signature(self) -> Signature: ...


class AcceptanceTerms(AcceptingTerms, Protocol):
    """What an acceptance says (the fields of the wire's `Accept`)."""

    @property
    def receiver(self) -> Address: ...


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """The user's request to open a channel with `peer`.

    `balances[a] = (ours, the peer's)` initial amount of `assets[a]`, in wei / token units.
    """

    peer: Address
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, int], ...]
    challenge_duration: int


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal as sent: `balances[a] = (proposer, responder)`; `participant` and `receiver`
    are the proposer's off-chain and on-chain addresses."""

    proposal_id: bytes
    chain_id: int
    adjudicator: Address
    challenge_duration: int
    nonce_share: bytes
    assets: tuple[Address, ...]
    balances: tuple[tuple[int, int], ...]
    participant: Address
    receiver: Address


MAX_CHALLENGE_DURATION = 30 * 24 * 3600
"""The longest challenge duration a node takes: a dispute keeps the channel's funds for this
long, and a mistyped duration (milliseconds for seconds, 2**64-1) would lock them for good."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """The chain and contract this node settles on, and its shortest acceptable challenge
    duration (longer than watcher polling + confirmations + mining, docs/specification.md §4)."""

    chain_id: int
    adjudicator: Address
    min_challenge_duration: int
    max_challenge_duration: int = MAX_CHALLENGE_DURATION
    """The longest one (`MAX_CHALLENGE_DURATION`)."""

    def __post_init__(self) -> None:
        # The range check is the only one a proposal's duration gets: past it, the wire's
        # uint64 must hold every duration let through.
        if not 1 <= self.min_challenge_duration <= self.max_challenge_duration <= UINT64_MAX:
            raise ValueError("challenge duration bounds must be in 1..2**64-1, min <= max")


def _bytes_of(value: object, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


def _is_uint(value: object, bound: int) -> bool:
    return type(value) is int and 0 <= value <= bound


def challenge_duration_problem(duration: object, deployment: Deployment) -> str | None:
    """What is wrong with a challenge duration, and the range this node allows; None when it
    is in that range."""
    low, high = deployment.min_challenge_duration, deployment.max_challenge_duration
    allowed = f"(allowed: {duration_text(low)} to {duration_text(high)})"
    if type(duration) is not int:
        return f"{duration!r} is not a whole number of seconds {allowed}"
    if duration < low:
        return (f"too short: {duration_text(duration)} is below this node's minimum of "
                f"{duration_text(low)}, the time it needs to answer a dispute {allowed}")
    if duration > high:
        return (f"too long: {duration_text(duration)} is above this node's maximum of "
                f"{duration_text(high)}, as a dispute would keep the funds that long {allowed}")
    return None


def challenge_duration_refused(duration: int, deployment: Deployment) -> InvalidArgument:
    """The user's error for a challenge duration out of this node's range: the message says
    which way and the range in words; `minimum`, `maximum` (and `value`) are seconds, for a
    client to say the same in its user's units (perund-cli does)."""
    problem = challenge_duration_problem(duration, deployment) or "out of range"
    return InvalidArgument(
        f"challenge duration {problem}", name="challengeDuration", value=str(duration),
        requirement=f"{deployment.min_challenge_duration}..{deployment.max_challenge_duration}"
                    " seconds",
        minimum=deployment.min_challenge_duration, maximum=deployment.max_challenge_duration)


MAX_HOLDING = 2**128 - 2
"""The most the Adjudicator holds of one participant's deposit of one asset in a channel
(contracts/Adjudicator.sol, `MAX_HOLDING`: type(uint128).max - 1); more reverts with
HoldingOverflow."""


def proposal_rules(proposal: ProposalTerms, deployment: Deployment) -> tuple[Reason, str] | None:
    """Every rule a proposal's terms must meet, whoever made it: `(reason, detail)` or None."""
    p = proposal
    for name, value, size in (
        ("proposal_id", p.proposal_id, 32),
        ("nonce_share", p.nonce_share, 32),
        ("participant", p.participant, 20),
        ("receiver", p.receiver, 20),
        ("adjudicator", p.adjudicator, 20),
    ):
        if not _bytes_of(value, size):
            return Reason.MALFORMED, f"{name} must have {size} bytes"
    if p.chain_id != deployment.chain_id:
        return Reason.CHAIN, f"chain {p.chain_id}, ours is {deployment.chain_id}"
    if p.adjudicator != deployment.adjudicator:
        return Reason.ADJUDICATOR, "0x" + bytes(p.adjudicator).hex()
    wrong = challenge_duration_problem(p.challenge_duration, deployment)
    if wrong is not None:
        return Reason.CHALLENGE_DURATION, wrong
    assets = p.assets
    if not assets or not all(_bytes_of(a, 20) for a in assets):
        return Reason.ASSET_LIST, "at least one asset, each a 20-byte address"
    if len(assets) > MAX_ASSETS:
        return Reason.ASSET_LIST, f"at most {MAX_ASSETS} assets"
    if len(set(assets)) != len(assets):
        return Reason.ASSET_LIST, "an asset appears twice"
    if ETH in assets[1:]:
        return Reason.ASSET_LIST, "ETH must come first"
    if len(p.balances) != len(assets):
        return Reason.BALANCES, "one pair of balances per asset"
    any_funds = False
    for row in p.balances:
        if len(row) != 2 or not all(_is_uint(amount, UINT256_MAX) for amount in row):
            return Reason.BALANCES, "each balance is a uint256, two per asset"
        if row[0] + row[1] > UINT256_MAX:
            return Reason.BALANCES, "an asset's total exceeds uint256"
        if max(row) > MAX_HOLDING:
            # The contract refuses such a deposit (HoldingOverflow): the other side's deposit
            # would then be locked in a dispute of version 0 until the challenge period ends.
            return Reason.BALANCES, (f"a deposit is at most {MAX_HOLDING} units per participant "
                                     "and asset (the Adjudicator's MAX_HOLDING, 2^128-2)")
        any_funds = any_funds or row[0] + row[1] > 0
    if not any_funds:
        return Reason.BALANCES, "all balances are zero"
    return None


def make_proposal(
    request: OpenRequest,
    *,
    participant: Address,
    receiver: Address,
    proposal_id: bytes,
    nonce_share: bytes,
    deployment: Deployment,
) -> Proposal:
    """The proposal to send for the user's `request`; InvalidArgument names the bad field.

    `proposal_id` and `nonce_share` are fresh random 32-byte values (`encoding.random_share`).
    """
    if request.peer == participant:
        raise InvalidArgument(
            "cannot open a channel with ourselves",
            name="peer",
            value="0x" + bytes(request.peer).hex(),
            requirement="another participant",
        )
    proposal = Proposal(
        proposal_id=proposal_id,
        chain_id=deployment.chain_id,
        adjudicator=deployment.adjudicator,
        challenge_duration=request.challenge_duration,
        nonce_share=nonce_share,
        assets=tuple(request.assets),
        balances=tuple((row[0], row[1]) for row in request.balances),
        participant=participant,
        receiver=receiver,
    )
    broken = proposal_rules(proposal, deployment)
    if broken is not None:
        reason, detail = broken
        if reason is Reason.CHALLENGE_DURATION:
            raise challenge_duration_refused(request.challenge_duration, deployment)
        name = {
            Reason.ASSET_LIST: "balances",
            Reason.BALANCES: "balances",
        }.get(reason, reason.name.lower())
        raise InvalidArgument(reason.value, name=name, value=detail, requirement=reason.value)
    return proposal


def receive_proposal(
    proposal: ProposalTerms,
    *,
    sender: Address,
    me: Address,
    peer_known: bool,
    deployment: Deployment,
) -> tuple[Event, ...]:
    """Check a peer's proposal: `ProposalReceived` (ask the user) or a refusal and a Reject.

    `sender` is the connection's authenticated address; `peer_known` whether it is a contact.
    """
    broken: tuple[Reason, str] | None
    if proposal.participant != sender:
        broken = Reason.SENDER, "the proposer's address is not the connection's"
    elif proposal.participant == me:
        broken = Reason.SELF, ""
    elif not peer_known:
        broken = Reason.UNKNOWN_PEER, ""
    else:
        broken = proposal_rules(proposal, deployment)
    if broken is None:
        return (ProposalReceived(sender, proposal.proposal_id),)
    reason, detail = broken
    return (
        ProposalRefused(sender, proposal.proposal_id, reason, detail),
        SendReject(sender, proposal.proposal_id, reason.value),
    )


def _version_zero(
    proposal: ProposalTerms, params: Params, deployment: Deployment
) -> tuple[ChannelID, State]:
    cid = channel_id(deployment.chain_id, deployment.adjudicator, params)
    balances = tuple((row[0], row[1]) for row in proposal.balances)
    return cid, State(cid, 0, tuple(proposal.assets), balances, False)


def accept_proposal(
    proposal: ProposalTerms,
    *,
    signer: Signer,
    receiver: Address,
    nonce_share: bytes,
    deployment: Deployment,
    confirm_updates: bool = False,
) -> tuple[Channel, tuple[Event, ...]]:
    """The responder accepts a proposal that `receive_proposal` let through.

    Returns the new channel (PROPOSING, version 0 staged with our signature) and the events:
    persist it, then send `Accept`. `nonce_share` is our fresh random share.
    """
    params = Params(
        challenge_duration=proposal.challenge_duration,
        nonce=nonce_from_shares(proposal.nonce_share, nonce_share),
        participants=(proposal.participant, signer.address),
        receivers=(proposal.receiver, receiver),
    )
    cid, v0 = _version_zero(proposal, params, deployment)
    digest = signing_digest(v0)
    signature = signer.sign_digest(digest)
    channel = Channel(
        channel_id=cid,
        params=params,
        index=1,
        phase=Phase.PROPOSING,
        current=None,
        staged=Staged(1, v0, signature, digest),
        confirm_updates=confirm_updates,
    )
    accept = SendAccept(
        proposal.participant, proposal.proposal_id, nonce_share, signer.address, receiver, signature
    )
    return channel, (Persist(channel), accept)


def complete_proposal(
    proposal: ProposalTerms,
    acceptance: AcceptanceTerms,
    *,
    sender: Address,
    peer: Address,
    signer: Signer,
    deployment: Deployment,
    confirm_updates: bool = False,
) -> tuple[Channel | None, tuple[Event, ...]]:
    """The proposer handles the responder's `Accept` for its own `proposal` sent to `peer`.

    On success: the channel (FUNDING, version 0 fully signed) and the events: persist it, send
    our version-0 signature as `UpdateAccept{version 0}`, deposit (`Fund`). On a bad acceptance:
    None and a `ProposalRefused`; the proposal stays pending for the shell to time out.
    """
    if signer.address != proposal.participant:
        raise Internal("signer is not the proposal's participant")
    pid = proposal.proposal_id
    broken: tuple[Reason, str] | None = None
    if acceptance.proposal_id != pid:
        broken = Reason.NO_SUCH_PROPOSAL, ""
    elif sender != peer or acceptance.participant != peer:
        broken = Reason.SENDER, "the acceptance is not from the peer we proposed to"
    elif acceptance.participant == proposal.participant:
        broken = Reason.SELF, ""
    elif not _bytes_of(acceptance.nonce_share, 32) or not _bytes_of(acceptance.receiver, 20):
        broken = Reason.MALFORMED, "nonce share or receiver"
    if broken is not None:
        return None, (ProposalRefused(sender, pid, *broken),)
    params = Params(
        challenge_duration=proposal.challenge_duration,
        nonce=nonce_from_shares(proposal.nonce_share, acceptance.nonce_share),
        participants=(proposal.participant, acceptance.participant),
        receivers=(proposal.receiver, acceptance.receiver),
    )
    cid, v0 = _version_zero(proposal, params, deployment)
    digest = signing_digest(v0)
    if not signed_by(digest, acceptance.signature, peer):
        return None, (ProposalRefused(sender, pid, Reason.SIGNATURE, "version 0"),)
    ours = signer.sign_digest(digest)
    channel = Channel(
        channel_id=cid,
        params=params,
        index=0,
        phase=Phase.FUNDING,
        current=SignedState(v0, (ours, acceptance.signature)),
        confirm_updates=confirm_updates,
    )
    return channel, (
        Persist(channel),
        SendUpdateAccept(peer, cid, 0, ours),
        Fund(cid, params, 0, v0.assets, v0.balances),
    )
