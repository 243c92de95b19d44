"""The two-core run of `test_two_cores`, ended on-chain instead of cooperatively: after the
random payments, drops, timeouts and restarts, at any step, the peers stop talking, one side
closes without the other, and a model of the Adjudicator (register, refute, conclude,
concludeFinal, with its challenge period) settles the channel. Sometimes the chain reorganises
during the dispute (both cores get `Reorganised` and then the registration again).

The money invariant: the channel concludes with the newest state either side holds fully
signed, to the wei, and both sides end closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import precondition, rule

from perund.channel.changes import (
    ChallengeExpired,
    Change,
    Concluded,
    ForceClose,
    Funded,
    Registered,
    Reorganised,
    RespondUpdate,
)
from perund.channel.events import Conclude, ConcludeFinal, Register
from perund.channel.phases import Phase
from perund.channel.types import State
from tests.channel.test_two_cores import SIDES, TwoCores


@dataclass
class ModelAdjudicator:
    """The contract's rules for one channel (contracts/Adjudicator.sol), on a clock."""

    challenge_duration: int
    now: int = 1_000
    registered: State | None = None
    timeout: int = 0
    concluded: State | None = None

    def register(self, state: State) -> Registered | None:
        """The event a register call emits, or None if it reverts or changes nothing."""
        if self.concluded is not None:
            return None
        if self.registered is None:
            self.timeout = self.now + self.challenge_duration
        elif (state == self.registered  # registered already: no event
              or self.now >= self.timeout or state.version <= self.registered.version):
            return None
        self.registered = state
        return self.event()

    def event(self) -> Registered:
        assert self.registered is not None
        state = self.registered
        return Registered(state.version, self.timeout, state.is_final, state.balances)

    def conclude(self, state: State) -> Concluded | None:
        if self.concluded is not None or self.registered != state:
            return None
        if not state.is_final and self.now < self.timeout:
            return None
        self.concluded = state
        return Concluded(state.version)

    def conclude_final(self, state: State) -> Concluded | None:
        if self.concluded is not None or not state.is_final:
            return None
        self.concluded = state
        return Concluded(state.version)


class TwoCoresSettle(TwoCores):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Register | Conclude | ConcludeFinal] = []
        self.settled = False

    def feed(self, side: int, change: Change) -> None:
        if not self.settled:  # once settled, the random rules have nothing left to move
            super().feed(side, change)

    def on_chain(self, side: int, event: Register | Conclude | ConcludeFinal) -> None:
        self.calls.append(event)

    def mine(self, chain: ModelAdjudicator) -> None:
        """Send every transaction asked for; both watchers see what the chain emitted."""
        while self.calls:
            call = self.calls.pop(0)
            if isinstance(call, Register):
                emitted = chain.register(call.state)
            elif isinstance(call, ConcludeFinal):
                emitted = chain.conclude_final(call.state)
            else:
                emitted = chain.conclude(call.state)
            if emitted is not None:
                for side in (0, 1):
                    super().feed(side, emitted)

    # Once something was paid: settling an untouched channel teaches little.
    @precondition(lambda self: not self.settled and max(self.versions) >= 1)
    @rule(closer=SIDES, reorganise=st.booleans(), last=st.sampled_from((None, 0, 1)),
          accept=st.booleans())
    def settle(self, closer: int, reorganise: bool, last: int | None = None,
               accept: bool = False) -> None:
        """The peers stop talking wherever they are; one side closes without the other.

        `last`: that side gets one more message (and, with `accept`, its user approves what
        waits) before the link goes down, so its answer is lost: the two sides then often hold
        different newest states, which the dispute must sort out."""
        super().feed(1, Funded())
        if last is not None and self.inbox[last]:
            self.deliver_one(last)
        if last is not None and accept and self.questions[last]:
            update_id = self.questions[last].pop(0)
            super().feed(last, RespondUpdate(self.signers[last], update_id, True))
        self.inbox[0].clear()
        self.inbox[1].clear()
        held = [channel.current for channel in self.channels]
        newest = max((signed.state for signed in held if signed is not None),
                     key=lambda state: state.version)
        chain = ModelAdjudicator(self.channels[0].params.challenge_duration)
        super().feed(closer, ForceClose())  # refused if that side is settling already
        self.mine(chain)
        if reorganise and chain.registered is not None and chain.concluded is None:
            # The cores forget the dispute; the watchers see the registration again.
            for side in (0, 1):
                super().feed(side, Reorganised())
            self.mine(chain)
            for side in (0, 1):
                super().feed(side, chain.event())
            self.mine(chain)
        for _ in range(5):
            if chain.concluded is not None:
                break
            chain.now = chain.timeout + 1
            for side in (0, 1):
                super().feed(side, ChallengeExpired())
            self.mine(chain)
        assert chain.concluded == newest, (chain.concluded, newest)
        assert all(channel.phase is Phase.CLOSED for channel in self.channels)
        self.settled = True

    def teardown(self) -> None:
        if not self.settled:
            self.settle(0, True)


TwoCoresSettle.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_cores_settle = TwoCoresSettle.TestCase
