"""The chain's reports and the channel's life: funding, disputes, conclusion, a lost chain,
virtual-channel locks that failed, a restart. Part of the channel core:
`perund.channel.machine`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from perund.channel.changes import (
    ChainLost,
    ChallengeExpired,
    ChannelClosedReceived,
    Concluded,
    ConclusionLost,
    ForceClose,
    Funded,
    FundingExpired,
    LockFailed,
    MatchFailed,
    Registered,
    Reorganised,
    Restored,
    VersionZeroLapsed,
)
from perund.channel.events import (
    Closed,
    Conclude,
    Disputed,
    Event,
    FundingFailed,
    Lost,
    Opened,
    Persist,
    Reason,
    SendChannelClosed,
    UpdateFailure,
)
from perund.channel.phases import RECEIVES_UPDATES, TERMINAL, Phase, advance
from perund.channel.records import Channel, Dispute
from perund.channel.steps import (
    NOTHING,
    Result,
    current_of,
    deposits,
    drop_staged,
    fund_event,
    refuse,
    register_latest,
    settlement,
    settles_unfunded,
)
from perund.channel.types import Address, Params, State
from perund.channel.updating import decline
from perund.channel.virtual import is_virtual
from perund.errors import FailedPrecondition

# --- chain and lifecycle ------------------------------------------------------------------------

FUNDING_LAPSED: Final = ("the funding did not complete before the deadline, and nothing of "
                         "ours was to be deposited")
"""Why a channel closed without touching the chain at its funding deadline."""
VERSION_ZERO_LAPSED: Final = "the proposer never countersigned version 0"
"""Why a proposal we accepted closed without touching the chain."""
PEER_CLOSED: Final = "the peer holds the channel closed, and nothing of ours was in it"
"""Why a channel closed without touching the chain on the peer's `ChannelClosed`."""


def _gave_up(channel: Channel, why: str) -> SendChannelClosed:
    """Tell the peer we closed the channel without the chain: it may still deposit (its node
    was down past our deadline, its deposit is not mined yet, or our signature on version 0
    never reached it), and only its settlement on-chain gives that back (docs/protocol.md,
    "A channel closed without the chain"). The same goes in answer to its every Sync."""
    return SendChannelClosed(channel.peer, channel.channel_id, why)


def _nothing_of_ours(channel: Channel) -> bool:
    """A ledger channel whose latest fully signed state gives us nothing: nothing of ours to
    deposit, or to get back on-chain. Funds it locks for virtual channels may be ours when
    those end (an audit: a hub's `ChannelClosed` closed a receiving user's ledger at once, and
    the virtual channel's balance owed her went to the hub), so a state with locks never
    counts as nothing."""
    state = current_of(channel).state
    return type(channel.params) is Params and not state.locked and not any(
        row[channel.index] for row in state.balances)


def _funded(channel: Channel, change: Funded) -> Result:
    if channel.phase is not Phase.FUNDING:
        return channel, NOTHING
    # A peer's update may already await our user (see RECEIVES_UPDATES).
    phase = Phase.UPDATING if channel.staged is not None else Phase.OPEN
    new = channel.evolve(phase=advance(channel.phase, phase), funding=None)
    return new, (Persist(new), Opened(channel.channel_id))


def _funding_expired(channel: Channel, change: FundingExpired) -> Result:
    """The peer did not fund in time: register version 0 so everyone gets their deposit back.
    A ledger channel in which we were to deposit nothing is closed at once instead: nothing of
    ours is on-chain to get back, and the registration and conclusion would only cost our gas,
    as often as a peer that never deposits cared to propose (the resource review). The peer
    gets its deposit back itself."""
    if channel.phase is not Phase.FUNDING:
        return channel, NOTHING
    channel, dropped = drop_staged(channel, UpdateFailure.SETTLING, "the channel was not funded")
    # Nothing of ours in the state: neither a deposit nor a payment taken while funding (a
    # payment makes it ours to claim: the state is registered, as the peer could register
    # an older one; an audit found the regression of testing version 0's shares here).
    if _nothing_of_ours(channel):
        # The peer is told: it may deposit still (its node down past our deadline, its deposit
        # not mined yet), and would otherwise take the channel for open, its deposit held by
        # a channel nobody settles (an audit).
        closed = channel.evolve(phase=advance(channel.phase, Phase.CLOSED), unfunded=True)
        return closed, (Persist(closed), *dropped, FundingFailed(channel.channel_id),
                        _gave_up(closed, FUNDING_LAPSED),
                        Closed(channel.channel_id, 0, (), off_chain=FUNDING_LAPSED))
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSING), unfunded=True)
    return new, (Persist(new), *dropped, FundingFailed(channel.channel_id), register_latest(new))


