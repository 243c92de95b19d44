"""Receivers that are contracts: refusing, gas-burning and re-entering ones gain nothing."""

from __future__ import annotations

import os
from typing import Any

from web3.contract import Contract

from .conftest import (
    CHALLENGE,
    ETH_HEX,
    ETHER,
    TEST_ARTIFACTS,
    Channel,
    Err,
    Setup,
    as_state,
    decode_error,
    load_artifact,
)

ACCEPT, REJECT, BURN, REENTER = range(4)


def receiver(setup: Setup, mode: int = ACCEPT) -> Contract:
    contract = setup.chain.deploy(load_artifact(TEST_ARTIFACTS / "TestReceiver.json"))
    if mode != ACCEPT:
        setup.chain.transact(contract.functions.setMode(mode), setup.carol)
    return contract


def attack(setup: Setup, rx: Contract, call: Any, value: int = 0) -> None:
    """Make `rx` re-enter the Adjudicator with `call` (and `value` wei) when it is paid."""
    data = bytes.fromhex(call._encode_transaction_data()[2:])
    setup.chain.transact(rx.functions.setAttack(setup.contract.address, data, value), setup.carol)


def reentries(setup: Setup, rx: Contract, receipt: Any) -> list[tuple[bool, Err]]:
    """(ok, decoded Adjudicator error) of each re-entry `rx` logged in `receipt`."""
    event = rx.events.Reentered()
    out = []
    for log in receipt["logs"]:
        if log["address"] == rx.address:
            args = event.process_log(log)["args"]
            out.append((args["ok"], decode_error(setup.contract.abi, bytes(args["result"]))))
    return out


def channel_paying(setup: Setup, rx: Contract) -> Channel:
    """A channel funded 1 + 1 ether whose receiver 0 is the contract `rx`."""
    ch = setup.channel(receivers=(bytes.fromhex(rx.address[2:]), os.urandom(20)))
    ch.deposit(setup.alice, 0, ETHER)
    ch.deposit(setup.bob, 1, ETHER)
    return ch


def test_contract_receiver_that_accepts_is_paid_by_push(setup: Setup) -> None:
    rx = receiver(setup)
    ch = channel_paying(setup, rx)
    receipt = ch.conclude_final(ch.state(1, (ETHER + 5, ETHER - 5), final=True), setup.alice)
    assert setup.chain.balance(rx.address) == ETHER + 5
    assert [e["pushed"] for e in ch.events(receipt, "PaidOut")] == [True, True]


def test_refusing_receiver_is_credited_and_withdraws_later(setup: Setup) -> None:
    chain = setup.chain
    rx = receiver(setup, REJECT)
    ch = channel_paying(setup, rx)
    receipt = ch.conclude_final(ch.state(1, (ETHER + 5, ETHER - 5), final=True), setup.alice)

    # The refusal does not block the other receiver nor the conclusion.
    assert chain.balance(ch.receivers[1]) == ETHER - 5
    assert ch.events(receipt, "PaidOut")[0] == {
        "channelID": ch.id,
        "receiver": rx.address,
        "asset": ETH_HEX,
        "amount": ETHER + 5,
        "pushed": False,
    }
    assert ch.owed(rx.address) == ETHER + 5
    assert chain.balance(setup.contract.address) == ETHER + 5
    assert ch.status()[0] == 2

    # Still refusing: the withdrawal fails as a whole and the credit stays.
    call = rx.functions.callWithdraw(setup.contract.address, ETH_HEX)
    assert chain.revert_error(setup.contract, call, setup.carol) == ("TransferFailed", ())
    assert ch.owed(rx.address) == ETHER + 5

    chain.transact(rx.functions.setMode(ACCEPT), setup.carol)
    receipt = chain.transact(call, setup.carol)
    withdrawn = setup.contract.events.Withdrawn().process_log(receipt["logs"][0])["args"]
    assert dict(withdrawn) == {"receiver": rx.address, "asset": ETH_HEX, "amount": ETHER + 5}
    assert chain.balance(rx.address) == ETHER + 5
    assert ch.owed(rx.address) == 0
    assert chain.balance(setup.contract.address) == 0
    # Paid once only.
    assert chain.revert_error(setup.contract, call, setup.carol) == ("NothingOwed", ())


def test_gas_burning_receiver_is_capped_and_falls_back_to_pull(setup: Setup) -> None:
    chain = setup.chain
    rx = receiver(setup, BURN)
    ch = channel_paying(setup, rx)
    receipt = ch.conclude_final(ch.state(1, (ETHER, ETHER), final=True), setup.alice)
    assert [e["pushed"] for e in ch.events(receipt, "PaidOut")] == [False, True]
    assert ch.owed(rx.address) == ETHER
    assert chain.balance(ch.receivers[1]) == ETHER
    # Compared with the same close paying an accepting contract, the burner cost its 30,000 gas
    # stipend plus the credit (a fresh storage slot, 22,100) and a little bookkeeping, no more.
    polite = channel_paying(setup, receiver(setup))
    baseline = polite.conclude_final(polite.state(1, (ETHER, ETHER), final=True), setup.alice)
    extra = receipt["gasUsed"] - baseline["gasUsed"]
    assert 30_000 + 22_100 <= extra <= 30_000 + 22_100 + 3_000


