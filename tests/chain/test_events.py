"""Following the Adjudicator's events from a block cursor."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest_twisted

from perund.chain.abi import ContractCodec
from perund.channel.encoding import channel_id as offchain_channel_id
from perund.channel.types import ETH, Address, State

from .conftest import ETHER


@pytest_twisted.ensureDeferred
async def test_events_after_a_cursor_miss_nothing_and_repeat_nothing(chain, new_channel) -> None:
    backend = chain.backend
    ch, other = new_channel(), new_channel(3, 4)
    a, b = ch.accounts
    cursor = await backend.block_number()

    empty = await backend.events_after(cursor, [ch.id])
    assert empty.events == () and empty.cursor == cursor

    await backend.deposit(a, ch.id, 0, ETH, 2 * ETHER)
    await backend.deposit(other.accounts[0], other.id, 0, ETH, ETHER)
    first = await backend.events_after(cursor, [ch.id])
    assert [e.name for e in first.events] == ["Deposited"]
    assert first.cursor == await backend.block_number()

    await backend.deposit(b, ch.id, 1, ETH, ETHER)
    final = ch.state(1, (ETHER, 2 * ETHER), is_final=True)
    await backend.conclude_final(b, ch.params, final, ch.sign(final))
    second = await backend.events_after(first.cursor, [ch.id])
    assert [e.name for e in second.events] == ["Deposited", "Concluded", "PaidOut", "PaidOut"]
    assert all(e.channel_id == ch.id for e in first.events + second.events)

    # The two batches are exactly the channel's events over the whole range, in chain order.
    everything = await backend.events(cursor + 1, second.cursor, [ch.id])
    assert list(first.events + second.events) == everything
    positions = [e.position for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    # Unfiltered, the other channel's deposit shows up too; by its own ID, only it.
    unfiltered = await backend.events(cursor + 1, second.cursor)
    assert len(unfiltered) == len(everything) + 1
    (theirs,) = await backend.events(cursor + 1, second.cursor, [other.id])
    assert theirs.channel_id == other.id and theirs.args["amount"] == ETHER
    assert await backend.events(cursor + 1, second.cursor, []) == []


@pytest_twisted.ensureDeferred
async def test_confirmations_hold_back_the_newest_blocks(chain, new_channel) -> None:
    backend = chain.backend
    ch = new_channel()
    cursor = await backend.block_number()
    receipt = await backend.deposit(ch.accounts[0], ch.id, 0, ETH, ETHER)
    held = await backend.events_after(cursor, [ch.id], confirmations=1)
    assert held.events == () and held.cursor == cursor
    await backend.mine()
    released = await backend.events_after(held.cursor, [ch.id], confirmations=1)
    assert [e.tx_hash for e in released.events] == [receipt.tx_hash]
    assert released.cursor == receipt.block_number


async def _three_deposits(chain, new_channel):  # type: ignore[no-untyped-def]
    """A channel with three deposits in three blocks: the backend, the channel, the blocks
    before and after them, and their events read in one request."""
    backend = chain.backend
    ch = new_channel()
    cursor = await backend.block_number()
    for index in (0, 1, 0):
        await backend.deposit(ch.accounts[index], ch.id, index, ETH, ETHER)
    head = await backend.block_number()
    return backend, ch, cursor, head, await backend.events(cursor + 1, head, [ch.id])


@pytest_twisted.ensureDeferred
async def test_long_ranges_are_split_without_losing_events(chain, new_channel) -> None:
    backend, ch, cursor, head, whole = await _three_deposits(chain, new_channel)
    backend.max_log_range = 1
    assert await backend.events(cursor + 1, head, [ch.id]) == whole
    assert [e.args["holding"] for e in whole] == [ETHER, ETHER, 2 * ETHER]


@pytest_twisted.ensureDeferred
async def test_a_node_refusing_wide_log_ranges_is_asked_for_narrower_ones(
        chain, new_channel, monkeypatch) -> None:
    """A node that takes at most 2 blocks an eth_getLogs (a public node's cap, narrower than
    `max_log_range`) failed the watcher every poll, for good (the chain review). The range
    is halved until the node takes it, and stays so."""
    from perund.errors import ChainRpcError

    backend, ch, cursor, head, whole = await _three_deposits(chain, new_channel)
    client = backend.client
    real = client.logs_blocking

    def capped(address, start, end, topics):  # type: ignore[no-untyped-def]
        if end - start + 1 > 2:
            raise ChainRpcError("eth_getLogs", -32005, "query exceeds max block range 2")
        return real(address, start, end, topics)

    monkeypatch.setattr(client, "logs_blocking", capped)
    backend.max_log_range = 5_000
    assert await backend.events(cursor + 1, head, [ch.id]) == whole
    assert backend.max_log_range <= 2
    monkeypatch.setattr(client, "logs_blocking", lambda *_: (_ for _ in ()).throw(
        ChainRpcError("eth_getLogs", -32000, "header not found")))
    try:
        await backend.events(cursor + 1, head, [ch.id])
    except ChainRpcError as exc:  # any other error is no reason to narrow
        assert "header not found" in str(exc)
    else:
        raise AssertionError("the error was swallowed")


@pytest_twisted.ensureDeferred
async def test_registered_event_decodes_its_arguments(chain, new_channel) -> None:
    backend = chain.backend
    ch = new_channel()
    a = ch.accounts[0]
    cursor = await backend.block_number()
    await backend.deposit(a, ch.id, 0, ETH, ETHER)
    v1 = ch.state(1, (ETHER - 5, 5))
    await backend.register(a, ch.params, v1, ch.sign(v1))
    events = await backend.events(cursor + 1, await backend.block_number(), [ch.id])
    registered = events[-1]
    assert registered.name == "Registered"
    assert registered.args["isFinal"] is False
    assert registered.args["balances"] == ((ETHER - 5, 5),)
    assert isinstance(registered.args["timeout"], int)


@pytest_twisted.ensureDeferred
async def test_a_refused_payout_is_owed_then_withdrawn(chain, new_channel) -> None:
    """A receiver contract that rejects ether: PaidOut(pushed=False), owed, then Withdrawn."""
    backend = chain.backend
    artifact = json.loads((Path(__file__).parents[1] / "contracts" / "artifacts" /
                           "TestReceiver.json").read_text())
    codec = ContractCodec(artifact["abi"])
    deployer = chain.account(6)
    created = await backend.sender.transact(
        deployer, "deploy", None, bytes.fromhex(artifact["bytecode"].removeprefix("0x"))
    )
    receiver = Address(created.contract_address)
    await backend.sender.transact(deployer, "setMode", receiver, codec.encode_call("setMode", 1))

    ch = new_channel()
    params = replace(ch.params, receivers=(ch.params.receivers[0], receiver))
    cid = offchain_channel_id(backend.chain_id, backend.adjudicator, params)
    a = ch.accounts[0]
    cursor = await backend.block_number()
    await backend.deposit(a, cid, 0, ETH, ETHER)
    final = State(cid, 1, (ETH,), ((ETHER - 7, 7),), True)
    sigs = (ch.signers[0].sign_state(final), ch.signers[1].sign_state(final))
    close = await backend.conclude_final(a, params, final, sigs)
    pushed = {e.args["receiver"]: e.args["pushed"] for e in close.events_named("PaidOut")}
    assert pushed == {a.address: True, receiver: False}
    assert await backend.owed(receiver) == 7

    await backend.sender.transact(deployer, "setMode", receiver, codec.encode_call("setMode", 0))
    await backend.sender.transact(
        deployer, "callWithdraw", receiver,
        codec.encode_call("callWithdraw", backend.adjudicator, ETH),
    )
    assert await backend.owed(receiver) == 0
    assert await backend.balance(receiver) == 7
    events = await backend.events(cursor + 1, await backend.block_number())
    withdrawn = [e for e in events if e.name == "Withdrawn"]
    assert [(e.args["receiver"], e.args["amount"]) for e in withdrawn] == [(receiver, 7)]
    assert withdrawn[0].channel_id is None
    # Filtered by channel, Withdrawn (which names no channel) is left out.
    by_channel = await backend.events(cursor + 1, await backend.block_number(), [cid])
    assert "Withdrawn" not in {e.name for e in by_channel}
