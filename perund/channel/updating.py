"""Updates: ours (staged, countersigned, refused, timed out) and the peer's (checked,
countersigned or put to our user). Part of the channel core: `perund.channel.machine`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from perund.channel.changes import (
    OwnUpdate,
    RespondUpdate,
    UpdateAcceptReceived,
    UpdateReceived,
    UpdateRejectReceived,
    UpdateTimedOut,
    UserTimedOut,
)
from perund.channel.encoding import Signer, signing_digest
from perund.channel.events import (
    Closed,
    Event,
    NewState,
    Persist,
    Reason,
    Refused,
    SendUpdate,
    SendUpdateAccept,
    SendUpdateReject,
    Source,
    UpdateFailed,
    UpdateFailure,
    UpdateKind,
    UpdateNeedsUser,
)
from perund.channel.phases import RECEIVES_UPDATES, Phase, advance, at_rest, busy
from perund.channel.records import Channel, SignedState, Staged, reservation_for
from perund.channel.rules import (
    lowers_balance,
    raises_balance,
    signed_by,
    successor_rules,
)
from perund.channel.steps import (
    NOTHING,
    Result,
    check_signer,
    current_of,
    fund_event,
    funding_kept,
    make_current,
    ordered,
    refuse,
    refuse_update,
    register_latest,
    send_sync,
    settlement,
)
from perund.channel.types import UINT64_MAX, Address, Params, Signature, State
from perund.channel.virtual import await_match, is_virtual, proof_state
from perund.channel.virtual import received_rules as virtual_received_rules
from perund.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    PerundError,
    ResourceNotFound,
)

# --- our own updates -----------------------------------------------------------------------------


def _own_update(channel: Channel, change: OwnUpdate) -> Result:
    """Stage the next state with our signature; persist it, then send it."""
    if channel.phase is not Phase.OPEN:
        if channel.phase is Phase.UPDATING:
            raise FailedPrecondition(
                "another update is in flight on this channel", channel_id=channel.channel_id.hex()
            )
        raise FailedPrecondition(
            f"channel is {channel.phase.value}, not open",
            channel_id=channel.channel_id.hex(),
            phase=channel.phase.value,
        )
    if channel.needs_sync:
        raise FailedPrecondition(
            "the node restarted: waiting for the peer's sync" if channel.abandoned is None
            else "an earlier update timed out: waiting for the peer's sync",
            channel_id=channel.channel_id.hex(),
        )
    current = current_of(channel).state
    check_signer(channel, change.signer)
    if change.proof is not None or (change.is_final and current.locked):
        return _own_virtual_update(channel, current, change)
    me = channel.index
    rows = list(current.balances)
    for asset, amount in change.transfers:
        try:
            a = current.assets.index(asset)
        except ValueError:
            raise InvalidArgument(
                "asset is not part of this channel",
                name="currency",
                value="0x" + bytes(asset).hex(),
                requirement="one of the channel's assets",
            ) from None
        if type(amount) is not int:
            raise InvalidArgument(
                "amounts are integers (wei)", name="amount", value=repr(amount), requirement="int"
            )
        row = rows[a]
        mine, theirs = row[me] - amount, row[1 - me] + amount
        if mine < 0 or theirs < 0:
            available = row[me] if mine < 0 else row[1 - me]
            raise InvalidArgument(
                "insufficient balance" if mine < 0 else "the peer's balance is insufficient",
                name="amount",
                value=str(abs(amount)),
                requirement=f"at most {available}",
                # For the API to say it in the currency's unit (it knows the decimals).
                asset="0x" + bytes(asset).hex(),
                available=str(available),
            )
        rows[a] = (mine, theirs) if me == 0 else (theirs, mine)
    try:
        # Never current + 1 blindly: the peer may hold our signature on a refused update of
        # that version (records.Channel.signed_up_to).
        version = max(current.version, channel.signed_up_to) + 1
        state = State(current.channel_id, version, current.assets, tuple(rows), change.is_final,
                      current.locked)
    except ValueError as exc:  # only a uint64 version overflow gets here
        raise FailedPrecondition(str(exc), channel_id=channel.channel_id.hex()) from None
    return _stage_own(channel, state, change)


def _stage_own(channel: Channel, state: State, change: OwnUpdate) -> Result:
    digest = signing_digest(state)
    signature = change.signer.sign_digest(digest)
    staged = Staged(channel.index, state, signature, digest)
    version = state.version
    if version <= channel.reserved and change.proof is None:
        # Our signature is covered by a durable reservation: the staged state is not even
        # written (a restart resumes above `reserved` and takes the state from the peer's Sync
        # if the peer countersigned it: docs/protocol.md, "Durability by interest"); the store
        # only notes it, for the history of the state it turns into. A lock or fold of a
        # virtual channel still waits, as before (rare, and the intermediary's pairing relies
        # on it).
        new = channel.evolve(phase=Phase.UPDATING, staged=staged, signed_up_to=version)
        return new, (Persist(new, wait=False, write=False),
                     SendUpdate(channel.peer, state, signature, change.proof))
    new = channel.evolve(phase=Phase.UPDATING, staged=staged, signed_up_to=version,
                         reserved=max(channel.reserved, reservation_for(version)))
    return new, (Persist(new), SendUpdate(channel.peer, state, signature, change.proof))


def _own_virtual_update(channel: Channel, current: State, change: OwnUpdate) -> Result:
    """Our lock or fold of a virtual channel (`change.proof`) in this ledger channel; and the
    refusal to close a ledger channel that funds virtual channels (a final state locks
    nothing: the contract's concludeFinal takes none)."""
    if change.proof is None:
        raise FailedPrecondition(
            "the channel funds virtual channels: close them first",
            channel_id=channel.channel_id.hex(),
            virtual_channels=["0x" + lock.channel_id.hex() for lock in current.locked])
    if change.transfers or change.is_final:
        raise Internal("a lock or fold moves nothing else")  # a shell bug
    version = max(current.version, channel.signed_up_to) + 1
    if version > UINT64_MAX:
        raise FailedPrecondition("version must be a uint64", channel_id=channel.channel_id.hex())
    return _stage_own(channel, proof_state(channel, current, version, change.proof), change)


def _accept_received(channel: Channel, change: UpdateAcceptReceived) -> Result:
    """The peer countersigned our staged state (or, while proposing, signed version 0), or,
    late, the update of ours that had timed out."""
    if change.sender != channel.peer:
        return refuse(channel, change.sender, Reason.NOT_PEER)
    if change.channel_id != channel.channel_id:
        return refuse(channel, change.sender, Reason.WRONG_CHANNEL)
    staged = channel.staged
    if staged is None or staged.proposer != channel.index or staged.state.version != change.version:
        abandoned = channel.abandoned
        if abandoned is None or abandoned.state.version != change.version:
            detail = f"version {change.version}"
            return refuse(channel, change.sender, Reason.NOTHING_STAGED, detail)
        staged, source = abandoned, Source.SYNC
    else:
        source = Source.OWN
    state = staged.state
    if state.version == 0:
        if not signed_by(staged.digest, change.signature, channel.peer):
            return refuse(channel, change.sender, Reason.SIGNATURE, "version 0")
        new = channel.evolve(
            phase=advance(channel.phase, Phase.FUNDING),
            current=SignedState(state, ordered(channel, staged.signature, change.signature)),
            staged=None,
            sync_sent=False,
        )
        return new, (Persist(new), fund_event(new, state))
    # A payment of ours is held by the payee, who countersigned it: our user may hear of it
    # before our own write is durable. A state that benefits us, or a final one, may not; nor
    # a lock or fold of a virtual channel (kept as strict as before: rare, and relied on).
    previous = current_of(channel)
    wait = state.is_final or state.locked != previous.state.locked \
        or raises_balance(previous.state, state, channel.index)
    checked = None
    if wait or source is not Source.OWN or type(channel.params) is not Params:
        if not signed_by(staged.digest, change.signature, channel.peer):
            return refuse(channel, change.sender, Reason.SIGNATURE, f"version {change.version}")
    else:
        # Nor need we check the countersignature of such a payment: only the chain needs it,
        # and `provable` checks it then (docs/protocol.md, "Verification by interest").
        checked = previous if channel.checked is None else channel.checked
    signed = SignedState(state, ordered(channel, staged.signature, change.signature))
    new, events = make_current(
        channel, signed, source, True, wait, checked, abandoned=None, fresh_link=False,
        sync_sent=False
    )
    return new, tuple(events)


def _reject_received(channel: Channel, change: UpdateRejectReceived) -> Result:
    """The peer refused our staged update (drop it; a refused close becomes a dispute), or
    the update of ours that had timed out (it is resolved: the peer never signs it)."""
    if change.sender != channel.peer:
        return refuse(channel, change.sender, Reason.NOT_PEER)
    if change.channel_id != channel.channel_id:
        return refuse(channel, change.sender, Reason.WRONG_CHANNEL)
    staged = channel.staged
    if staged is not None and staged.proposer == channel.index:
        if staged.state.version == change.version:
            failure = (
                UpdateFailure.COLLISION if change.reason == Reason.COLLISION.value
                else UpdateFailure.REJECTED
            )
            reason, above = _signed_up_to_of(change.reason)
            if above is not None and above > staged.state.version + MAX_VERSION_LEAP:
                # More than any restart explains: a peer claiming 2^64 - 1 would leave us no
                # version to propose (not even a final state). Believed, it is refused again
                # at once, and the send queue's retries end; the user hears why.
                reason = f"{reason} (the peer claims version {above}, implausibly far ahead)"
                above = None
            signed_up_to = channel.signed_up_to if above is None \
                else max(channel.signed_up_to, above)
            return fail_own(channel.evolve(sync_sent=False, signed_up_to=signed_up_to),
                             failure, reason)
    elif channel.abandoned is not None and channel.abandoned.state.version == change.version:
        new = channel.evolve(abandoned=None, fresh_link=False, sync_sent=False)
        return new, (Persist(new),)
    return refuse(channel, change.sender, Reason.NOTHING_STAGED, f"version {change.version}")


_SIGNED_UP_TO: Final = " (signed up to "

MAX_VERSION_LEAP: Final = 2**32
"""How far above our refused update a peer's "signed up to" may lie and still be believed.
Each restart of the peer skips at most a reservation block (`RESERVATION_BLOCK`); a claim
beyond this would only serve to use up the channel's 2^64 versions."""


def _version_reject(channel: Channel, sender: Address, state: State) -> Result:
    """Refuse an update at or below a version we signed, naming the highest one so that the
    peer proposes above it (after our restart it may be up to a reservation block ahead)."""
    reason = f"{Reason.VERSION.value}{_SIGNED_UP_TO}{channel.signed_up_to})"
    return channel, (
        Refused(channel.channel_id, sender, Reason.VERSION, f"version {state.version}"),
        SendUpdateReject(channel.peer, state.channel_id, state.version, reason),
    )


def _signed_up_to_of(reason: str) -> tuple[str, int | None]:
    """A peer's reject reason without the version it names (`_version_reject`), and that
    version; the reason unchanged and None for any other reject."""
    prefix = Reason.VERSION.value + _SIGNED_UP_TO
    if not (reason.startswith(prefix) and reason.endswith(")")):
        return reason, None
    digits = reason[len(prefix):-1]
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 20):
        return reason, None
    version = int(digits)
    return Reason.VERSION.value, version if version <= UINT64_MAX else None


