"""Nonces after our transactions vanish: a reorganisation that drops a mined transaction of
ours, or a node that drops one from its pool, must not hold up the account's next one.

On a fresh anvil each (`anvil_reorg` replaces the newest blocks with empty ones and drops their
transactions for good), with a `tx_timeout` far above the bounds asserted: the old sender kept
its next nonce past the gap and waited out three timeouts before it asked the chain again.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from perund.chain.account import Account, Eip1559Transaction
from perund.chain.anvil import Anvil, rpc_call
from perund.chain.backend import ChainBackend
from perund.chain.sender import chosen_nonce, gap_filler, gap_repair
from perund.chain.transactions import PreparedTx, RawReceipt
from perund.channel import events as ev
from perund.channel.encoding import Signer, channel_id, keccak
from perund.channel.types import ETH, Params
from perund.session.onchain import ChainSettlement

from .conftest import ETHER, make_backend

TX_TIMEOUT = 30.0
PROMPT = 10.0
"""What "promptly" means here: a third of `tx_timeout` (the old code took three of them)."""


@pytest.fixture
def fresh_anvil() -> Iterator[Anvil]:
    # Its own chain: a reorganisation must not take other tests' blocks with it.
    with Anvil() as node:
        yield node


@pytest_twisted.async_yield_fixture
async def backend(fresh_anvil: Anvil) -> AsyncIterator[ChainBackend]:
    chain = make_backend(fresh_anvil.url, fresh_anvil.chain_id, tx_timeout=TX_TIMEOUT)
    try:
        await chain.connect()
        yield chain
    finally:
        chain.stopService()


def _rpc(node: Anvil, method: str, *params: Any) -> Any:
    return rpc_call(node.url, method, list(params))


def _nonce(node: Anvil, account: Account, block: str = "latest") -> int:
    return int(_rpc(node, "eth_getTransactionCount", account.checksum_address, block), 16)


def _reorg_out(node: Anvil, block: int) -> None:
    """Replace blocks `block`.. with empty ones: their transactions are gone for good."""
    depth = int(_rpc(node, "eth_blockNumber"), 16) - block + 1
    _rpc(node, "anvil_reorg", depth, [])


def _mined_block(node: Anvil, tx_hash: bytes) -> int:
    """The block anvil mined `tx_hash` in (it mines a moment after it takes a transaction)."""
    deadline = time.monotonic() + 5
    while (receipt := _rpc(node, "eth_getTransactionReceipt", "0x" + tx_hash.hex())) is None:
        assert time.monotonic() < deadline, "anvil did not mine the transaction"
        time.sleep(0.01)
    return int(receipt["blockNumber"], 16)


async def _receipt(backend: ChainBackend, tx_hash: bytes) -> RawReceipt | None:
    return await deferToThread(backend.client.receipt_blocking, tx_hash)


async def _promptly(backend: ChainBackend, account: Account, to: Account, amount: int) -> float:
    """Send `amount` from `account` to `to`; the seconds until it was mined (a failure after
    PROMPT seconds)."""
    started = time.monotonic()
    sending = backend.send_ether(account, to.address, amount)
    sending.addTimeout(PROMPT, reactor)
    await sending
    return time.monotonic() - started


@pytest_twisted.ensureDeferred
async def test_the_next_transaction_after_a_reorganisation_dropped_ours_is_not_held_up(
        backend: ChainBackend, fresh_anvil: Anvil) -> None:
    a, b, c = (Account(key) for key in fresh_anvil.private_keys[1:4])
    await backend.send_ether(a, a.address, 0)  # the chain's first block, so one can be replaced
    first = await backend.send_ether(a, b.address, 1)
    _reorg_out(fresh_anvil, first.block_number)
    assert await _receipt(backend, first.tx_hash) is None
    assert _nonce(fresh_anvil, a, "pending") == 1  # the nonce our sender used last is free

    before = int(_rpc(fresh_anvil, "eth_getBalance", c.checksum_address, "latest"), 16)
    took = await _promptly(backend, a, c, 7)
    assert took < PROMPT
    assert int(_rpc(fresh_anvil, "eth_getBalance", c.checksum_address, "latest"), 16) == before + 7
    # Nonce 1 reused, nothing sent to fill it: the vanished one was seen before signing.
    assert _nonce(fresh_anvil, a) == 2


@pytest_twisted.ensureDeferred
async def test_a_gap_opened_after_the_nonce_was_chosen_is_filled_and_nothing_runs_twice(
        backend: ChainBackend, fresh_anvil: Anvil, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reorganisation comes between the nonce read and the send: the transaction waits
    queued behind the gap. It is not signed again at the lower nonce (both copies would be
    mined): a transfer of nothing fills the gap, and it is mined as it was sent."""
    a, b, c = (Account(key) for key in fresh_anvil.private_keys[1:4])
    await backend.send_ether(a, a.address, 0)
    first = await backend.send_ether(a, b.address, 1)
    client = backend.client
    send = client.send_raw_blocking
    sent: list[bytes] = []
    reorgs = [1]

    def reorg_then_send(tx_type: str, raw: bytes) -> bytes:
        if reorgs:
            reorgs.pop()
            _reorg_out(fresh_anvil, first.block_number)
        tx_hash = send(tx_type, raw)
        sent.append(tx_hash)
        return tx_hash

    monkeypatch.setattr(client, "send_raw_blocking", reorg_then_send)
    before = int(_rpc(fresh_anvil, "eth_getBalance", c.checksum_address, "latest"), 16)
    took = await _promptly(backend, a, c, 7)
    assert took < PROMPT
    assert await _receipt(backend, first.tx_hash) is None  # the vanished one stays gone
    assert int(_rpc(fresh_anvil, "eth_getBalance", c.checksum_address, "latest"), 16) == before + 7
    assert _nonce(fresh_anvil, a) == 3  # nonce 1 the filler's, 2 the transfer's, as signed
    filler = _rpc(fresh_anvil, "eth_getTransactionByHash",
                  "0x" + sent[1].hex())
    assert int(filler["nonce"], 16) == 1 and int(filler["value"], 16) == 0
    assert filler["to"].lower() == a.checksum_address.lower()
    # And the next one is sent with the right nonce, without any gap to fill.
    del sent[:]
    await _promptly(backend, a, c, 1)
    assert len(sent) == 1 and _nonce(fresh_anvil, a) == 4