def _force_close(channel: Channel, change: ForceClose) -> Result:
    """The user settles without the peer: register the latest fully signed state."""
    if channel.phase not in (Phase.FUNDING, Phase.OPEN, Phase.UPDATING):
        raise FailedPrecondition(
            f"channel is {channel.phase.value}: nothing to register",
            channel_id=channel.channel_id.hex(),
            phase=channel.phase.value,
        )
    channel, events = drop_staged(channel, UpdateFailure.SETTLING, "the channel is being closed")
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSING),
                         unfunded=settles_unfunded(channel))
    return new, (Persist(new), *events, register_latest(new))


def _registered(channel: Channel, change: Registered) -> Result:
    """A state is registered on-chain: dispute; refute with ours if it is newer."""
    if channel.phase in TERMINAL:
        return channel, NOTHING
    if channel.dispute is not None and change.version < channel.dispute.version:
        return channel, NOTHING  # an older event replayed; the chain only moves up
    if channel.phase is Phase.DISPUTED and channel.dispute is not None \
            and (change.version, change.timeout) == (channel.dispute.version,
                                                     channel.dispute.timeout):
        # The dispute as known, told again (a replay, or the chain's record read back after
        # a registration of ours found it there): no news for the user; only a refutation
        # still due goes out again.
        current = channel.current
        again = register_latest(channel) if current is not None \
            and current.state.version > change.version else None
        if again is not None and again.state.version > change.version:
            return channel, (again,)
        return channel, NOTHING
    state = State(
        channel.channel_id, change.version, channel.latest.assets, change.balances, change.is_final,
        change.locked,
    )
    channel, events = drop_staged(channel, UpdateFailure.SETTLING, "registered on-chain")
    new = channel.evolve(
        phase=advance(channel.phase, Phase.DISPUTED),
        dispute=Dispute(change.version, change.timeout, state),
        unfunded=settles_unfunded(channel),
    )
    events.insert(0, Persist(new))
    events.append(Disputed(channel.channel_id, change.version, change.timeout))
    current = new.current
    # Only a newer state refutes (the provable one may be older than our latest).
    refutation = register_latest(new) if current is not None \
        and current.state.version > change.version else None
    if refutation is not None and refutation.state.version > change.version:
        events.append(refutation)
    elif change.is_final:
        events.append(Conclude(channel.channel_id, channel.params, state))
    return new, tuple(events)


def _reorganised(channel: Channel, change: Reorganised) -> Result:
    """Forget the dispute as the chain had it and register our latest state again: the
    events of the new blocks rebuild the dispute (a stale registration in them is refuted), and
    a registration the chain has already is refused harmlessly. Both sides see the
    reorganisation: of a final state, participant 0 concludes at once, the other only if that
    has not happened after a grace period (as for `ConclusionLost`)."""
    if channel.phase is not Phase.DISPUTED:
        return channel, NOTHING
    new = channel.evolve(dispute=None)
    return new, (Persist(new), *settlement(new, primary=channel.index == 0))


def _challenge_expired(channel: Channel, change: ChallengeExpired) -> Result:
    if channel.phase is not Phase.DISPUTED or channel.dispute is None:
        return channel, NOTHING
    return channel, (Conclude(channel.channel_id, channel.params, channel.dispute.state),)


def _concluded(channel: Channel, change: Concluded) -> Result:
    if channel.phase in TERMINAL:
        return channel, NOTHING
    channel, events = drop_staged(channel, UpdateFailure.SETTLING, "concluded on-chain")
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSED))
    params = channel.params
    if change.payouts is None or type(params) is not Params:
        # A virtual channel pays nothing itself: its parents pay its outcome.
        return new, (Persist(new), *events, Closed(channel.channel_id, change.version, None))
    ours = params.receivers[channel.index]
    paid: dict[Address, int] = {}
    credited: dict[Address, int] = {}
    for payout in change.payouts:
        if payout.receiver == ours:
            paid[payout.asset] = paid.get(payout.asset, 0) + payout.amount
            if not payout.pushed:
                credited[payout.asset] = credited.get(payout.asset, 0) + payout.amount
    return new, (Persist(new), *events,
                 Closed(channel.channel_id, change.version, tuple(paid.items()),
                        tuple(credited.items())))


