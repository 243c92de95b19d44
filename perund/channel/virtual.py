"""Virtual channels in the core: locks and folds in ledger channels (docs/protocol.md "Virtual
channels"). Pure, like the rest of `perund.channel`.

A virtual channel V = (alice, carol) is a `Channel` whose params are `VirtualParams`; its
participant j's ledger channel with the intermediary ingrid is `params.parents[j]`. V's own
updates are ordinary updates. What is particular to it happens in the parents:

- **lock**: once V's version 0 is fully signed, each party sends ingrid an update of its ledger
  that moves, per asset, V's initial balance of each V participant out of the free balance of
  the ledger participant who stands for it (itself for its own share, ingrid for the other's)
  into a `SubAlloc(V, amounts, index_map)`, with V's version 0 and both its signatures;
- **fold**: once V's final state is fully signed, an update that removes V's `SubAlloc` and adds
  V's final balances to the free balances of the ledger participants standing for them.

`locked_state` and `folded_state` compute those states, the same way for the sender (who makes
its update) and for ingrid (who checks that an update is exactly that). A plain update may never
change a state's locks (`rules.balance_rules`). The intermediary never answers a lock or a fold
alone: the core stages it (`AwaitingMatch`) and the shell's matcher answers both updates of a
pair at once (`RespondUpdate`), or refuses one that found no match in time (`MatchFailed`).
"""

from __future__ import annotations

from perund.channel.encoding import signing_digest
from perund.channel.events import AwaitingMatch, Event, FoldParent, LockParent, Reason
from perund.channel.fees import fee_amounts
from perund.channel.phases import advance, busy
from perund.channel.records import Channel, Staged
from perund.channel.rules import balance_rules, fully_signed
from perund.channel.types import (
    ETH,
    Address,
    ChannelID,
    Signature,
    State,
    SubAlloc,
    VirtualParams,
    VirtualProof,
)
from perund.errors import FailedPrecondition, InvalidArgument


def is_virtual(channel: Channel) -> bool:
    """Whether `channel` is a virtual channel (funded by locks in two ledger channels)."""
    return type(channel.params) is VirtualParams


def virtual_params(channel: Channel) -> VirtualParams:
    """A virtual channel's params (a bug to ask a ledger channel for them)."""
    params = channel.params
    if type(params) is not VirtualParams:  # pragma: no cover - callers check is_virtual
        raise AssertionError("not a virtual channel")
    return params


def parent_of(channel: Channel) -> ChannelID:
    """Our ledger channel that funds virtual channel `channel`."""
    return virtual_params(channel).parents[channel.index]


def proof_of(channel: Channel) -> VirtualProof:
    """A virtual channel's latest fully signed state as a proof for its parents."""
    current = channel.current
    if current is None:  # pragma: no cover - a virtual channel locks or folds once signed
        raise AssertionError("virtual channel without a fully signed state")
    return VirtualProof(virtual_params(channel), current.state, current.signatures)


def lock_parent(channel: Channel) -> LockParent:
    """What a virtual channel asks of the shell once its version 0 is fully signed."""
    return LockParent(channel.channel_id, parent_of(channel), proof_of(channel))


def fold_parent(channel: Channel) -> FoldParent:
    """What a virtual channel asks of the shell once its final state is fully signed."""
    return FoldParent(channel.channel_id, parent_of(channel), proof_of(channel))


def locks_of(state: State) -> dict[ChannelID, SubAlloc]:
    """The virtual channels a ledger state funds, by ID."""
    return {lock.channel_id: lock for lock in state.locked}


# -- the states of a lock and a fold ------------------------------------------------------------


def _columns(ledger: State, virtual: State) -> list[int]:
    """For each asset of the virtual state, its row in the ledger state. InvalidArgument if
    the ledger lacks it, or the virtual state's assets are not what the contract's
    `registerVirtualState` takes (some, each once, ETH first): an asset listed twice would
    have two columns summed into one ledger row, so a lock or fold could move other amounts
    than it shows, and a virtual state the contract refuses cannot be disputed."""
    assets = virtual.assets
    if not assets or len(set(assets)) != len(assets) or ETH in assets[1:]:
        why = ("lists an asset twice" if len(set(assets)) != len(assets)
               else "has no asset" if not assets else "lists ETH after another asset")
        raise InvalidArgument(f"the virtual channel {why}", name="assets",
                              value=str(len(assets)),
                              requirement="at least one asset, each once, ETH first")
    rows = []
    for asset in virtual.assets:
        try:
            rows.append(ledger.assets.index(asset))
        except ValueError:
            raise InvalidArgument(
                "the ledger channel does not hold every asset of the virtual channel",
                name="balances", value="0x" + bytes(asset).hex(),
                requirement="assets of the ledger channel with the intermediary") from None
    return rows


