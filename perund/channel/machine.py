"""The channel state machine: `transition(channel, change) -> (channel, events)`.

Pure: no I/O, no clock, no randomness; signing uses the `Signer` carried by the input. Three
kinds of input, three ways to say no:

- a **user** request that cannot be done raises a `perund.errors` exception (`InvalidArgument`,
  `FailedPrecondition`, `ResourceNotFound`); nothing changed, so the caller simply reports it;
- a **peer** message that breaks a rule yields the unchanged channel and a `Refused` event (plus a
  `SendUpdateReject` where the protocol answers one); it never raises;
- a **stale** timer or chain input (an update that is already settled, a phase already left)
  yields the unchanged channel and no events.

The handlers live by subject: `updating` (ours and the peer's updates), `syncing` (syncs after
a reconnection or restart), `lifecycle` (the chain's reports, funding, disputes, restart); the
steps they share and the return shape are in `steps`. See docs/core.md for the state diagram and
the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from perund.channel import lifecycle, syncing, updating
from perund.channel.changes import Change
from perund.channel.records import Channel
from perund.channel.steps import Result


def transition(channel: Channel, change: Change) -> Result:
    """Apply one input to one channel. See the module docstring for how refusals look."""
    return _HANDLERS[type(change)](channel, change)


_HANDLERS: Final[dict[type, Callable[[Channel, Any], Result]]] = {
    **updating.HANDLERS,
    **syncing.HANDLERS,
    **lifecycle.HANDLERS,
}