def _timed_out(channel: Channel, change: UpdateTimedOut) -> Result:
    """No answer to our update: drop it, keep it as `abandoned` until its fate is known."""
    staged = channel.staged
    if staged is None or staged.proposer != channel.index or staged.state.version != change.version:
        return channel, NOTHING
    return fail_own(channel, UpdateFailure.TIMED_OUT, "no answer from the peer", change.cause)


_CURED_BY_PROPOSING_AGAIN: Final = frozenset((Reason.VERSION.value, Reason.NEWER_STATE.value))
"""Reasons a peer refuses an update of ours for which proposing it again higher is the cure."""


def fail_own(channel: Channel, failure: UpdateFailure, reason: str,
              cause: PerundError | None = None) -> Result:
    """Drop our staged update after a reject or a timeout, with what has to follow."""
    staged = channel.staged
    assert staged is not None
    failed = UpdateFailed(channel.channel_id, staged.state.version, failure, reason, cause)
    if staged.state.version == 0:
        # The proposer never signed version 0: nothing can be on-chain for us, so the channel
        # is abandoned (the staged state stays for the record).
        new = channel.evolve(phase=advance(channel.phase, Phase.CLOSED))
        return new, (Persist(new), failed, Closed(channel.channel_id, 0))
    timed_out = failure is UpdateFailure.TIMED_OUT
    # A final update that collided, met a version the peer signed already, or a newer state
    # the peer's Sync brought it, is proposed again higher by the send queue like any update:
    # no refusal of the close, no dispute.
    # One that got no answer is `abandoned` like any update: the peer may still hold it (it
    # concludes, or its Sync brings it), and whether to propose it again (a lost connection
    # that came back) or to dispute is the shell's (perund.session.closing).
    retried = timed_out or failure is UpdateFailure.COLLISION or \
        (failure is UpdateFailure.REJECTED and reason in _CURED_BY_PROPOSING_AGAIN)
    final = staged.state.is_final and not retried
    new = channel.evolve(
        staged=None,
        # docs/specification.md §3 Close: a refused or unanswered final update → dispute.
        phase=advance(channel.phase, Phase.CLOSING if final else at_rest(channel.phase)),
        abandoned=staged if timed_out else None,
        sync_sent=channel.sync_sent or timed_out,
        fresh_link=False,
    )
    if not (timed_out or final):
        return new, (failed,)
    events: list[Event] = [Persist(new), failed]
    if timed_out:
        # docs/specification.md §3: after a timeout, sync; the peer answers with its state.
        events.append(send_sync(new))
    if final:
        events.append(register_latest(new))
    return new, tuple(events)