def _chain_lost(channel: Channel, change: ChainLost) -> Result:
    """Give the channel up: whatever was in flight fails, nothing more is signed or sent."""
    if channel.phase in TERMINAL:
        return channel, NOTHING
    channel, events = drop_staged(channel, UpdateFailure.SETTLING, "the chain lost the channel")
    new = channel.evolve(phase=advance(channel.phase, Phase.CHAIN_LOST))
    return new, (Persist(new), *events, Lost(channel.channel_id, change.detail))


def _lock_failed(channel: Channel, change: LockFailed) -> Result:
    """A virtual channel whose lock in our parent cannot become fully signed: nothing of ours
    is locked for it, so it closes (docs/protocol.md: the half-funded proposal is worthless)."""
    if not is_virtual(channel) or channel.phase not in (Phase.PROPOSING, Phase.FUNDING):
        return channel, NOTHING
    # A channel still proposing keeps its half-signed version 0: it has no other state.
    staged = channel.staged if channel.current is None else None
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSED), staged=staged)
    return new, (Persist(new), FundingFailed(channel.channel_id),
                 Closed(channel.channel_id, channel.version,
                        off_chain=f"the lock in our ledger channel failed: {change.detail}"))


def _version_zero_lapsed(channel: Channel, change: VersionZeroLapsed) -> Result:
    """The proposer of a ledger channel we accepted never countersigned version 0: nothing is
    deposited before it is (funding starts with a fully signed version 0), so the channel
    closes, unfunded. Should the proposer hold it fully signed after all (it kept the channel
    and died before its signature left), it may deposit once back: it is told, now and in
    answer to its Sync, and settles on-chain (with our share 0 it would otherwise fund the
    channel alone and take it for open)."""
    if is_virtual(channel) or channel.phase is not Phase.PROPOSING:
        return channel, NOTHING
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSED), unfunded=True)
    return new, (Persist(new), FundingFailed(channel.channel_id),
                 _gave_up(new, VERSION_ZERO_LAPSED),
                 Closed(channel.channel_id, channel.version, off_chain=VERSION_ZERO_LAPSED))


def _channel_closed_received(channel: Channel, change: ChannelClosedReceived) -> Result:
    """The peer signs nothing more on the channel (it closed it without the chain, or lost
    it): settle on-chain with our latest state, as a forced close does, so that what we
    deposited, or may still have on its way to the contract, comes back; the conclusion pays
    it, and a deposit mined after the conclusion reverts. A channel still funding with nothing
    of ours in the state closes at once, as a funding that expired does. An open one with
    nothing of ours stays open, refusing the message: what it holds is the peer's deposits
    (a peer that lost the channel, restored from an older backup, say), which only our state
    frees; closing it would strand them for good (an audit), and a dispute would be ours to
    pay for theirs. Our user may still close it (`channel_close`: a dispute). Only a channel
    that still takes updates acts; a settling one is on its way already. A dishonest peer
    gains nothing by it: our latest state is what a dispute of ours would register anyway."""
    if change.sender != channel.peer:
        return refuse(channel, change.sender, Reason.NOT_PEER)
    if channel.phase not in RECEIVES_UPDATES or type(channel.params) is not Params:
        return channel, NOTHING
    funding = channel.phase is Phase.FUNDING
    nothing = _nothing_of_ours(channel)
    if nothing and not funding:
        return refuse(channel, change.sender, Reason.HOLDS_NOTHING_OF_OURS)
    channel, dropped = drop_staged(channel, UpdateFailure.SETTLING, "the peer closed the channel")
    failed = (FundingFailed(channel.channel_id),) if funding else ()
    if nothing:  # still funding
        closed = channel.evolve(phase=advance(channel.phase, Phase.CLOSED),
                                unfunded=settles_unfunded(channel))
        return closed, (Persist(closed), *dropped, *failed,
                        Closed(channel.channel_id, closed.version, (), off_chain=PEER_CLOSED))
    new = channel.evolve(phase=advance(channel.phase, Phase.CLOSING),
                         unfunded=settles_unfunded(channel))
    return new, (Persist(new), *dropped, *failed, register_latest(new))


