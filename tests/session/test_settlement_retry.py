"""A settlement transaction that fails for a passing reason (the chain unreachable, a
transaction not mined in time, the account out of gas money) is sent again."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater

from perund.chain.results import Phase
from perund.channel import events as ev
from perund.channel.changes import Concluded
from perund.channel.types import ETH, ChannelID
from perund.errors import ChainNotReachable, InsufficientFunds, PerundError
from perund.session.client import Settler
from tests.session.conftest import Pair
from tests.session.test_two_clients import open_channel


class FailingAtFirst:
    """The real settlement, failing with `error` for the first `failures` calls (the chain
    link down, the account out of gas money until the operator tops it up)."""

    def __init__(self, real: Settler, failures: int, error: PerundError) -> None:
        self.real = real
        self.failures = failures
        self.error = error
        self.calls = 0

    def register(self, event: ev.Register) -> Deferred[Concluded | None]:
        if self.calls < self.failures:
            self.calls += 1
            return fail(self.error)
        self.calls += 1
        return self.real.register(event)

    def conclude_final(self, event: ev.ConcludeFinal) -> Deferred[Concluded | None]:
        return self.real.conclude_final(event)

    def conclude(self, event: ev.Conclude) -> Deferred[Concluded | None]:
        return self.real.conclude(event)


@pytest.mark.parametrize("error", [
    ChainNotReachable("connection refused", chainUrl="http://down"),
    InsufficientFunds("account 0x… cannot pay for the register transaction", txType="register"),
], ids=["unreachable", "out-of-funds"])
@pytest_twisted.ensureDeferred
async def test_a_register_is_sent_again_until_it_gets_through(pair: Pair,
                                                              error: PerundError) -> None:
    alice, chain = pair.alice, pair.chain
    cid = await open_channel(pair)
    await alice.client.send(cid, ((ETH, 1),))
    flaky = FailingAtFirst(alice.client.settler, failures=2, error=error)
    alice.client.settler = flaky
    alice.client.settle_retry_delay = 0.05
    alice.client.force_close(ChannelID(cid))
    for _ in range(200):
        if (await chain.channel_status(cid)).phase is Phase.DISPUTE:
            break
        await deferLater(reactor, 0.05)
    status = await chain.channel_status(cid)
    assert status.phase is Phase.DISPUTE and status.version == 1
    assert flaky.calls == 3