def test_reentering_conclude_final_gains_nothing(setup: Setup) -> None:
    chain = setup.chain
    rx = receiver(setup)
    ch = channel_paying(setup, rx)
    final = ch.state(1, (ETHER + 5, ETHER - 5), final=True)
    attack(setup, rx, ch.fn.concludeFinal(ch.p(), as_state(final), ch.sigs(final)))
    receipt = ch.conclude_final(final, setup.alice)
    assert reentries(setup, rx, receipt) == [(False, ("ChannelConcluded", ()))]
    assert chain.balance(rx.address) == ETHER + 5
    assert chain.balance(ch.receivers[1]) == ETHER - 5
    assert chain.balance(setup.contract.address) == 0


def test_reentering_conclude_gains_nothing(setup: Setup) -> None:
    chain = setup.chain
    rx = receiver(setup)
    ch = channel_paying(setup, rx)
    state = ch.state(1, (ETHER + 5, ETHER - 5))
    ch.register(state, setup.alice)
    chain.advance(CHALLENGE)
    attack(setup, rx, ch.fn.conclude(ch.p(), as_state(state)))
    receipt = ch.conclude(state, setup.bob)
    assert reentries(setup, rx, receipt) == [(False, ("ChannelConcluded", ()))]
    assert chain.balance(rx.address) == ETHER + 5
    assert chain.balance(setup.contract.address) == 0


def test_reentering_register_is_refused(setup: Setup) -> None:
    rx = receiver(setup)
    ch = channel_paying(setup, rx)
    older = ch.state(1, (2 * ETHER, 0))
    attack(setup, rx, ch.fn.register(ch.p(), as_state(older), ch.sigs(older)))
    receipt = ch.conclude_final(ch.state(2, (ETHER, ETHER), final=True), setup.alice)
    assert reentries(setup, rx, receipt) == [(False, ("ChannelConcluded", ()))]
    assert ch.status()[0] == 2


def test_reentering_deposit_into_the_concluded_channel_is_refused(setup: Setup) -> None:
    chain = setup.chain
    rx = receiver(setup)
    ch = channel_paying(setup, rx)
    attack(setup, rx, ch.fn.deposit(ch.id, 0, ETH_HEX, 1000), value=1000)
    receipt = ch.conclude_final(ch.state(1, (ETHER, ETHER), final=True), setup.alice)
    assert reentries(setup, rx, receipt) == [(False, ("ChannelConcluded", ()))]
    assert chain.balance(rx.address) == ETHER  # the 1000 wei stayed with the receiver
    assert ch.holdings() == (0, 0)


def test_reentering_withdraw_pays_once(setup: Setup) -> None:
    chain = setup.chain
    rx = receiver(setup, REJECT)
    first = channel_paying(setup, rx)
    first.conclude_final(first.state(1, (ETHER, ETHER), final=True), setup.alice)
    assert first.owed(rx.address) == ETHER

    # Now rx accepts but re-enters withdraw while the withdrawal pays it.
    attack(setup, rx, setup.contract.functions.withdraw(ETH_HEX))
    receipt = chain.transact(
        rx.functions.callWithdraw(setup.contract.address, ETH_HEX), setup.carol
    )
    assert reentries(setup, rx, receipt) == [(False, ("NothingOwed", ()))]
    assert chain.balance(rx.address) == ETHER
    assert first.owed(rx.address) == 0
    assert chain.balance(setup.contract.address) == 0


def test_reentering_withdraw_during_a_payout_takes_only_its_own_credit(setup: Setup) -> None:
    """rx is owed 1 ether from one channel and re-enters withdraw while paid by another."""
    chain = setup.chain
    rx = receiver(setup, REJECT)
    first = channel_paying(setup, rx)
    first.conclude_final(first.state(1, (ETHER, ETHER), final=True), setup.alice)
    second = channel_paying(setup, rx)
    attack(setup, rx, setup.contract.functions.withdraw(ETH_HEX))
    receipt = second.conclude_final(
        second.state(1, (ETHER // 2, 3 * ETHER // 2), final=True), setup.bob
    )
    # The re-entered withdraw pays rx its 1 ether credit, which makes rx re-enter once more
    # (logged first, being nested deeper): that finds the credit already zeroed.
    assert reentries(setup, rx, receipt) == [(False, ("NothingOwed", ())), (True, ("", ()))]
    assert chain.balance(rx.address) == ETHER + ETHER // 2
    assert second.owed(rx.address) == 0
    assert chain.balance(setup.contract.address) == 0
