"""Two cores against each other, driven by hypothesis: random payments, payment requests, user
answers, lost messages, timeouts, reconnections, closes and crashes, over two FIFO links.

A crash restarts a side from what its store may hold: the value of its last `Persist` with
`wait` or of any `Persist` without `wait` after it (those are written in later commits, which a
crash may or may not have let through); its messages already sent may or may not reach the
peer (a killed process's socket delivers what it was given).

Invariants after every step: balances are conserved per asset, each side's version only
increases while it runs, no side ever signs two different states of one version (across
crashes), nothing but a fully signed state becomes current, a `Persist` always carries the
channel the transition returns, honest peers never see a conflict or a bad signature. And the
durability rule (docs/protocol.md, "Durability by interest"): a countersignature leaves only
with its state durable at the responder; a user hears of a state that benefits its side only
once its side holds it durably, and of its own payment only once the payee does; nobody
proposes or countersigns on a state older than the newest fully signed one. At the end, after
every question is answered and both sides reconnected and synced, both hold the same state, at
or above every state either user was told of.
"""

from __future__ import annotations

from collections import deque

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from perund.channel.changes import (
    Change,
    Funded,
    OwnUpdate,
    RespondUpdate,
    Restored,
    StartSync,
    UpdateAcceptReceived,
    UpdateTimedOut,
    UserTimedOut,
)
from perund.channel.encoding import Signer, signing_digest
from perund.channel.events import (
    Conclude,
    ConcludeFinal,
    Conflict,
    Event,
    NewState,
    Persist,
    Reason,
    Refused,
    Register,
    SendSync,
    SendUpdate,
    SendUpdateAccept,
    SendUpdateReject,
    Source,
    UpdateNeedsUser,
    UpdateWithdrawn,
)
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.rules import fully_signed, raises_balance
from perund.channel.types import ETH, State
from perund.errors import ClientError
from tests.channel.factories import ALICE, BOB, TOKEN, as_input, make_pair, make_request

SIDES = st.sampled_from((0, 1))
MESSAGES = (SendUpdate, SendUpdateAccept, SendUpdateReject, SendSync)
ON_CHAIN = (Register, Conclude, ConcludeFinal)