def index_map(ledger_index: int, virtual_index: int) -> tuple[int, int]:
    """The SubAlloc index map of a lock made by the ledger participant `ledger_index` who is
    virtual participant `virtual_index`: it stands for itself, the other ledger participant
    (the intermediary) for the other virtual participant."""
    other = 1 - ledger_index
    return (ledger_index, other) if virtual_index == 0 else (other, ledger_index)


def locked_state(ledger: State, version: int, ledger_index: int, proof: VirtualProof) -> State:
    """The ledger state `ledger` with virtual channel `proof.state` (its version 0) locked by
    ledger participant `ledger_index`, at `version`, who also pays the intermediary (the other
    ledger participant) the lock's fee, if any. InvalidArgument when the free balances do not
    cover it, FailedPrecondition when the channel is locked already."""
    v0 = proof.state
    vid = v0.channel_id
    if any(lock.channel_id == vid for lock in ledger.locked):
        raise FailedPrecondition("the virtual channel is locked in this ledger already",
                                 channel_id="0x" + vid.hex())
    if proof.fee and len(proof.fee) != len(v0.assets):
        raise InvalidArgument("a fee has one amount per asset of the virtual channel",
                              name="fee", value=str(len(proof.fee)),
                              requirement=f"{len(v0.assets)} amounts")
    fee = fee_amounts(proof.fee, len(v0.assets))
    mapping = index_map(ledger_index, _virtual_index(proof, ledger_index, ledger))
    rows = [list(row) for row in ledger.balances]
    amounts = [0] * len(ledger.assets)
    for c, a in enumerate(_columns(ledger, v0)):
        for j in (0, 1):
            who = mapping[j]
            rows[a][who] -= v0.balances[c][j]
            if rows[a][who] < 0:
                raise InvalidArgument(
                    "the ledger channel's free balance does not cover the virtual channel",
                    name="balances", value=str(v0.balances[c][j]),
                    requirement=f"at most {rows[a][who] + v0.balances[c][j]}",
                    asset="0x" + bytes(ledger.assets[a]).hex())
        # The fee moves in the same state as the lock: paid exactly when the lock is signed.
        rows[a][ledger_index] -= fee[c]
        if rows[a][ledger_index] < 0:
            raise InvalidArgument(
                "the ledger channel's free balance does not cover the virtual channel and the "
                "intermediary's fee", name="fee", value=str(fee[c]),
                requirement=f"at most {rows[a][ledger_index] + fee[c]}",
                asset="0x" + bytes(ledger.assets[a]).hex())
        rows[a][1 - ledger_index] += fee[c]
        amounts[a] = v0.balances[c][0] + v0.balances[c][1]
    lock = SubAlloc(vid, tuple(amounts), mapping)
    return State(ledger.channel_id, version, ledger.assets,
                 tuple((row[0], row[1]) for row in rows), False, (*ledger.locked, lock))


def folded_state(ledger: State, version: int, proof: VirtualProof) -> State:
    """The ledger state `ledger` with virtual channel `proof.state` (its final state) folded
    back, at `version`. FailedPrecondition when it is not locked here or the final state does
    not hold exactly what is locked."""
    final = proof.state
    locks = locks_of(ledger)
    lock = locks.get(final.channel_id)
    if lock is None:
        raise FailedPrecondition("the virtual channel is not locked in this ledger",
                                 channel_id="0x" + final.channel_id.hex())
    if not final.is_final:
        raise FailedPrecondition("only a final virtual state is folded")
    columns = _columns(ledger, final)
    totals = [0] * len(ledger.assets)
    for c, a in enumerate(columns):
        totals[a] = final.balances[c][0] + final.balances[c][1]
    if tuple(totals) != lock.balances:
        raise FailedPrecondition("the final virtual state does not hold what is locked")
    rows = [list(row) for row in ledger.balances]
    for c, a in enumerate(columns):
        for j in (0, 1):
            rows[a][lock.index_map[j]] += final.balances[c][j]
    return State(ledger.channel_id, version, ledger.assets,
                 tuple((row[0], row[1]) for row in rows), False,
                 tuple(other for other in ledger.locked if other.channel_id != lock.channel_id))