@pytest_twisted.ensureDeferred
async def test_a_transaction_that_vanished_with_the_gap_before_it_is_sent_again(
        backend: ChainBackend, fresh_anvil: Anvil, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind the gap and gone from the pool too: the gap is filled and the transaction sent
    again as it was signed."""
    a, b, c = (Account(key) for key in fresh_anvil.private_keys[1:4])
    await backend.send_ether(a, a.address, 0)
    first = await backend.send_ether(a, b.address, 1)
    client = backend.client
    send = client.send_raw_blocking
    dropped: list[bytes] = []

    def reorg_send_drop(tx_type: str, raw: bytes) -> bytes:
        tx_hash = send(tx_type, raw)
        if not dropped:
            # anvil mines a little after it takes a transaction: the reorganisation must
            # drop both blocks, or it drops this one alone (no gap: the case of the test
            # below).
            _mined_block(fresh_anvil, tx_hash)
            _reorg_out(fresh_anvil, first.block_number)
            _rpc(fresh_anvil, "anvil_dropTransaction", "0x" + tx_hash.hex())
            dropped.append(tx_hash)
        return tx_hash

    monkeypatch.setattr(client, "send_raw_blocking", reorg_send_drop)
    sending = backend.send_ether(a, c.address, 7)
    sending.addTimeout(PROMPT, reactor)
    receipt = await sending
    assert receipt.tx_hash == dropped[0]  # the same signed transaction, once
    assert _nonce(fresh_anvil, a) == 3


@pytest_twisted.ensureDeferred
async def test_our_transaction_mined_and_dropped_before_its_receipt_was_read_is_sent_again(
        backend: ChainBackend, fresh_anvil: Anvil, monkeypatch: pytest.MonkeyPatch) -> None:
    """No gap before it: the block our transaction was mined in is replaced before the sender
    reads its receipt. The chain's nonce is back at its nonce and the chain no longer knows it:
    it is sent again as it was signed, within seconds (the replacement with higher fees came
    only after tx_timeout, too late for a refutation)."""
    a, c = Account(fresh_anvil.private_keys[1]), Account(fresh_anvil.private_keys[3])
    await backend.send_ether(a, a.address, 0)  # a block before ours, which stays
    client = backend.client
    send = client.send_raw_blocking
    sent: list[bytes] = []

    def send_then_reorganise(tx_type: str, raw: bytes) -> bytes:
        tx_hash = send(tx_type, raw)
        sent.append(raw)
        if len(sent) == 1:
            _reorg_out(fresh_anvil, _mined_block(fresh_anvil, tx_hash))
            assert _nonce(fresh_anvil, a, "pending") == 1  # no gap: its own nonce is free
        return tx_hash

    monkeypatch.setattr(client, "send_raw_blocking", send_then_reorganise)
    before = int(_rpc(fresh_anvil, "eth_getBalance", c.checksum_address, "latest"), 16)
    sending = backend.send_ether(a, c.address, 7)
    sending.addTimeout(PROMPT, reactor)
    receipt = await sending
    # The same signed bytes went out again (never a new signature at that nonce) and were
    # mined once: not a replacement, whose fees, and so hash, differ.
    assert len(sent) >= 2 and set(sent) == {sent[0]}
    assert receipt.tx_hash == keccak(sent[0])
    assert int(_rpc(fresh_anvil, "eth_getBalance", c.checksum_address, "latest"), 16) == before + 7
    assert _nonce(fresh_anvil, a) == 2


@pytest_twisted.ensureDeferred
async def test_a_sessions_fees_count_the_gap_filler_its_deposit_needed(
        backend: ChainBackend, fresh_anvil: Anvil, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reorganisation drops a transfer of alice's between the deposit's nonce choice and its
    send: a filler takes the vanished nonce. The session's fees are what alice's balance lost
    beside her deposit, to the wei: the filler's gas included."""
    keys = fresh_anvil.private_keys
    alice, bob, c = Account(keys[1]), Account(keys[2]), Account(keys[3])
    await backend.deploy_adjudicator(Account(keys[0]))
    assert backend.chain_id is not None and backend.adjudicator is not None
    params = Params(60, int.from_bytes(os.urandom(32), "big"),
                    (Signer(os.urandom(32)).address, Signer(os.urandom(32)).address),
                    (alice.address, bob.address))
    cid = channel_id(backend.chain_id, backend.adjudicator, params)
    balances = ((2 * ETHER, ETHER),)
    await backend.deposit(bob, cid, 1, ETH, ETHER)  # bob's share is there: the funding ends
    start = int(_rpc(fresh_anvil, "eth_blockNumber"), 16)
    before = int(_rpc(fresh_anvil, "eth_getBalance", alice.checksum_address, hex(start)), 16)
    vanishing = await backend.send_ether(alice, c.address, 1)
    client = backend.client
    send = client.send_raw_blocking
    reorgs = [1]

    def reorg_then_send(tx_type: str, raw: bytes) -> bytes:
        if reorgs:
            reorgs.pop()
            _reorg_out(fresh_anvil, vanishing.block_number)
        return send(tx_type, raw)

    monkeypatch.setattr(client, "send_raw_blocking", reorg_then_send)
    ours = ChainSettlement(reactor, backend, alice, poll_interval=0.05, funding_timeout=10.0)
    funding = ours.fund(ev.Fund(cid, params, 0, (ETH,), balances))
    funding.addTimeout(PROMPT, reactor)
    await funding
    assert _nonce(fresh_anvil, alice) == 2  # the filler's nonce 0, the deposit's 1
    assert await backend.holdings(cid, ETH) == (2 * ETHER, ETHER)
    after = int(_rpc(fresh_anvil, "eth_getBalance", alice.checksum_address, "latest"), 16)
    assert before - after == 2 * ETHER + ours.fees_paid
    (deposit,) = ours.receipts
    assert [(f.tx_type, f.gas_used) for f in deposit.fillers] == [("gapFiller", 21_000)]
    assert ours.fees_paid == deposit.fee + deposit.fillers[0].fee > deposit.fee


def test_the_chains_nonce_is_taken_unless_it_comes_from_a_node_behind_our_receipts() -> None:
    # No nonce of ours yet, or the chain counts more (another sender with the same key).
    assert chosen_nonce(None, 4, head=10, mined_block=0) == 4
    assert chosen_nonce(3, 4, head=10, mined_block=9) == 4
    assert chosen_nonce(4, 4, head=10, mined_block=9) == 4
    # The chain counts fewer: transactions of ours vanished; it is behind only when its head is
    # below our latest receipt's block (a load balancer's lagging node): ours stands then.
    assert chosen_nonce(6, 4, head=10, mined_block=9) == 4
    assert chosen_nonce(6, 4, head=9, mined_block=9) == 4
    assert chosen_nonce(6, 4, head=8, mined_block=9) == 6


def test_a_gap_is_filled_and_a_dropped_transaction_sent_again() -> None:
    # Mined (its receipt to come) or its nonce taken otherwise: nothing to do.
    assert gap_repair(8, 7, known=True) == (range(0), False)
    assert gap_repair(8, 7, known=False) == (range(0), False)
    # In the pool (or a chain whose pending nonce ignores its pool): nothing to do. Unknown
    # with its nonce free (mined, then dropped by a reorganisation): sent again at once.
    assert gap_repair(7, 7, known=True) == (range(0), False)
    assert gap_repair(7, 7, known=False) == (range(0), True)
    # Queued behind a gap of nonces 4 to 6: those are filled; it is sent again only if gone.
    assert gap_repair(4, 7, known=True) == (range(4, 7), False)
    assert gap_repair(4, 7, known=False) == (range(4, 7), True)


def test_a_gap_filler_moves_nothing_and_pays_the_fees_of_the_transaction_it_lets_through(
) -> None:
    account = Account(bytes(31) + b"\x07")
    waiting = Eip1559Transaction(chain_id=5, nonce=9, max_priority_fee_per_gas=3,
                                 max_fee_per_gas=50, gas=90_000, to=bytes(20), value=10**18,
                                 data=b"\x01\x02")
    raw, tx_hash = account.sign_transaction(waiting)
    filler = gap_filler(account, PreparedTx(raw, tx_hash, 9, 90_000, waiting), 7)
    signed = filler.transaction
    assert signed is not None and filler.nonce == signed.nonce == 7
    assert (signed.to, signed.value, signed.data, signed.gas) == (account.address, 0, b"", 21_000)
    assert (signed.chain_id, signed.max_priority_fee_per_gas, signed.max_fee_per_gas) == (5, 3, 50)
    assert keccak(filler.raw) == filler.tx_hash != tx_hash
