"""Deposits, the cooperative close, the dispute path, reverts and nonces, on both chains."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool

from perund.chain.account import Account
from perund.chain.results import Phase
from perund.channel.encoding import Signer, state_hash
from perund.channel.encoding import channel_id as offchain_channel_id
from perund.channel.phases import Phase as ChannelPhase
from perund.channel.records import Channel as ChannelRecord
from perund.channel.records import SignedState
from perund.channel.types import ETH, Address
from perund.errors import InsufficientFunds, InvalidArgument, InvalidContracts, TxReverted
from perund.session.chain_check import shortfalls

from .conftest import ETHER


async def _balances(backend, *addresses):
    return [await backend.balance(a) for a in addresses]


@pytest_twisted.ensureDeferred
async def test_contract_agrees_with_offchain_channel_id_and_state_hash(chain, new_channel) -> None:
    ch = new_channel()
    backend = chain.backend
    assert await backend.contract_channel_id(ch.params) == ch.id
    assert ch.id == offchain_channel_id(backend.chain_id, backend.adjudicator, ch.params)
    state = ch.state(7, (3, 2**200), is_final=True)
    assert await backend.contract_state_hash(state) == state_hash(state)


@pytest_twisted.ensureDeferred
async def test_deposits_and_holdings(chain, new_channel) -> None:
    ch = new_channel()
    backend = chain.backend
    a, b = ch.accounts
    before = await _balances(backend, a.address, b.address)
    assert await backend.holdings(ch.id) == (0, 0)
    first = await backend.deposit(a, ch.id, 0, ETH, 3 * ETHER)
    second = await backend.deposit(b, ch.id, 1, ETH, 2 * ETHER)
    assert await backend.holdings(ch.id, ETH) == (3 * ETHER, 2 * ETHER)
    after = await _balances(backend, a.address, b.address)
    assert after[0] == before[0] - 3 * ETHER - first.fee
    assert after[1] == before[1] - 2 * ETHER - second.fee

    (event,) = first.events
    assert event.name == "Deposited" and event.channel_id == ch.id
    assert event.args["participantIndex"] == 0
    assert event.args["asset"] == ETH
    assert event.args["amount"] == 3 * ETHER
    assert event.tx_hash == first.tx_hash and event.block_number == first.block_number
    assert second.events_named("Deposited")[0].args["holding"] == 2 * ETHER
    assert first.gas_used > 21_000 and first.effective_gas_price > 0


@pytest_twisted.ensureDeferred
async def test_holdings_as_of_a_past_block(chain, new_channel) -> None:
    ch = new_channel()
    backend = chain.backend
    first = await backend.deposit(ch.accounts[0], ch.id, 0, ETH, ETHER)
    second = await backend.deposit(ch.accounts[1], ch.id, 1, ETH, 2 * ETHER)
    assert await backend.holdings(ch.id, ETH, first.block_number - 1) == (0, 0)
    assert await backend.holdings(ch.id, ETH, first.block_number) == (ETHER, 0)
    assert await backend.holdings(ch.id, ETH, second.block_number) == (ETHER, 2 * ETHER)
    # Before the Adjudicator existed nothing was held (the call finds no code there).
    assert await backend.holdings(ch.id, ETH, 0) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_channel_funds_reads_many_channels_at_once(chain, new_channel) -> None:
    backend = chain.backend
    channels = [new_channel() for _ in range(3)]
    await backend.deposit(channels[0].accounts[0], channels[0].id, 0, ETH, 3 * ETHER)
    await backend.deposit(channels[0].accounts[1], channels[0].id, 1, ETH, 2 * ETHER)
    await backend.deposit(channels[2].accounts[1], channels[2].id, 1, ETH, 7)
    token = Address(b"\x77" * 20)  # an asset nobody deposited: nothing held
    funds = await backend.channel_funds([(channels[0].id, (ETH,)), (channels[1].id, (ETH,)),
                                         (channels[2].id, (ETH, token))])
    assert [held for _, held in funds] == [(5 * ETHER,), (0,), (7, 0)]
    assert all(status.phase is Phase.NONE and status.version == 0 for status, _ in funds)
    # The same as one call each, and more channels than one batch holds.
    many = [(channels[i % 3].id, (ETH,)) for i in range(260)]  # 520 calls: two batches
    batched = await backend.channel_funds(many)
    assert [held for _, held in batched] == [funds[i % 3][1][:1] for i in range(260)]
    assert await backend.channel_funds([]) == []
    # The holdings alone (the start-up check): the same totals, in the same order.
    assert await backend.channel_holdings([(channels[0].id, (ETH,)), (channels[1].id, (ETH,)),
                                           (channels[2].id, (ETH, token))]) \
        == [(5 * ETHER,), (0,), (7, 0)]
    assert await backend.channel_holdings(many) == [held for _, held in batched]
    # A node that takes no batches is asked one call at a time, with the same answers.
    takes_batches = backend.client.transport.batch
    backend.client.transport.batch = lambda calls: None  # type: ignore[method-assign]
    try:
        assert await backend.channel_funds(many[:5]) == batched[:5]
    finally:
        backend.client.transport.batch = takes_batches  # type: ignore[method-assign]
    assert await backend.channel_holdings([]) == []


@pytest_twisted.ensureDeferred
async def test_batched_reads_of_an_account_without_code_are_invalid_contracts(chain) -> None:
    no_code = chain.account(5).address
    with pytest.raises(InvalidContracts) as raised:
        await deferToThreadPool(reactor, chain.backend.pool, chain.backend.client.calls_blocking,
                                no_code, [("holdings", (b"\x00" * 32, ETH))])
    assert raised.value.data["error"] == "no code"


@pytest_twisted.ensureDeferred
async def test_a_call_to_an_account_without_code_is_invalid_contracts(chain) -> None:
    no_code = chain.account(5).address
    with pytest.raises(InvalidContracts) as raised:
        await deferToThreadPool(reactor, chain.backend.pool, chain.backend.client.call_blocking,
                                no_code, "holdings", b"\x00" * 32, ETH)
    assert raised.value.data["error"] == "no code"
    assert "answers holdings" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_conclude_final_pays_both_to_the_wei(chain, new_channel) -> None:
    ch = new_channel()
    backend = chain.backend
    a, b = ch.accounts
    start = await _balances(backend, a.address, b.address)
    dep_a = await backend.deposit(a, ch.id, 0, ETH, 3 * ETHER)
    dep_b = await backend.deposit(b, ch.id, 1, ETH, 2 * ETHER)
    final = ch.state(5, (ETHER + 1, 4 * ETHER - 1), is_final=True)
    close = await backend.conclude_final(a, ch.params, final, ch.sign(final))

    end = await _balances(backend, a.address, b.address)
    assert end[0] == start[0] - 3 * ETHER - dep_a.fee + (ETHER + 1) - close.fee
    assert end[1] == start[1] - 2 * ETHER - dep_b.fee + (4 * ETHER - 1)
    assert await backend.holdings(ch.id) == (0, 0)
    status = await backend.channel_status(ch.id)
    assert status.phase is Phase.CONCLUDED
    assert [e.name for e in close.events].count("PaidOut") == 2
    paid = {e.args["receiver"]: e.args["amount"] for e in close.events_named("PaidOut")}
    assert paid == {a.address: ETHER + 1, b.address: 4 * ETHER - 1}
    assert all(e.args["pushed"] for e in close.events_named("PaidOut"))
    assert close.events_named("Concluded")[0].args["version"] == 5
    assert await backend.owed(a.address) == 0


@pytest_twisted.ensureDeferred
async def test_register_then_conclude_after_the_timeout(chain, new_channel) -> None:
    ch = new_channel(duration=3600)
    backend = chain.backend
    a, b = ch.accounts
    await backend.deposit(a, ch.id, 0, ETH, 5 * ETHER)
    await backend.deposit(b, ch.id, 1, ETH, 5 * ETHER)
    start = await _balances(backend, a.address, b.address)

    v1 = ch.state(1, (6 * ETHER, 4 * ETHER))
    registered = await backend.register(b, ch.params, v1, ch.sign(v1))
    (event,) = registered.events_named("Registered")
    assert event.args["version"] == 1 and event.args["balances"] == ((6 * ETHER, 4 * ETHER),)
    status = await backend.channel_status(ch.id)
    assert status.phase is Phase.DISPUTE and status.version == 1
    assert status.timeout == event.args["timeout"] >= await backend.chain_time() + 3600 - 1
    assert status.state_hash == state_hash(v1)

    # A refutation with a newer state while the challenge runs; the timeout stays.
    v2 = ch.state(2, (7 * ETHER, 3 * ETHER))
    refuted = await backend.register(a, ch.params, v2, ch.sign(v2))
    assert (await backend.channel_status(ch.id)).timeout == status.timeout

    with pytest.raises(TxReverted) as early:
        await backend.conclude(b, ch.params, v2)
    assert early.value.data["error"] == "ChallengeNotOver"
    assert early.value.data["args"] == {"timeout": status.timeout}

    await backend.advance_time(3601)
    assert await backend.chain_time() >= status.timeout
    concluded = await backend.conclude(b, ch.params, v2)
    end = await _balances(backend, a.address, b.address)
    assert end[0] == start[0] - refuted.fee + 7 * ETHER
    assert end[1] == start[1] - registered.fee - concluded.fee + 3 * ETHER
    assert (await backend.channel_status(ch.id)).phase is Phase.CONCLUDED


@pytest_twisted.ensureDeferred
async def test_revert_is_reported_with_the_contract_error_before_sending(
    chain, new_channel
) -> None:
    ch = new_channel()
    backend = chain.backend
    a = ch.accounts[0]
    await backend.deposit(a, ch.id, 0, ETH, ETHER)
    final = ch.state(1, (ETHER, 0), is_final=True)
    intruder = Signer(b"\x07" * 32)
    forged = (ch.signers[0].sign_state(final), intruder.sign_state(final))
    before = await backend.balance(a.address)
    block = await backend.block_number()

    with pytest.raises(TxReverted) as info:
        await backend.conclude_final(a, ch.params, final, forged)
    assert info.value.data["error"] == "InvalidSignature"
    assert info.value.data["args"] == {"index": 1}
    assert info.value.data["txType"] == "concludeFinal"
    assert info.value.data["txHash"] is None  # refused at preflight: never sent
    assert "InvalidSignature" in str(info.value) and info.value.code == 303

    with pytest.raises(TxReverted) as info:
        await backend.deposit(a, ch.id, 2, ETH, ETHER)
    assert info.value.data["error"] == "InvalidParticipantIndex"
    with pytest.raises(TxReverted) as info:
        await backend.conclude_final(a, ch.params, ch.state(1, (ETHER, 0)), ch.sign(final))
    assert info.value.data["error"] == "NotFinal"
    with pytest.raises(TxReverted) as info:
        await backend.withdraw(a, ETH)
    assert info.value.data["error"] == "NothingOwed"

    # Nothing was mined, nothing was paid: every failure was caught by the preflight.
    assert await backend.balance(a.address) == before
    assert await backend.block_number() == block
    # The account still works: its nonce was not consumed.
    await backend.conclude_final(a, ch.params, final, ch.sign(final))


@pytest_twisted.ensureDeferred
async def test_invalid_arguments_fail_before_the_chain(chain, new_channel) -> None:
    ch = new_channel()
    a = ch.accounts[0]
    with pytest.raises(InvalidArgument):
        await chain.backend.deposit(a, ch.id, 0, ETH, 0)
    final = ch.state(1, (0, 0), is_final=True)
    with pytest.raises(InvalidArgument):
        await chain.backend.conclude_final(a, ch.params, final, ch.sign(final)[:1])


async def _wait_sent(backend, account):
    """Until `account`'s transaction is with the node and its receipt awaited."""
    while backend.sender.in_flight(account.address) is None:
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_revert_when_mined_is_reported_with_the_tx_hash(chain, new_channel) -> None:
    # Two closes race: both pass the preflight, the block runs both, the second reverts.
    ch = new_channel()
    backend = chain.backend
    a, b = ch.accounts
    await backend.deposit(a, ch.id, 0, ETH, ETHER)
    final = ch.state(1, (ETHER // 2, ETHER // 2), is_final=True)
    sigs = ch.sign(final)
    await backend.set_automine(False)
    first = backend.conclude_final(a, ch.params, final, sigs)
    await _wait_sent(backend, a)
    second = backend.conclude_final(b, ch.params, final, sigs)
    await _wait_sent(backend, b)
    await backend.mine()
    await backend.set_automine(True)

    receipt = await first
    with pytest.raises(TxReverted) as info:
        await second
    assert info.value.data["error"] == "ChannelConcluded"
    assert info.value.data["txHash"] is not None
    assert receipt.events_named("Concluded")


@pytest_twisted.ensureDeferred
async def test_concurrent_transactions_of_one_account_all_succeed(chain, new_channel) -> None:
    ch = new_channel()
    backend = chain.backend
    a = ch.accounts[0]
    amounts = [ETHER + i for i in range(6)]
    receipts = await defer.gatherResults(
        [backend.deposit(a, ch.id, i % 2, ETH, amount) for i, amount in enumerate(amounts)]
    )
    assert len({r.tx_hash for r in receipts}) == len(amounts)
    held = await backend.holdings(ch.id)
    assert held == (sum(amounts[0::2]), sum(amounts[1::2]))
    # They went out in order, one at a time.
    blocks = [r.block_number for r in receipts]
    assert blocks == sorted(blocks) and len(set(blocks)) == len(blocks)


@pytest_twisted.ensureDeferred
async def test_send_ether(chain) -> None:
    backend = chain.backend
    payer, payee = chain.account(5), Address(b"\x5a" * 20)
    before = await backend.balance(payee)
    receipt = await backend.send_ether(payer, payee, 12345)
    assert await backend.balance(payee) == before + 12345
    assert receipt.gas_used == 21_000


@pytest_twisted.ensureDeferred
async def test_an_account_that_cannot_pay_gets_insufficient_funds(chain, new_channel) -> None:
    """A clear error naming the account (to top up), not the node's raw refusal."""
    ch = new_channel()
    broke = Account(os.urandom(32))
    with pytest.raises(InsufficientFunds) as raised:
        await chain.backend.deposit(broke, ch.id, 0, ETH, 1)
    assert raised.value.data["account"] == broke.checksum_address
    assert raised.value.data["txType"] == "deposit"
    assert "top it up" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_the_start_up_check_reads_the_record_only_of_channels_that_fall_short(
        chain, new_channel) -> None:
    """`shortfalls` (a session's start): a channel that holds what its state says passes, one
    that holds less is named, one concluded on-chain (paid out: it holds nothing) passes."""
    backend = chain.backend
    full, short, concluded = new_channel(), new_channel(), new_channel()
    for ch in (full, short, concluded):
        await backend.deposit(ch.accounts[0], ch.id, 0, ETH, 3 * ETHER)
    await backend.deposit(full.accounts[1], full.id, 1, ETH, 2 * ETHER)
    await backend.deposit(concluded.accounts[1], concluded.id, 1, ETH, 2 * ETHER)
    final = concluded.state(4, (ETHER, 4 * ETHER), is_final=True)
    await backend.conclude_final(concluded.accounts[0], concluded.params, final,
                                 concluded.sign(final))
    assert await backend.holdings(concluded.id) == (0, 0)

    def record(ch, version: int, balances: tuple[int, int]) -> ChannelRecord:
        state = ch.state(version, balances)
        return ChannelRecord(ch.id, ch.params, 0, ChannelPhase.OPEN,
                             SignedState(state, ch.sign(state)))

    found = await shortfalls(backend, [record(full, 3, (ETHER, 4 * ETHER)),
                                       record(short, 3, (ETHER, 4 * ETHER)),
                                       record(concluded, 3, (2 * ETHER, 3 * ETHER))])
    assert [(f.channel_id, f.asset, f.expected, f.held) for f in found] \
        == [(short.id, ETH, 5 * ETHER, 3 * ETHER)]
    assert await shortfalls(backend, [record(full, 3, (ETHER, 4 * ETHER))]) == []


@pytest_twisted.ensureDeferred
async def test_a_settling_channel_whose_funding_failed_part_way_passes_the_check(
        chain, new_channel) -> None:
    """One deposit made, the other never: the channel settles (version 0 registered for the
    refund). The contract holds less than the state, and that is no reset of the chain."""
    backend = chain.backend
    partial, registered, nothing = new_channel(), new_channel(), new_channel()
    await backend.deposit(partial.accounts[0], partial.id, 0, ETH, 3 * ETHER)
    state = registered.state(0, (3 * ETHER, 2 * ETHER))
    await backend.register(registered.accounts[0], registered.params, state,
                           registered.sign(state))

    def settling(ch, phase: ChannelPhase) -> ChannelRecord:
        state = ch.state(0, (3 * ETHER, 2 * ETHER))
        return ChannelRecord(ch.id, ch.params, 0, phase, SignedState(state, ch.sign(state)))

    found = await shortfalls(backend, [settling(partial, ChannelPhase.CLOSING),
                                       settling(registered, ChannelPhase.DISPUTED),
                                       settling(nothing, ChannelPhase.CLOSING)])
    # Nothing deposited and nothing registered: as on a reset chain, so still named, unless
    # the record says the channel went to settlement before it was funded.
    assert {f.channel_id for f in found} == {nothing.id}
    unfunded = replace(settling(nothing, ChannelPhase.CLOSING), unfunded=True)
    assert await shortfalls(backend, [unfunded]) == []
    # An open channel holding part of its state is still short.
    opened = ChannelRecord(partial.id, partial.params, 0, ChannelPhase.OPEN,
                           settling(partial, ChannelPhase.OPEN).current)
    assert [f.channel_id for f in await shortfalls(backend, [opened])] == [partial.id]
