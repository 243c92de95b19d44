"""The steps that the channel core's transitions share (perund.channel.machine): refusing,
making a state current, what a settling channel does on-chain, and the return shape."""

from __future__ import annotations

from typing import Any, Final

from perund.channel.encoding import Signer, signing_digest
from perund.channel.events import (
    ConcludeFinal,
    Event,
    Fund,
    NewState,
    Persist,
    Reason,
    Refused,
    Register,
    SendSync,
    SendUpdateReject,
    Source,
    UpdateFailed,
    UpdateFailure,
    UpdateWithdrawn,
)
from perund.channel.phases import RECEIVES_UPDATES, Phase, advance, at_rest
from perund.channel.records import Channel, SignedState
from perund.channel.rules import signed_by
from perund.channel.types import Address, Params, Signature, State
from perund.channel.virtual import fold_parent, lock_parent
from perund.errors import Internal

Result = tuple[Channel, tuple[Event, ...]]
"""What every transition returns: the new channel value and the events to execute in order."""

NOTHING: Final[tuple[Event, ...]] = ()

BEFORE_FUNDED: Final = frozenset({Phase.PROPOSING, Phase.FUNDING})


def settles_unfunded(channel: Channel) -> bool:
    """The `unfunded` of `channel` as it goes to settlement (closing or disputed): it never
    got past funding, now or before."""
    return channel.unfunded or channel.phase in BEFORE_FUNDED


def ordered(channel: Channel, ours: Signature, theirs: Signature) -> tuple[Signature, Signature]:
    """Our and the peer's signatures in participant order."""
    return (ours, theirs) if channel.index == 0 else (theirs, ours)


def refuse(channel: Channel, sender: Address, reason: Reason, detail: str = "") -> Result:
    """Refuse a peer's message: the channel is unchanged, a `Refused` event says why."""
    return channel, (Refused(channel.channel_id, sender, reason, detail),)


def refuse_update(channel: Channel, sender: Address, state: State, reason: Reason) -> Result:
    """Refuse the peer's Update and tell it so (docs/specification.md §3, update step 2)."""
    return channel, (
        Refused(channel.channel_id, sender, reason, f"version {state.version}"),
        SendUpdateReject(channel.peer, state.channel_id, state.version, reason.value),
    )


def check_signer(channel: Channel, signer: Signer) -> None:
    """`Internal` unless `signer` is our participant in the channel."""
    if signer.address != channel.me:
        # The shell handed us the wrong key: a bug, not a user's or a peer's mistake.
        raise Internal(
            "signer is not this channel's participant", channel_id=channel.channel_id.hex()
        )


def current_of(channel: Channel) -> SignedState:
    """The latest fully signed state (the phase checks guarantee there is one)."""
    if channel.current is None:  # pragma: no cover - guarded by the phase checks
        raise AssertionError("channel has no fully signed state in phase " + channel.phase.value)
    return channel.current


def drop_staged(channel: Channel, failure: UpdateFailure,
                 reason: str) -> tuple[Channel, list[Event]]:
    """Forget the update in flight and say so; phase UPDATING → OPEN.

    Ours: `UpdateFailed`. The peer's: `UpdateWithdrawn` for our user and an explicit
    `UpdateReject` for the peer, whose core keeps its update unresolved until it hears back.
    """
    staged = channel.staged
    if staged is None or channel.current is None:
        # While proposing, staged version 0 is all we have: it stays as the channel's record.
        return channel, []
    dropped = channel.evolve(staged=None, phase=advance(channel.phase, at_rest(channel.phase)))
    version = staged.state.version
    if staged.proposer == channel.index:
        return dropped, [UpdateFailed(channel.channel_id, version, failure, reason)]
    return dropped, [
        UpdateWithdrawn(channel.channel_id, staged.update_id, reason),
        SendUpdateReject(channel.peer, channel.channel_id, version, reason),
    ]