class TwoCores(RuleBasedStateMachine):
    """Alice (0) and Bob (1) on one channel with ETH and a token."""

    def __init__(self) -> None:
        super().__init__()
        alice, bob = make_pair(
            make_request(assets=(ETH, TOKEN), balances=((50, 50), (30, 0))),
            confirm_updates=(False, True),
            funded=False,
        )
        # Alice's watcher saw the deposits complete; Bob's sees it when `funded` runs.
        alice, _ = transition(alice, Funded())
        self.channels: list[Channel] = [alice, bob]
        self.persisted: list[Channel] = [alice, bob]
        # What a crash may leave in each side's store: the last waited-for value, then the
        # values written after it without waiting (any of them, the later ones on top).
        self.durable: list[Channel] = [alice, bob]
        self.unsynced: list[list[Channel]] = [[], []]
        # The newest fully signed version that exists anywhere, and the newest each user heard.
        self.newest = 0
        self.told = [0, 0]
        self.signers: list[Signer] = [ALICE, BOB]
        self.inbox: list[deque[Event]] = [deque(), deque()]
        self.questions: list[list[bytes]] = [[], []]
        assert alice.current is not None
        self.totals = alice.current.state.totals()
        self.versions = [0, 0]
        # Every state each side ever signed and sent, by version: never two of one version.
        self.signed: list[dict[int, State]] = [{}, {}]

    # --- plumbing ------------------------------------------------------------------------------

    def feed(self, side: int, change: Change) -> None:
        old = self.channels[side]
        try:
            new, events = transition(old, change)
        except ClientError:
            return  # a user request the core refused: nothing changed by construction
        for event in events:
            if isinstance(event, Persist):
                assert event.channel is new
                self.persisted[side] = new
                if event.wait:
                    self.durable[side], self.unsynced[side] = new, []
                else:
                    self.unsynced[side].append(new)
            elif isinstance(event, MESSAGES):
                self.inbox[1 - side].append(event)
                if isinstance(event, SendUpdate):
                    self.signed_once(side, event.state)
                    self.covered(side, event.state.version)
                    # F3: proposed on the newest fully signed state.
                    assert old.current is not None and old.current.state.version == self.newest
                elif isinstance(event, SendUpdateAccept):
                    assert new.current is not None
                    self.signed_once(side, new.current.state)
                    self.covered(side, event.version)
                    if event.version > 0:
                        # F1: the responder holds what it countersigns; F3: on the newest.
                        assert self.version_of(self.durable[side]) >= event.version
                        assert old.current is not None
                        assert old.current.state.version == self.newest
            elif isinstance(event, UpdateNeedsUser):
                self.questions[side].append(event.update_id)
            elif isinstance(event, UpdateWithdrawn):
                # After a restart the question may be one the user never saw.
                if event.update_id in self.questions[side]:
                    self.questions[side].remove(event.update_id)
            elif isinstance(event, NewState):
                assert new.current is not None and event.state == new.current.state
                self.heard(side, old, event, isinstance(change, UpdateAcceptReceived))
            elif isinstance(event, ON_CHAIN):
                self.on_chain(side, event)
            assert not isinstance(event, Conflict), event
            if isinstance(event, Refused):
                assert event.reason not in (Reason.SIGNATURE, Reason.NOT_PEER, Reason.TOTALS)
        if new.current is not old.current:
            assert new.current is not None
            state = new.current.state
            assert state.version > self.versions[side]
            self.versions[side] = state.version
            self.newest = max(self.newest, state.version)
            assert fully_signed(signing_digest(state), new.current.signatures, new.params)
        self.channels[side] = new

    @staticmethod
    def version_of(channel: Channel) -> int:
        return -1 if channel.current is None else channel.current.state.version

    def covered(self, side: int, version: int) -> None:
        """A signature of ours on `version` leaves only under a durable reservation."""
        assert self.durable[side].reserved >= version or version == 0

    def heard(self, side: int, old: Channel, event: NewState, countersigned: bool) -> None:
        """What a user hears of is durable where it matters (docs/protocol.md, F1 and F2).
        `countersigned`: our own update, completed by the peer's UpdateAccept (on time or
        late); otherwise we countersigned it or adopted it from a sync."""
        state = event.state
        assert old.current is not None
        benefits = state.is_final or raises_balance(old.current.state, state, side)
        if benefits or not countersigned:
            assert self.version_of(self.durable[side]) >= state.version
        if countersigned or event.source is Source.OWN:
            # The peer countersigned it, so it holds it (F1).
            assert self.version_of(self.durable[1 - side]) >= state.version
        self.told[side] = max(self.told[side], state.version)

    def on_chain(self, side: int, event: Register | Conclude | ConcludeFinal) -> None:
        """A transaction the core asks for; the cooperative run leaves them unsent."""

    def signed_once(self, side: int, state: State) -> None:
        version = state.version
        assert self.signed[side].setdefault(version, state) == state, "two states of one version"

    def deliver_one(self, side: int) -> None:
        message = self.inbox[side].popleft()
        self.feed(side, as_input(message, self.signers[1 - side], self.signers[side]))

    def drain(self) -> None:
        for _ in range(200):
            if not (self.inbox[0] or self.inbox[1]):
                return
            for side in (0, 1):
                if self.inbox[side]:
                    self.deliver_one(side)
        raise AssertionError("messages never stop")

    # --- rules ---------------------------------------------------------------------------------

    @rule(
        side=SIDES,
        asset=st.sampled_from((ETH, TOKEN)),
        amount=st.integers(-9, 9) | st.integers(-60, 60),
    )
    def pay(self, side: int, asset: bytes, amount: int) -> None:
        """A payment (positive) or a payment request (negative), possibly too large."""
        self.feed(side, OwnUpdate(self.signers[side], ((asset, amount),)))  # type: ignore[arg-type]

    @rule()
    def funded(self) -> None:
        self.feed(1, Funded())

    @rule(side=SIDES, dice=st.integers(0, 19))
    def close(self, side: int, dice: int) -> None:
        """A final update, now and then (it ends the channel's off-chain life)."""
        if dice == 0:
            self.feed(side, OwnUpdate(self.signers[side], (), True))

    @precondition(lambda self: self.inbox[0] or self.inbox[1])
    @rule(side=SIDES, count=st.integers(1, 4))
    def deliver(self, side: int, count: int) -> None:
        for _ in range(count):
            if not self.inbox[side]:
                side = 1 - side
                if not self.inbox[side]:
                    return
            self.deliver_one(side)

    @rule(side=SIDES, accept=st.booleans(), expire=st.booleans())
    def answer(self, side: int, accept: bool, expire: bool) -> None:
        if not self.questions[side]:
            return
        update_id = self.questions[side].pop(0)
        if expire:
            self.feed(side, UserTimedOut(update_id))
        else:
            self.feed(side, RespondUpdate(self.signers[side], update_id, accept))

    @rule(side=SIDES, dice=st.integers(0, 3))
    def time_out(self, side: int, dice: int = 0) -> None:
        """Our request timer fires, whether or not the answer is already on its way."""
        if dice != 0:
            return
        staged = self.channels[side].staged
        if staged is not None:
            self.feed(side, UpdateTimedOut(staged.state.version))

    @rule(dice=st.integers(0, 3), timers_first=st.booleans())
    def reconnect(self, dice: int = 0, timers_first: bool = True) -> None:
        """The connection drops (in-flight messages lost, requests fail) and comes back. The
        shell may see the failed requests before or after the new connection is up."""
        if dice != 0:
            return
        self.inbox[0].clear()
        self.inbox[1].clear()
        if timers_first:
            self.time_out(0)
            self.time_out(1)
        self.feed(0, StartSync())
        self.feed(1, StartSync())
        self.time_out(0)
        self.time_out(1)

    @rule(side=SIDES, dice=st.integers(0, 3), kept=st.sampled_from((0, 0, 1, 3)),
          delivered=st.booleans())
    def restart(self, side: int, dice: int, kept: int, delivered: bool) -> None:
        """One node is killed and restarts from what its store holds: its last waited-for
        write, and `kept` of the writes after it (a commit nobody waited for may or may not
        have reached the disk). `delivered`: what it sent before it died reaches the peer
        (the peer's answers are lost with the old connection)."""
        if dice != 0:
            return
        self.inbox[side].clear()
        if delivered:
            while self.inbox[1 - side]:
                self.deliver_one(1 - side)
                self.inbox[side].clear()
        self.inbox[1 - side].clear()
        self.questions[side].clear()
        written = [self.durable[side], *self.unsynced[side]]
        restored = written[min(kept, len(written) - 1)]
        self.durable[side], self.unsynced[side] = restored, []
        self.persisted[side] = restored
        self.channels[side] = restored
        self.versions[side] = self.version_of(restored)
        self.feed(side, Restored())
        self.time_out(1 - side)
        self.feed(0, StartSync())
        self.feed(1, StartSync())

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def conserved_and_consistent(self) -> None:
        for channel in self.channels:
            assert channel.current is not None
            assert channel.current.state.totals() == self.totals
            staged = channel.staged
            if staged is not None:
                assert staged.state.totals() == self.totals
                assert staged.state.version > channel.current.state.version
                assert channel.phase in (Phase.UPDATING, Phase.FUNDING)
            elif channel.phase is Phase.UPDATING:
                raise AssertionError("updating without an update in flight")

    def teardown(self) -> None:
        self.funded()
        # Let everything in flight arrive, answer every question, then reconnect and sync.
        for _ in range(5):
            self.drain()
            for side in (0, 1):
                while self.questions[side]:
                    self.feed(side, UserTimedOut(self.questions[side].pop(0)))
        self.drain()
        self.reconnect()
        self.drain()
        alice, bob = self.channels
        assert alice.current == bob.current
        assert not alice.needs_sync and not bob.needs_sync
        # Nothing either user heard of was lost.
        assert alice.current is not None
        assert alice.current.state.version >= max(self.told)


TwoCores.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_cores = TwoCores.TestCase