def _match_failed(channel: Channel, change: MatchFailed) -> Result:
    """We are the intermediary: the peer's lock or fold found no match in time; refuse it."""
    staged = channel.staged
    if staged is None or staged.proposer == channel.index or staged.update_id != change.update_id:
        return channel, NOTHING
    return decline(channel, staged, Reason.NO_MATCH)


def _restored(channel: Channel, change: Restored) -> Result:
    """Resume after a restart: what was in flight is over, what the phase needs is redone.

    Writes made without waiting may be lost, so we resume above our reservation
    (`signed_up_to`) and, where updates happen, wait for the peer's Sync (`resyncing`) before
    signing anything (docs/protocol.md, "Durability by interest"). Our update in flight becomes
    `abandoned` (the peer may have countersigned it before we went down); the peer's update
    awaiting our user is dropped and answered with a reject.
    """
    if channel.phase in TERMINAL:
        return channel, NOTHING
    if is_virtual(channel) and channel.phase is Phase.PROPOSING:
        # A virtual channel we accepted whose version 0 the proposer had not countersigned
        # before we stopped: nothing is locked for it (locks need a fully signed version 0),
        # and nobody waits for it any more.
        return _lock_failed(channel, LockFailed("restarted before version 0 was fully signed"))
    channel = channel.evolve(
        sync_sent=False,
        fresh_link=False,
        signed_up_to=max(channel.signed_up_to, channel.reserved),
        resyncing=channel.current is not None and channel.phase in RECEIVES_UPDATES,
    )
    staged = channel.staged
    events: list[Event] = []
    if staged is not None and channel.current is not None:
        channel, events = drop_staged(channel, UpdateFailure.RESTART, "the node restarted")
        if staged.proposer == channel.index:
            channel = channel.evolve(abandoned=staged)
        events.insert(0, Persist(channel))
    if channel.phase is Phase.FUNDING:
        # What is still missing of version 0's deposits: a payment received meanwhile is not
        # ours to deposit (an audit: the payer got it back from the contract).
        state = current_of(channel).state
        events.append(fund_event(channel, replace(state, balances=deposits(channel))))
    elif channel.phase is Phase.CLOSING or channel.phase is Phase.DISPUTED:
        # Disputed: the refutation may not have left before the restart (the chain ignores a
        # registration it already has). An expired challenge is the watcher's to report.
        events.extend(settlement(channel, primary=False))
    return channel, tuple(events)


def _conclusion_lost(channel: Channel, change: ConclusionLost) -> Result:
    """Settle again what the chain no longer shows concluded: a final state is concluded at
    once, any other is registered (and refuted by the peer if it holds a newer one)."""
    if channel.phase is not Phase.CLOSED or type(channel.params) is not Params \
            or channel.current is None:
        return channel, NOTHING
    # The one way out of CLOSED: the chain itself took the conclusion back (`advance` knows
    # CLOSED as terminal, which it is for every other input). What the core knew of the
    # dispute went with the same blocks.
    new = channel.evolve(phase=Phase.CLOSING, dispute=None)
    # Both sides find it (at their start, or their watchers after a rewind): participant 0
    # concludes a final state at once, the other only if that has not happened after a grace
    # period (no transaction wasted).
    return new, (Persist(new), *settlement(new, primary=channel.index == 0))


HANDLERS: Final[dict[type, Callable[[Channel, Any], Result]]] = {
    ForceClose: _force_close,
    ChannelClosedReceived: _channel_closed_received,
    Restored: _restored,
    Funded: _funded,
    FundingExpired: _funding_expired,
    Registered: _registered,
    ChallengeExpired: _challenge_expired,
    Concluded: _concluded,
    Reorganised: _reorganised,
    ChainLost: _chain_lost,
    ConclusionLost: _conclusion_lost,
    LockFailed: _lock_failed,
    VersionZeroLapsed: _version_zero_lapsed,
    MatchFailed: _match_failed,
}
"""The inputs this module handles, for `perund.channel.machine.transition`."""
