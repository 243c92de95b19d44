"""The ports of a channel client: what it needs from outside, as protocols.

The client runs the pure channel core; everything with I/O reaches it through these three
interfaces, so that its behaviour can be tested with in-memory doubles of our own ports and a
`twisted.internet.task.Clock` (tests/session/fakes.py), while the real parts keep their own
tests: `PeerLinks` is `perund.peer.manager.PeerManager`; `Funder` and `Settler` are
`perund.session.onchain.ChainSettlement`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred

from perund.channel import events as ev
from perund.channel.changes import Concluded, Registered
from perund.channel.types import Address
from perund.peer.records import PeerManagerOwner
from perund.wire.messages import Message

if TYPE_CHECKING:
    from perund.session.virtual_onchain import ConcludeParent, RegisterVirtual


class PeerLinks(Protocol):
    """Authenticated links to peers. What arrives (messages, connections) goes to the one owner
    attached; the owner sends through the rest. Every failure is a PerundError (PeerUnreachable,
    PeerDisconnected, PeerRequestTimedOut, ...)."""

    def attach(self, owner: PeerManagerOwner) -> None:
        """Report to `owner` from now on (one owner at a time)."""

    def detach(self, owner: PeerManagerOwner) -> None:
        """Stop reporting to `owner`."""

    def send(self, peer: Address, msg: Message) -> Deferred[None]:
        """Write `msg` to `peer` (dialling if needed); fires once written."""

    def post(self, peer: Address, msg: Message) -> None:
        """`send` a message whose loss changes nothing (the sync on reconnection repairs what
        the peer missed), logging a failure (`perund.peer.manager.undelivered`) instead of
        returning a Deferred."""

    def request(self, peer: Address, msg: Message, timeout: float) -> Deferred[Message]:
        """Send `msg` and fire with the peer's answer to it, or fail after `timeout` s."""

    def ping(self, peer: Address, timeout: float) -> Deferred[None]:
        """Fire once `peer` answers a ping (connecting first if needed)."""

    def is_connected(self, peer: Address) -> bool:
        """Whether an authenticated connection to `peer` is in use right now."""

    def keep_connected(self, peer: Address, keep: bool) -> None:
        """Whether to keep (re)connecting to `peer` while nobody sends to it."""

    def disconnect(self, peer: Address) -> Deferred[None]:
        """Close the connections to `peer` (it may connect again)."""

    def refused(self, peer: Address) -> bool:
        """Count a refused message of `peer` (a peer over its limit is cut off); whether to
        log the refusal."""




class Funder(Protocol):
    """Puts our share of a new channel on-chain and reports when every share is there."""

    def fund(self, event: ev.Fund) -> Deferred[None]:
        """Deposit what `event` asks of us (skipping what is already held); fire once the
        contract holds every participant's share, fail with PeerNotFunded at the deadline."""


class Settler(Protocol):
    """Settles channels on-chain; each call fires with the conclusion the chain shows (with the
    payouts it reports, when they are known), or None when nothing is concluded yet (a
    registration: the dispute goes on)."""

    def conclude_final(self, event: ev.ConcludeFinal) -> Deferred[Concluded | None]:
        """Submit `concludeFinal` (or, when not primary, only if nobody else did soon)."""

    def register(self, event: ev.Register) -> Deferred[Concluded | Registered | None]:
        """Register the latest state (dispute or refutation)."""

    def conclude(self, event: ev.Conclude) -> Deferred[Concluded | None]:
        """Conclude the registered state once its challenge period is over."""

    def register_virtual(self, cmd: RegisterVirtual) -> Deferred[Concluded | Registered | None]:
        """Register a virtual channel's state through its parent ledger."""

    def conclude_parent(self, cmd: ConcludeParent) -> Deferred[Concluded | None]:
        """Conclude a parent ledger with its virtual channels once they are frozen."""
