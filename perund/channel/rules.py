"""The validation rules of updates as pure predicates returning the `Reason` to refuse.

docs/specification.md §3, "Update", states them.

Checks run cheapest first; signature recovery (tens of µs) always comes last so that malformed
input costs next to nothing.
"""

from __future__ import annotations

from perund.channel.encoding import recover_digest
from perund.channel.events import Reason
from perund.channel.types import Address, Params, State, VirtualParams


def funds(state: State) -> tuple[int, ...]:
    """Per asset, everything the state holds: both free balances plus every locked amount."""
    totals = [row[0] + row[1] for row in state.balances]
    for lock in state.locked:
        for a, amount in enumerate(lock.balances):
            totals[a] += amount
    return tuple(totals)


def balance_rules(reference: State, new: State, locks_may_change: bool = False) -> Reason | None:
    """Same channel, same assets in the same order, same per-asset totals, nothing negative,
    the same locks. With `locks_may_change` (a state both sides signed, learnt from a sync:
    we signed its lock or fold ourselves), the locks may differ as long as the channel's funds,
    free and locked, stay the same per asset."""
    if new.channel_id != reference.channel_id:
        return Reason.WRONG_CHANNEL
    if new.assets != reference.assets:
        return Reason.ASSETS
    old_rows = reference.balances
    if len(new.balances) != len(old_rows) or any(len(row) != 2 for row in new.balances):
        return Reason.ASSETS  # a shape State's constructor refuses; see below
    for row in new.balances:
        # State's constructor refuses negatives already; checked again because a codec may build
        # states without running it, and a negative balance would be a free inflation.
        if row[0] < 0 or row[1] < 0:
            return Reason.NEGATIVE
    if new.locked != reference.locked:
        # Locks change only by a virtual channel's lock or fold, which come with their proof
        # (perund.channel.virtual); a lock slipped into a plain update would promise funds to
        # a virtual channel we know nothing of.
        if not locks_may_change:
            return Reason.LOCKED
        return None if funds(new) == funds(reference) else Reason.TOTALS
    for row, old in zip(new.balances, old_rows, strict=True):
        if row[0] + row[1] != old[0] + old[1]:
            return Reason.TOTALS
    return None


def successor_rules(current: State, new: State) -> Reason | None:
    """Every rule an update's state must meet relative to the current state (no signature)."""
    if new.channel_id != current.channel_id:
        return Reason.WRONG_CHANNEL
    if current.is_final:
        return Reason.FINAL
    if new.version <= current.version:
        return Reason.VERSION  # versions may skip (records.Channel.signed_up_to), never repeat
    return balance_rules(current, new)


def signed_by(digest: bytes, signature: bytes, address: Address) -> bool:
    """Whether `signature` over `digest` recovers to `address` (malformed → False)."""
    try:
        return recover_digest(digest, signature) == address
    except ValueError:
        return False


def fully_signed(digest: bytes, signatures: tuple[bytes, bytes],
                 params: Params | VirtualParams) -> bool:
    """Whether both signatures over `digest` are the participants', in index order."""
    return signed_by(digest, signatures[0], params.participants[0]) and signed_by(
        digest, signatures[1], params.participants[1]
    )


def lowers_balance(current: State, new: State, index: int) -> bool:
    """Whether participant `index` has less of some asset in `new` than in `current`."""
    return any(n[index] < c[index] for n, c in zip(new.balances, current.balances, strict=True))