# --- the peer's updates --------------------------------------------------------------------------


def _update_received(channel: Channel, change: UpdateReceived) -> Result:
    """Check every rule of docs/specification.md §3, then accept at once or ask the user."""
    sender, state = change.sender, change.state
    if sender != channel.peer:
        return refuse(channel, sender, Reason.NOT_PEER, f"version {state.version}")
    held = channel.staged
    if held is not None and held.proposer != channel.index and held.state == state \
            and held.signature == change.signature:
        # The very update we hold, again (a duplicated frame): it is being answered. Refusing
        # this copy would answer the peer's request as refused while we go on to answer the
        # one we hold, and the two sides would part.
        return channel, NOTHING
    current_signed = channel.current
    if current_signed is not None and current_signed.state.is_final:
        return refuse_update(channel, sender, state, Reason.FINAL)
    if channel.phase not in RECEIVES_UPDATES or current_signed is None \
            or (channel.phase is Phase.FUNDING and is_virtual(channel)):
        # A virtual channel funds while our ledger's lock of it is not fully signed: nothing
        # of the peer's backs a payment to us yet (an audit: a hub that signed the payer's lock
        # and never ours kept what we took), so it takes none (docs/protocol.md).
        return refuse_update(channel, sender, state, Reason.NOT_OPEN)
    current = current_signed.state
    proof = change.proof
    if proof is None:
        reason = successor_rules(current, state)
        if reason is None and state.is_final and state.locked:
            reason = Reason.LOCKED  # a final state locks nothing (concludeFinal takes none)
    elif state.version <= current.version:
        reason = Reason.VERSION
    else:
        reason = virtual_received_rules(channel, current, state, proof)
    if reason is Reason.VERSION:
        # Not above our current: name the version to propose above (our current may be ahead
        # of the peer's, a payment of ours it countersigned falsely: "Verification by
        # interest"), as for a version we signed (below).
        return _version_reject(channel, sender, state)
    if reason is not None:
        return refuse_update(channel, sender, state, reason)
    if channel.needs_sync:
        # We signed a state of this very version that the peer may hold (our update that timed
        # out). Countersigning another one now could leave two fully signed states of one
        # version; the peer's Sync tells which of them, if any, exists.
        return refuse_update(channel, sender, state, Reason.SYNC_PENDING)
    staged = channel.staged
    if staged is not None:
        # One update in flight per channel. When both sides propose at once, both refuse: the
        # peer holds our signature on our update, so we must not sign another state of its
        # version, nor leave our user's payment hanging on the peer's.
        if staged.proposer != channel.index:
            return refuse_update(channel, sender, state, Reason.IN_FLIGHT)
        return refuse_update(channel, sender, state, Reason.COLLISION)
    if state.version <= channel.signed_up_to:
        # We signed another state of this version (an update of ours the peer refused), or may
        # have, before a restart.
        return _version_reject(channel, sender, state)
    digest = signing_digest(state)
    if not signed_by(digest, change.signature, channel.peer):
        return refuse_update(channel, sender, state, Reason.SIGNATURE)
    if proof is not None:
        return await_match(channel, state, change.signature, digest, proof)
    if state.is_final:
        kind: UpdateKind | None = UpdateKind.FINAL
    elif lowers_balance(current, state, channel.index):
        kind = UpdateKind.REQUEST
    elif channel.confirm_updates:
        kind = UpdateKind.PAYMENT
    else:
        kind = None
    if kind is None:
        check_signer(channel, change.signer)
        return _accept_peer_update(channel, state, change.signature, digest, change.signer)
    pending = Staged(channel.peer_index, state, change.signature, digest, update_id=digest)
    new = channel.evolve(
        phase=advance(channel.phase, busy(channel.phase)), staged=pending, sync_sent=False
    )
    return new, (UpdateNeedsUser(channel.channel_id, digest, state, kind),)