def make_current(
    channel: Channel, signed: SignedState, source: Source, primary: bool, wait: bool = True,
    checked: SignedState | None = None, **changes: Any
) -> tuple[Channel, list[Event]]:
    """Make a newer fully signed state current; the phase and on-chain duties follow from it.
    `wait`: the user hears of it only once the write is durable. `checked`: the channel's
    `checked` afterwards (None: both signatures on `signed` were verified). `changes` are
    further fields to set in the same copy (this is the hot path)."""
    state = signed.state
    phase = channel.phase
    if phase is Phase.FUNDING:
        changes["funding"] = funding_kept(channel)
    if phase in RECEIVES_UPDATES:
        phase = Phase.CLOSING if state.is_final else at_rest(phase)
    new = channel.evolve(
        phase=advance(channel.phase, phase), current=signed, staged=None, checked=checked,
        **changes
    )
    events: list[Event] = [Persist(new, wait, by_us=source is not Source.PEER),
                           NewState(channel.channel_id, state, source)]
    if phase is Phase.CLOSING or phase is Phase.DISPUTED:
        events.extend(settlement(new, primary))
    return new, events


def provable(channel: Channel) -> SignedState:
    """Our latest state the chain takes: `current`, unless the peer's countersignature on it
    was left unchecked and does not verify; then `checked`, which pays us at least as much
    (docs/protocol.md, "Verification by interest")."""
    current = current_of(channel)
    checked = channel.checked
    if checked is None or signed_by(signing_digest(current.state),
                                    current.signatures[channel.peer_index], channel.peer):
        return current
    return checked


def register_latest(channel: Channel) -> Register:
    """The on-chain registration of our latest state the chain takes (`provable`), naming
    our latest version when that is not it."""
    best = provable(channel)
    latest = current_of(channel)
    return Register(channel.channel_id, channel.params, best.state, best.signatures,
                    0 if best is latest else latest.state.version)


def funding_kept(channel: Channel) -> tuple[tuple[int, ...], ...] | None:
    """`funding` once a newer state replaces `current` while funding: what each side deposits
    is version 0's (the first payment keeps its balances)."""
    if channel.phase is not Phase.FUNDING:
        return channel.funding
    return deposits(channel)


def deposits(channel: Channel) -> tuple[tuple[int, ...], ...]:
    """What each side deposits (version 0's balances), per asset, of a channel in funding."""
    funding = channel.funding
    return funding if funding is not None else current_of(channel).state.balances


def fund_event(channel: Channel, state: State) -> Event:
    """Fund our side of `state`: deposits for a ledger channel, locks for a virtual one."""
    params = channel.params
    if type(params) is not Params:
        return lock_parent(channel)  # a virtual channel is funded by locks in its parents
    return Fund(channel.channel_id, params, channel.index, state.assets, state.balances)


def settlement(channel: Channel, primary: bool) -> list[Event]:
    """What a settling channel must do on-chain about its (new) current state."""
    current = current_of(channel)
    params = channel.params
    if current.state.is_final:
        if type(params) is Params:
            return [ConcludeFinal(channel.channel_id, params, current.state, current.signatures,
                                  primary)]
        if channel.phase is Phase.CLOSING:
            return [fold_parent(channel)]  # a virtual channel settles in its parents
        # A disputed virtual channel: its final state is one more refutation (no shortcut).
    if channel.phase is Phase.CLOSING:
        return [register_latest(channel)]
    if channel.phase is Phase.DISPUTED:
        # No dispute known while disputed: a reorganisation took it (see `lifecycle._reorganised`).
        registration = register_latest(channel)
        if channel.dispute is None or registration.state.version > channel.dispute.version:
            return [registration]
    return []


def send_sync(channel: Channel) -> SendSync:
    """Send the peer our latest fully signed state, naming our update in flight if any: the
    latest it will take (`provable`), since it refuses one whose signature does not verify
    and would otherwise stay behind."""
    current = provable(channel)
    staged = channel.staged
    awaiting = staged.state.version if staged is not None and staged.proposer == channel.index \
        else 0
    return SendSync(channel.peer, current.state, current.signatures, awaiting)
