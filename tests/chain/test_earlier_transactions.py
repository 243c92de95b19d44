"""`await_earlier` when the account's earlier transactions are not mined in time: the
TxTimedOut a funding (an open's deposit) fails with counts them in words and says the timeout
in the node's units. On a Clock, with a chain client that reports the nonces only."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from perund.chain.sender import TransactionSender
from perund.errors import TxTimedOut

ADDRESS = b"\x12" * 20


class Nonces:
    """The two nonce reads `await_earlier` makes; `pending - mined` transactions wait."""

    def __init__(self, mined: int, pending: int) -> None:
        self.mined, self.pending = mined, pending

    def mined_nonce_blocking(self, address: bytes) -> int:
        return self.mined

    def pending_nonce_blocking(self, address: bytes) -> int:
        return self.pending


def run_now(f: Any, *args: Any) -> Deferred[Any]:
    return succeed(f(*args))


@pytest.mark.parametrize(("waiting", "said"), [
    (1, "1 earlier transaction of 0x1212121212121212121212121212121212121212 (nonce 5 on) was "
        "not mined within 2 min"),
    (3, "3 earlier transactions of 0x1212121212121212121212121212121212121212 (nonce 5 on) "
        "were not mined within 2 min"),
])
@pytest_twisted.ensureDeferred
async def test_earlier_transactions_not_mined_are_counted_in_words(waiting: int,
                                                                   said: str) -> None:
    clock = Clock()
    sender = TransactionSender(clock, run_now, Nonces(5, 5 + waiting), 1337,  # type: ignore[arg-type]
                               tx_timeout=120.0, poll_interval=1.0)
    waited = Deferred.fromCoroutine(sender.await_earlier(ADDRESS))
    clock.pump([1.0] * 121)
    with pytest.raises(TxTimedOut) as raised:
        await waited
    assert raised.value.message == said
    assert raised.value.data["timeout"] == 120.0  # the seconds, for programs