def _accept_peer_update(
    channel: Channel, state: State, theirs: Signature, digest: bytes, signer: Signer
) -> Result:
    """Countersign the peer's state: persist it fully signed, then answer UpdateAccept."""
    ours = signer.sign_digest(digest)
    phase = Phase.CLOSING if state.is_final else at_rest(channel.phase)
    # The write is waited for in any case (the countersignature waits for the fully signed
    # state), so it carries a raised reservation at no cost.
    version = state.version
    new = channel.evolve(
        phase=advance(channel.phase, phase),
        current=SignedState(state, ordered(channel, ours, theirs)),
        checked=None,
        staged=None,
        sync_sent=False,
        signed_up_to=max(channel.signed_up_to, version),
        reserved=channel.reserved if version <= channel.reserved else reservation_for(version),
        funding=funding_kept(channel),
    )
    accept = SendUpdateAccept(channel.peer, channel.channel_id, state.version, ours)
    if state.is_final:
        return new, (
            Persist(new),
            accept,
            NewState(channel.channel_id, state, Source.PEER),
            *settlement(new, primary=False),
        )
    return new, (Persist(new), accept, NewState(channel.channel_id, state, Source.PEER))


def _respond_update(channel: Channel, change: RespondUpdate) -> Result:
    """Our user's answer to a pending peer update."""
    staged = channel.staged
    if staged is None or staged.proposer == channel.index or staged.update_id != change.update_id:
        raise ResourceNotFound(
            "no update awaiting an answer with this id",
            type="update",
            id="0x" + change.update_id.hex(),
        )
    if change.accept:
        check_signer(channel, change.signer)
        return _accept_peer_update(
            channel, staged.state, staged.signature, staged.digest, change.signer
        )
    return decline(channel, staged, Reason.USER_REJECTED)


