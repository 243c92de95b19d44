"""The phases of a channel's life and the one table of allowed phase changes.

docs/specification.md §7 lists them for users.

`proposing → funding → open ⇄ updating → closing → (disputed) → closed`, plus the exits a dispute
or a failed funding takes. Every phase change in the core goes through `advance`, so the table
below is the whole lifecycle in one place (docs/conventions.md §8).
"""

from __future__ import annotations

import enum
from typing import Final


class Phase(enum.Enum):
    """Where a channel is in its life, as the user sees it."""

    PROPOSING = "proposing"
    """Created from an accepted proposal; version 0 is not fully signed yet."""
    FUNDING = "funding"
    """Version 0 is fully signed; deposits are under way."""
    OPEN = "open"
    """Funded; no update in flight."""
    UPDATING = "updating"
    """Funded; one update is in flight (ours awaiting the peer, or the peer's awaiting our user)."""
    CLOSING = "closing"
    """No more off-chain updates: a final state awaits `concludeFinal`, or a registration
    (failed funding, refused close, conflict, the user's forced close) is on its way."""
    DISPUTED = "disputed"
    """A state is registered on-chain; the challenge period runs."""
    CLOSED = "closed"
    """Concluded on-chain; the outcome is paid out. Terminal."""
    CHAIN_LOST = "chainLost"
    """The chain no longer holds the channel's deposits (it was reset, or is another chain):
    nothing is signed or sent on-chain for it any more. Terminal; the operator started the
    node knowing it (`--accept-lost-channels`)."""


_ALLOWED: Final[dict[Phase, frozenset[Phase]]] = {
    # The peer may register version 0 before its signature on it ever reaches us.
    Phase.PROPOSING: frozenset({Phase.FUNDING, Phase.DISPUTED, Phase.CLOSED}),
    # Funded while a peer's update awaits our user: straight to updating.
    Phase.FUNDING: frozenset(
        {Phase.OPEN, Phase.UPDATING, Phase.CLOSING, Phase.DISPUTED, Phase.CLOSED}
    ),
    Phase.OPEN: frozenset({Phase.UPDATING, Phase.CLOSING, Phase.DISPUTED, Phase.CLOSED}),
    Phase.UPDATING: frozenset({Phase.OPEN, Phase.CLOSING, Phase.DISPUTED, Phase.CLOSED}),
    Phase.CLOSING: frozenset({Phase.DISPUTED, Phase.CLOSED}),
    # A refutation registers a higher version: the channel stays disputed.
    Phase.DISPUTED: frozenset({Phase.DISPUTED, Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
    Phase.CHAIN_LOST: frozenset(),
}
# Any unsettled channel may turn out lost when the node starts on a chain that lacks it.
for _phase in (Phase.PROPOSING, Phase.FUNDING, Phase.OPEN, Phase.UPDATING, Phase.CLOSING,
               Phase.DISPUTED):
    _ALLOWED[_phase] = _ALLOWED[_phase] | {Phase.CHAIN_LOST}

RECEIVES_UPDATES: Final = frozenset({Phase.FUNDING, Phase.OPEN, Phase.UPDATING})
"""Phases in which the peer's updates are taken. FUNDING too: the peer's watcher may see the
deposits complete before ours does, and its first payment must not fail for that. (We only
propose in OPEN.) Should funding fail, the contract refunds deposits and ignores the states.
Not a virtual channel's FUNDING, though: its funds are our ledger's lock, and until that is
fully signed nothing backs a payment to us (`updating._update_received`)."""


def at_rest(phase: Phase) -> Phase:
    """The phase once no update is in flight: UPDATING becomes OPEN, the rest stay."""
    return Phase.OPEN if phase is Phase.UPDATING else phase


def busy(phase: Phase) -> Phase:
    """The phase while an update is in flight: OPEN becomes UPDATING, the rest stay
    (a peer's update during FUNDING leaves the channel in FUNDING)."""
    return Phase.UPDATING if phase is Phase.OPEN else phase


SETTLING: Final = frozenset({Phase.CLOSING, Phase.DISPUTED, Phase.CLOSED, Phase.CHAIN_LOST})
"""Phases after which no off-chain update is ever signed again."""


TERMINAL: Final = frozenset({Phase.CLOSED, Phase.CHAIN_LOST})
"""Phases a channel never leaves: nothing more happens to it, on- or off-chain."""


def allowed(old: Phase, new: Phase) -> bool:
    """Whether the lifecycle permits going from `old` to `new` (staying put always is)."""
    return old is new or new in _ALLOWED[old]


def advance(old: Phase, new: Phase) -> Phase:
    """`new`, after checking the table; an illegal change is a bug in the core, not bad input."""
    if not allowed(old, new):
        raise AssertionError(f"illegal phase change {old.value} -> {new.value}")
    return new


def successors(phase: Phase) -> frozenset[Phase]:
    """The phases `phase` may change to (for docs and tests)."""
    return _ALLOWED[phase]