def _virtual_index(proof: VirtualProof, ledger_index: int, ledger: State) -> int:
    """Which virtual participant the ledger participant making the lock is: the one whose
    parent this ledger is (FailedPrecondition if neither)."""
    parents = proof.params.parents
    for j in (0, 1):
        if parents[j] == ledger.channel_id:
            return j
    raise FailedPrecondition("the virtual channel is not funded through this ledger",
                             channel_id="0x" + proof.state.channel_id.hex())


def proof_state(channel: Channel, current: State, version: int, proof: VirtualProof) -> State:
    """The state of our own lock or fold update in ledger `channel` (`OwnUpdate` with a
    proof); InvalidArgument / FailedPrecondition when it cannot be made."""
    vp = proof.params
    j = _virtual_index(proof, channel.index, current)
    if vp.participants[j] != channel.me:
        raise FailedPrecondition("we are not the virtual participant this ledger funds")
    if proof.is_fold:
        if proof.fee:
            raise FailedPrecondition("a fold carries no fee")
        state = folded_state(current, version, proof)
    else:
        if proof.state.version != 0:
            raise FailedPrecondition("a lock carries the virtual channel's version 0")
        if proof.fee and j != 0:
            raise FailedPrecondition("only the virtual channel's opener pays the intermediary")
        state = locked_state(current, version, channel.index, proof)
    if balance_rules(current, state, locks_may_change=True) is not None:
        # What received_rules refuses from a peer, we never sign either.
        raise FailedPrecondition("the lock or fold would change the ledger channel's funds")
    return state


# -- the intermediary's checks -------------------------------------------------------------------


def received_rules(channel: Channel, current: State, state: State,
                   proof: VirtualProof) -> Reason | None:
    """Whether the peer's update `state` of ledger `channel` is exactly the lock or fold that
    `proof` implies (we are the intermediary), the proof fully signed. The update's own
    version and signature are the caller's."""
    vp, virtual = proof.params, proof.state
    peer = channel.peer
    if peer not in vp.participants:
        return Reason.VIRTUAL
    j = vp.participants.index(peer)
    if vp.parents[j] != channel.channel_id or virtual.locked:
        return Reason.VIRTUAL
    if not proof.is_fold and virtual.version != 0:
        return Reason.VIRTUAL
    if proof.fee and (proof.is_fold or j != 0):
        return Reason.VIRTUAL  # only the opener pays, and only for its lock
    try:
        expected = (folded_state(current, state.version, proof) if proof.is_fold
                    else locked_state(current, state.version, channel.peer_index, proof))
    except (InvalidArgument, FailedPrecondition, ValueError):
        return Reason.VIRTUAL
    if state != expected:
        return Reason.VIRTUAL
    # Whatever the lock or fold, the ledger's funds (free and locked) stay what they are.
    reason = balance_rules(current, state, locks_may_change=True)
    if reason is not None:
        return reason
    if not fully_signed(signing_digest(virtual), proof.signatures, vp):
        return Reason.SIGNATURE
    return None


def await_match(channel: Channel, state: State, signature: Signature, digest: bytes,
                proof: VirtualProof) -> tuple[Channel, tuple[Event, ...]]:
    """Hold the peer's valid lock or fold for the matcher: staged as an update awaiting our
    answer (so nothing else is signed on this ledger meanwhile), answered later with
    `RespondUpdate` or `MatchFailed`."""
    pending = Staged(channel.peer_index, state, signature, digest, update_id=digest)
    new = channel.evolve(
        phase=advance(channel.phase, busy(channel.phase)), staged=pending, sync_sent=False
    )
    return new, (AwaitingMatch(channel.channel_id, digest, proof),)


def participant_of(params: VirtualParams, address: Address) -> int | None:
    """Which participant of the virtual channel `address` is, if any."""
    return params.participants.index(address) if address in params.participants else None
