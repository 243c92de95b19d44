"""A transaction that is never mined: TxTimedOut, and the backend keeps working."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.types import ETH
from perund.errors import ChainNotReachable, ChainRpcError, TxTimedOut
from perund.session.onchain import ChainSettlement

from .conftest import ANVIL_CHAIN_ID, ETHER, make_backend


@pytest_twisted.ensureDeferred
async def test_unmined_transaction_times_out_and_the_account_recovers(chain, new_channel) -> None:
    backend = chain.backend
    ch = new_channel()
    a = ch.accounts[0]
    backend.sender.tx_timeout = 0.3
    await backend.set_automine(False)
    with pytest.raises(TxTimedOut) as info:
        await backend.deposit(a, ch.id, 0, ETH, ETHER)
    assert info.value.code == 301
    assert info.value.data["txType"] == "deposit"
    assert info.value.data["timeout"] == 0.3
    stuck = info.value.data["txHash"]
    assert stuck.startswith("0x") and len(stuck) == 66

    # Once blocks come again the stuck deposit is mined; the next one takes the next nonce.
    await backend.set_automine(True)
    await backend.mine()
    backend.sender.tx_timeout = 20.0
    receipt = await backend.deposit(a, ch.id, 0, ETH, 2 * ETHER)
    assert await backend.holdings(ch.id) == (3 * ETHER, 0)
    assert "0x" + receipt.tx_hash.hex() != stuck


@pytest_twisted.ensureDeferred
async def test_reads_go_on_while_a_transaction_waits_for_its_block(chain, new_channel) -> None:
    backend = chain.backend
    ch = new_channel()
    a, b = ch.accounts
    await backend.set_automine(False)
    pending = backend.deposit(a, ch.id, 0, ETH, ETHER)
    while backend.sender.in_flight(a.address) is None:
        await deferLater(reactor, 0.01, lambda: None)
    # The pool (a single thread on the embedded chain) is free: the receipt is polled from the
    # reactor, not waited for in a thread.
    assert await backend.holdings(ch.id) == (0, 0)
    assert await backend.balance(b.address) > 0
    assert not pending.called
    await backend.mine()
    await backend.set_automine(True)
    receipt = await pending
    assert receipt.events_named("Deposited")
    assert await backend.holdings(ch.id) == (ETHER, 0)


async def _mine_later(backend: ChainBackend, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)
    await backend.mine()


@pytest_twisted.ensureDeferred
async def test_funding_waits_for_an_unmined_earlier_deposit_instead_of_depositing_again(
        chain, new_channel) -> None:
    """A deposit sent before a restart (here by a second connection, as the killed node's
    was) may still be mined after it: funding waits for it rather
    than reading the holdings at "latest" and depositing a second time (which either locks
    the amount twice, or reverts and tears down a funded channel)."""
    if chain.kind != "anvil":
        pytest.skip("eth-tester's pending nonce does not count the transactions in its pool")
    ch = new_channel()
    a, b = ch.accounts
    fund = ev.Fund(ch.id, ch.params, 0, (ETH,), ((2 * ETHER, ETHER),))
    backend = chain.backend
    await backend.set_automine(False)
    # The killed node's connection; its deposit stays in the pool.
    before = make_backend(chain.url, ANVIL_CHAIN_ID)
    await before.connect()
    assert backend.adjudicator is not None
    await before.validate_adjudicator(backend.adjudicator)
    unanswered = before.deposit(a, ch.id, 0, ETH, 2 * ETHER)
    unanswered.addErrback(lambda _: None)
    while before.sender.in_flight(a.address) is None:
        await deferLater(reactor, 0.01, lambda: None)
    before.stopService()
    again = ChainSettlement(reactor, backend, a, poll_interval=0.02, funding_timeout=10.0)
    mined = Deferred.fromCoroutine(_mine_later(backend, 0.3))
    funded = again.fund(fund)
    await mined
    await backend.set_automine(True)
    await backend.deposit(b, ch.id, 1, ETH, ETHER)
    await funded
    assert again.receipts == []  # no second deposit
    assert await backend.holdings(ch.id) == (2 * ETHER, ETHER)


@pytest_twisted.ensureDeferred
async def test_a_receipt_read_that_fails_is_tried_again_until_the_timeout(
        chain, new_channel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction is out: a failed receipt poll (the chain's endpoint resetting for a
    moment) says nothing of it. Giving up reported a deposit as failed while it was mined."""
    backend = chain.backend
    ch = new_channel()
    a = ch.accounts[0]
    client = backend.client
    real = client.receipt_blocking
    failures = [3]

    def flaky(tx_hash: bytes) -> object:
        if failures[0]:
            failures[0] -= 1
            if failures[0] % 2:  # a load-balanced node's passing error (the chain review)
                raise ChainRpcError("eth_getTransactionReceipt", -32000, "header not found")
            raise ChainNotReachable("the chain at http://127.0.0.1:1 is not reachable "
                                    "(eth_getTransactionReceipt: connection reset)")
        return real(tx_hash)

    monkeypatch.setattr(client, "receipt_blocking", flaky)
    receipt = await backend.deposit(a, ch.id, 0, ETH, ETHER)
    assert failures == [0] and receipt.events_named("Deposited")
    assert await backend.holdings(ch.id) == (ETHER, 0)
    # Unreachable until the timeout: TxTimedOut (its fate is unknown), saying why.
    failures[0] = 10**6
    backend.sender.tx_timeout = 0.2
    with pytest.raises(TxTimedOut, match="reading its receipt failed meanwhile"):
        await backend.deposit(a, ch.id, 0, ETH, ETHER)


@pytest_twisted.ensureDeferred
async def test_a_transaction_not_mined_in_time_is_sent_again_with_higher_fees(
        chain, new_channel) -> None:
    """Not mined within tx_timeout (a fee spike, a busy chain): the same transaction, same
    nonce, goes out again with higher fees, so that it and every later transaction of the
    account (a refutation among them) do not wait behind it. Only one of them is mined."""
    if chain.kind != "anvil":
        pytest.skip("eth-tester has no pool where one transaction replaces another")
    backend = chain.backend
    ch = new_channel()
    a = ch.accounts[0]
    backend.sender.tx_timeout = 0.3
    await backend.set_automine(False)
    depositing = backend.deposit(a, ch.id, 0, ETH, ETHER)
    while backend.sender.in_flight(a.address) is None:
        await deferLater(reactor, 0.01, lambda: None)
    first = backend.sender.in_flight(a.address)
    for _ in range(250):
        if backend.sender.in_flight(a.address) not in (None, first):
            break
        await deferLater(reactor, 0.02, lambda: None)
    replaced = backend.sender.in_flight(a.address)
    assert replaced not in (None, first), "no replacement was sent"
    await backend.mine()
    await backend.set_automine(True)
    backend.sender.tx_timeout = 20.0
    receipt = await depositing
    assert receipt.tx_hash == replaced and receipt.events_named("Deposited")
    assert await backend.holdings(ch.id) == (ETHER, 0)  # one deposit, not two
    original = await deferToThread(backend.client.receipt_blocking, first)
    assert original is None  # replaced: never mined