def _user_timed_out(channel: Channel, change: UserTimedOut) -> Result:
    staged = channel.staged
    if staged is None or staged.proposer == channel.index or staged.update_id != change.update_id:
        return channel, NOTHING
    return decline(channel, staged, Reason.USER_TIMEOUT)


def decline(channel: Channel, staged: Staged, reason: Reason) -> Result:
    """Refuse the peer's update we held (our user's no or silence, a lock without its
    match). Its version is spent: a replay of the same update is refused (`VERSION`) instead
    of being taken as new, and the peer never reuses a version it signed."""
    state = staged.state
    new = channel.evolve(staged=None, phase=advance(channel.phase, at_rest(channel.phase)),
                         signed_up_to=max(channel.signed_up_to, state.version))
    return new, (SendUpdateReject(channel.peer, state.channel_id, state.version, reason.value),)


HANDLERS: Final[dict[type, Callable[[Channel, Any], Result]]] = {
    OwnUpdate: _own_update,
    RespondUpdate: _respond_update,
    UpdateReceived: _update_received,
    UpdateAcceptReceived: _accept_received,
    UpdateRejectReceived: _reject_received,
    UpdateTimedOut: _timed_out,
    UserTimedOut: _user_timed_out,
}
"""The inputs this module handles, for `perund.channel.machine.transition`."""
