"""ERC20 tokens in channels: deposits (approve, permit, many at once), payouts to the unit,
tokens without a boolean, fee-on-transfer and hostile tokens, refunds of unlisted tokens."""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from web3.contract import Contract

from perund.channel.encoding import Signer
from perund.channel.types import ETH, Address

from .conftest import (
    CHALLENGE,
    ETH_HEX,
    ETHER,
    Channel,
    Setup,
    as_state,
    decode_error,
    token_balance,
)

NORMAL, RETURN_FALSE, REVERT, BURN, HUGE_RETURN, REENTER = range(6)


def addr(contract: Contract) -> Address:
    return Address(bytes.fromhex(contract.address[2:]))


def eth_and(token: Contract) -> tuple[bytes, bytes]:
    return (ETH, addr(token))


def funded(setup: Setup, token: Contract, eth: tuple[int, int], tok: tuple[int, int]) -> Channel:
    """A channel funded with ETH and `token` by alice (0) and bob (1), approve + deposit each."""
    ch = setup.channel()
    for index, sender in enumerate((setup.alice, setup.bob)):
        if eth[index]:
            ch.deposit(sender, index, eth[index])
        if tok[index]:
            ch.deposit_token(token, sender, index, tok[index])
    return ch


def permit_for(
    setup: Setup, token: Contract, owner_key: bytes, value: int, deadline: int
) -> tuple[Any, ...]:
    """An EIP-2612 permit of the owner with `owner_key` for the Adjudicator (Permit tuple)."""
    owner = to_checksum_address(Signer(owner_key).address)
    domain = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(
                    text="EIP712Domain(string name,string version,uint256 chainId,"
                    "address verifyingContract)"
                ),
                keccak(text="Test"),
                keccak(text="1"),
                setup.chain.chain_id,
                token.address,
            ],
        )
    )
    nonce = int(token.functions.nonces(owner).call())
    struct = keccak(
        encode(
            ["bytes32", "address", "address", "uint256", "uint256", "uint256"],
            [
                keccak(
                    text="Permit(address owner,address spender,uint256 value,uint256 nonce,"
                    "uint256 deadline)"
                ),
                owner,
                setup.contract.address,
                value,
                nonce,
                deadline,
            ],
        )
    )
    sig = Signer(owner_key).sign_digest(keccak(b"\x19\x01" + domain + struct))
    return (token.address, value, deadline, sig[64], sig[:32], sig[32:64])


def key_of(setup: Setup, account: str) -> bytes:
    return setup.chain.keys[setup.chain.accounts.index(account)]


# ------------------------------------------------------------------ deposits


def test_token_deposit_after_approve_credits_exactly(setup: Setup) -> None:
    token = setup.token()
    ch = setup.channel()
    before = token_balance(token, setup.alice)
    receipt = ch.deposit_token(token, setup.alice, 0, 7 * ETHER)
    ch.deposit_token(token, setup.bob, 1, 3)
    assert ch.token_holdings(token) == (7 * ETHER, 3)
    assert ch.holdings() == (0, 0)
    assert token_balance(token, setup.alice) == before - 7 * ETHER
    assert token_balance(token, setup.contract.address) == 7 * ETHER + 3
    (event,) = ch.events(receipt, "Deposited")
    assert event == {
        "channelID": ch.id,
        "participantIndex": 0,
        "asset": token.address,
        "amount": 7 * ETHER,
        "holding": 7 * ETHER,
    }


def test_deposit_many_funds_eth_and_tokens_in_one_transaction(setup: Setup) -> None:
    t1, t2 = setup.token(), setup.token()
    ch = setup.channel()
    for t, amount in ((t1, 5), (t2, 9)):
        setup.chain.transact(t.functions.approve(setup.contract.address, amount), setup.bob)
    call = ch.fn.fundParticipant(ch.id, 1, [ETH_HEX, t1.address, t2.address], [ETHER, 5, 9], [])
    receipt = setup.chain.transact(call, setup.bob, ETHER)
    assert ch.holdings() == (0, ETHER)
    assert ch.token_holdings(t1) == (0, 5)
    assert ch.token_holdings(t2) == (0, 9)
    assert [e["asset"] for e in ch.events(receipt, "Deposited")] == [
        ETH_HEX,
        t1.address,
        t2.address,
    ]
    # The same asset twice is two deposits; ETH twice needs the sum as value.
    setup.chain.transact(t1.functions.approve(setup.contract.address, 2), setup.alice)
    call = ch.fn.fundParticipant(
        ch.id, 0, [ETH_HEX, t1.address, ETH_HEX, t1.address], [1, 1, 2, 1], []
    )
    setup.chain.transact(call, setup.alice, 3)
    assert ch.holdings() == (3, ETHER)
    assert ch.token_holdings(t1) == (2, 5)


def test_deposit_many_reverts(setup: Setup) -> None:
    token = setup.token()
    ch = setup.channel()
    fn, alice = ch.fn, setup.alice
    assert ch.error(fn.fundParticipant(ch.id, 2, [ETH_HEX], [1], []), alice, 1) == (
        "InvalidParticipantIndex",
        (),
    )
    assert ch.error(fn.fundParticipant(ch.id, 0, [ETH_HEX], [1, 2], []), alice, 1) == (
        "LengthMismatch",
        (),
    )
    assert ch.error(fn.fundParticipant(ch.id, 0, [ETH_HEX, ETH_HEX], [1, 2], []), alice, 2) == (
        "ValueMismatch",
        (),
    )
    assert ch.error(fn.fundParticipant(ch.id, 0, [token.address], [1], []), alice, 1) == (
        "ValueMismatch",
        (),
    )
    assert ch.error(
        fn.fundParticipant(ch.id, 0, [ETH_HEX, token.address], [1, 0], []), alice, 1
    ) == (
        "ZeroAmount",
        (),
    )
    assert ch.error(fn.fundParticipant(ch.id, 0, [token.address], [5], []), alice) == (
        "TokenTransferFailed",
        (token.address.lower(),),
    )


def test_token_deposit_reverts(setup: Setup) -> None:
    token = setup.token()
    ch = setup.channel()
    call = ch.fn.deposit(ch.id, 0, token.address, 5)
    # No allowance: the token refuses transferFrom.
    assert ch.error(call, setup.alice) == ("TokenTransferFailed", (token.address.lower(),))
    setup.chain.transact(token.functions.approve(setup.contract.address, 5), setup.alice)
    assert ch.error(call, setup.alice, 5) == ("ValueMismatch", ())
    # A contract without balanceOf is not a token.
    not_token = setup.channel().contract.address  # the Adjudicator itself answers no balanceOf
    assert ch.error(ch.fn.deposit(ch.id, 0, not_token, 5), setup.alice) == (
        "InvalidToken",
        (not_token.lower(),),
    )


def test_token_deposit_beyond_uint128_reverts(setup: Setup) -> None:
    token = setup.token(mint=2**129)
    ch = setup.channel()
    ch.deposit_token(token, setup.alice, 0, 2**128 - 2)
    setup.chain.transact(token.functions.approve(setup.contract.address, 1), setup.alice)
    assert ch.error(ch.fn.deposit(ch.id, 0, token.address, 1), setup.alice) == (
        "HoldingOverflow",
        (),
    )
    assert token_balance(token, setup.contract.address) == 2**128 - 2


def test_permit_deposits_without_an_approve_transaction(setup: Setup) -> None:
    token = setup.token()
    ch = setup.channel()
    deadline = setup.chain.timestamp() + 3600
    permit = permit_for(setup, token, key_of(setup, setup.alice), 4 * ETHER, deadline)
    call = ch.fn.fundParticipant(ch.id, 0, [ETH_HEX, token.address], [ETHER, 4 * ETHER], [permit])
    setup.chain.transact(call, setup.alice, ETHER)
    assert ch.token_holdings(token) == (4 * ETHER, 0)
    assert ch.holdings() == (ETHER, 0)
    assert int(token.functions.allowance(setup.alice, setup.contract.address).call()) == 0


def test_a_front_run_permit_does_not_block_the_deposit(setup: Setup) -> None:
    token = setup.token()
    ch = setup.channel()
    deadline = setup.chain.timestamp() + 3600
    permit = permit_for(setup, token, key_of(setup, setup.alice), 4, deadline)
    # Someone copies the permit from the mempool and executes it first.
    setup.chain.transact(
        token.functions.permit(setup.alice, setup.contract.address, 4, deadline, *permit[3:]),
        setup.carol,
    )
    call = ch.fn.fundParticipant(ch.id, 0, [token.address], [4], [permit])
    setup.chain.transact(call, setup.alice)
    assert ch.token_holdings(token) == (4, 0)


def test_an_invalid_permit_without_allowance_fails_the_deposit(setup: Setup) -> None:
    token = setup.token()
    ch = setup.channel()
    deadline = setup.chain.timestamp() + 3600
    # Signed by bob's key for alice's tokens: the permit fails, and so does transferFrom.
    permit = permit_for(setup, token, key_of(setup, setup.bob), 4, deadline)
    call = ch.fn.fundParticipant(ch.id, 0, [token.address], [4], [permit])
    assert ch.error(call, setup.alice) == ("TokenTransferFailed", (token.address.lower(),))


def test_deposit_into_a_concluded_channel_reverts_for_tokens_too(setup: Setup) -> None:
    token = setup.token()
    ch = funded(setup, token, (ETHER, 0), (5, 5))
    final = ch.state_of(1, eth_and(token), ((ETHER, 0), (5, 5)), final=True)
    ch.conclude_final(final, setup.alice)
    setup.chain.transact(token.functions.approve(setup.contract.address, 1), setup.alice)
    assert ch.error(ch.fn.deposit(ch.id, 0, token.address, 1), setup.alice) == (
        "ChannelConcluded",
        (),
    )


# ------------------------------------------------------------------ payouts


def _paid(ch: Channel, receipt: Any) -> list[tuple[str, str, int, bool]]:
    return [
        (e["receiver"], e["asset"], e["amount"], e["pushed"]) for e in ch.events(receipt, "PaidOut")
    ]


def test_cooperative_close_pays_eth_and_tokens_to_the_unit(setup: Setup) -> None:
    token = setup.token()
    ch = funded(setup, token, (ETHER, 2 * ETHER), (10**6 + 1, 3))
    final = ch.state_of(4, eth_and(token), ((2 * ETHER + 1, ETHER - 1), (7, 10**6 - 3)), final=True)
    receipt = ch.conclude_final(final, setup.carol)
    r0, r1 = ch.receivers
    assert setup.chain.balance(r0) == 2 * ETHER + 1
    assert setup.chain.balance(r1) == ETHER - 1
    assert token_balance(token, r0) == 7
    assert token_balance(token, r1) == 10**6 - 3
    assert token_balance(token, setup.contract.address) == 0
    assert ch.token_holdings(token) == (0, 0)
    assert _paid(ch, receipt) == [
        (r0, ETH_HEX, 2 * ETHER + 1, True),
        (r1, ETH_HEX, ETHER - 1, True),
        (r0, token.address, 7, True),
        (r1, token.address, 10**6 - 3, True),
    ]


def test_token_only_channel_concludes_after_a_dispute(setup: Setup) -> None:
    token = setup.token()
    ch = funded(setup, token, (0, 0), (ETHER, ETHER))
    state = ch.state_of(2, (addr(token),), ((ETHER // 3, 2 * ETHER - ETHER // 3),))
    ch.register(state, setup.alice)
    setup.chain.advance(CHALLENGE)
    ch.conclude(state, setup.bob)
    assert token_balance(token, ch.receivers[0]) == ETHER // 3
    assert token_balance(token, ch.receivers[1]) == 2 * ETHER - ETHER // 3
    assert ch.status()[0] == 2
    assert ch.error(ch.fn.deposit(ch.id, 0, ETH_HEX, 1), setup.alice, 1) == (
        "ChannelConcluded",
        (),
    )


def test_underfunded_token_returns_each_deposit(setup: Setup) -> None:
    token = setup.token()
    ch = funded(setup, token, (ETHER, ETHER), (5, 0))
    final = ch.state_of(1, eth_and(token), ((ETHER, ETHER), (2, 4)), final=True)
    ch.conclude_final(final, setup.alice)
    assert token_balance(token, ch.receivers[0]) == 5
    assert token_balance(token, ch.receivers[1]) == 0


def test_token_without_boolean_return_deposits_and_pays(setup: Setup) -> None:
    token = setup.token("NoBoolToken")
    ch = funded(setup, token, (0, 0), (6, 4))
    final = ch.state_of(1, (addr(token),), ((1, 9),), final=True)
    ch.conclude_final(final, setup.alice)
    assert token_balance(token, ch.receivers[0]) == 1
    assert token_balance(token, ch.receivers[1]) == 9
    # Its failures (a revert) are seen: no allowance left.
    ch2 = setup.channel()
    assert ch2.error(ch2.fn.deposit(ch2.id, 0, token.address, 1), setup.alice) == (
        "TokenTransferFailed",
        (token.address.lower(),),
    )


def test_fee_on_transfer_deposits_are_refused(setup: Setup) -> None:
    token = setup.token("FeeToken")
    ch = setup.channel()
    setup.chain.transact(token.functions.approve(setup.contract.address, 10_000), setup.alice)
    assert ch.error(ch.fn.deposit(ch.id, 0, token.address, 10_000), setup.alice) == (
        "TransferMismatch",
        (10_000, 9_900),
    )
    assert token_balance(token, setup.contract.address) == 0


def test_a_fee_switched_on_later_costs_no_other_channel(setup: Setup) -> None:
    """Payouts debit the Adjudicator by exactly the amount; the fee is the receiver's loss."""
    token = setup.token("FeeToken")
    setup.chain.transact(token.functions.setFee(0), setup.carol)
    ch = funded(setup, token, (0, 0), (10_000, 0))
    other = funded(setup, token, (0, 0), (0, 500))
    setup.chain.transact(token.functions.setFee(100), setup.carol)
    ch.conclude_final(ch.state_of(1, (addr(token),), ((4_000, 6_000),), final=True), setup.alice)
    assert token_balance(token, ch.receivers[0]) == 3_960
    assert token_balance(token, ch.receivers[1]) == 5_940
    assert token_balance(token, setup.contract.address) == 500
    assert other.token_holdings(token) == (0, 500)


@pytest.mark.parametrize("mode", [RETURN_FALSE, REVERT, BURN, HUGE_RETURN])
def test_a_hostile_token_payout_is_credited_and_blocks_nothing(setup: Setup, mode: int) -> None:
    token = setup.token("HostileToken")
    ch = funded(setup, token, (ETHER, ETHER), (8, 2))
    setup.chain.transact(token.functions.setMode(mode, True), setup.carol)
    final = ch.state_of(1, eth_and(token), ((ETHER, ETHER), (3, 7)), final=True)
    receipt = ch.conclude_final(final, setup.alice)
    r0, r1 = ch.receivers
    assert (setup.chain.balance(r0), setup.chain.balance(r1)) == (ETHER, ETHER)
    assert (ch.owed(r0, token.address), ch.owed(r1, token.address)) == (3, 7)
    assert [p[3] for p in _paid(ch, receipt)] == [True, True, False, False]
    # A burning token takes at most its stipend per payout.
    assert receipt["gasUsed"] < 400_000


def test_withdraw_of_a_token_credit(setup: Setup) -> None:
    token = setup.token("HostileToken")
    rx = setup.carol  # a funded account, so it can send the withdraw itself
    ch = setup.channel(receivers=(bytes.fromhex(rx[2:]), os.urandom(20)))
    ch.deposit_token(token, setup.alice, 0, 5)
    setup.chain.transact(token.functions.setMode(REVERT, True), setup.carol)
    ch.conclude_final(ch.state_of(1, (addr(token),), ((5, 0),), final=True), setup.alice)
    before = token_balance(token, rx)
    assert ch.error(ch.fn.withdraw(token.address), rx) == ("TransferFailed", ())
    assert ch.owed(rx, token.address) == 5
    setup.chain.transact(token.functions.setMode(NORMAL, True), setup.carol)
    receipt = setup.chain.transact(ch.fn.withdraw(token.address), rx)
    assert token_balance(token, rx) == before + 5
    assert ch.owed(rx, token.address) == 0
    assert ch.events(receipt, "Withdrawn") == [
        {"receiver": rx, "asset": token.address, "amount": 5}
    ]
    assert ch.error(ch.fn.withdraw(token.address), rx) == ("NothingOwed", ())


def test_too_little_gas_for_a_token_stipend(setup: Setup) -> None:
    token = setup.token()
    ch = funded(setup, token, (0, 0), (5, 5))
    final = ch.state_of(1, (addr(token),), ((5, 5),), final=True)
    call = ch.fn.concludeFinal(ch.p(), as_state(final), ch.sigs(final))
    needed = call.estimate_gas({"from": setup.alice})
    assert ch.error(call, setup.alice, gas=needed - 50_000) == ("InsufficientGas", ())


# ------------------------------------------------------------------ unlisted tokens


def test_unlisted_token_is_refunded_to_each_depositor(setup: Setup) -> None:
    token = setup.token()
    ch = funded(setup, token, (ETHER, ETHER), (11, 13))
    refund = ch.fn.refund(ch.p(), token.address)
    assert ch.error(refund, setup.carol) == ("NotConcluded", ())
    ch.conclude_final(ch.state(1, (2 * ETHER, 0), final=True), setup.alice)
    assert ch.token_holdings(token) == (11, 13)  # what refund would pay
    receipt = setup.chain.transact(refund, setup.carol)
    r0, r1 = ch.receivers
    assert (token_balance(token, r0), token_balance(token, r1)) == (11, 13)
    assert _paid(ch, receipt) == [(r0, token.address, 11, True), (r1, token.address, 13, True)]
    assert ch.error(refund, setup.carol) == ("NothingToRefund", ())
    assert ch.error(ch.fn.refund(ch.p(), ETH_HEX), setup.carol) == ("NothingToRefund", ())


def test_refund_never_pays_a_listed_token_twice(setup: Setup) -> None:
    token = setup.token()
    ch = funded(setup, token, (0, 0), (4, 4))
    ch.conclude_final(ch.state_of(1, (addr(token),), ((8, 0),), final=True), setup.alice)
    assert ch.error(ch.fn.refund(ch.p(), token.address), setup.carol) == ("NothingToRefund", ())
    assert token_balance(token, ch.receivers[0]) == 8


# ------------------------------------------------------------------ re-entrancy


def _hostile_reentries(setup: Setup, token: Contract, receipt: Any) -> list[tuple[bool, Any]]:
    event = token.events.Reentered()
    return [
        (args["ok"], decode_error(setup.contract.abi, bytes(args["result"])))
        for args in (
            event.process_log(log)["args"]
            for log in receipt["logs"]
            if log["address"] == token.address
            and log["topics"][0] == keccak(text="Reentered(bool,bytes)")
        )
    ]


def _arm(setup: Setup, token: Contract, call: Any, on_transfer: bool) -> None:
    data = bytes.fromhex(call._encode_transaction_data()[2:])
    setup.chain.transact(
        token.functions.setAttack(setup.contract.address, data, on_transfer), setup.carol
    )


@pytest.mark.parametrize("attack", ["concludeFinal", "withdraw", "refund", "register"])
def test_reentrant_payout_token_takes_nothing_more(setup: Setup, attack: str) -> None:
    token = setup.token("HostileToken")
    ch = funded(setup, token, (ETHER, ETHER), (6, 6))
    final = ch.state_of(1, eth_and(token), ((ETHER, ETHER), (2, 10)), final=True)
    older = ch.state_of(0, eth_and(token), ((ETHER, ETHER), (6, 6)))
    call, error = {
        "concludeFinal": (
            ch.fn.concludeFinal(ch.p(), as_state(final), ch.sigs(final)),
            ("ChannelConcluded", ()),
        ),
        "withdraw": (ch.fn.withdraw(token.address), ("NothingOwed", ())),
        "refund": (ch.fn.refund(ch.p(), token.address), ("NothingToRefund", ())),
        "register": (
            ch.fn.register(ch.p(), as_state(older), ch.sigs(older)),
            ("ChannelConcluded", ()),
        ),
    }[attack]
    _arm(setup, token, call, on_transfer=True)  # re-enters from both token payouts
    receipt = ch.conclude_final(final, setup.alice)
    assert _hostile_reentries(setup, token, receipt) == [(False, error), (False, error)]
    r0, r1 = ch.receivers
    assert (token_balance(token, r0), token_balance(token, r1)) == (2, 10)
    assert (setup.chain.balance(r0), setup.chain.balance(r1)) == (ETHER, ETHER)
    assert token_balance(token, setup.contract.address) == 0
    assert setup.chain.balance(setup.contract.address) == 0


def test_reentrant_deposit_token_cannot_conclude_under_the_deposit(setup: Setup) -> None:
    """The token concludes the channel from inside transferFrom: the deposit sees it, reverts,
    and with it the conclusion."""
    token = setup.token("HostileToken")
    ch = funded(setup, token, (ETHER, ETHER), (0, 0))
    final = ch.state(1, (ETHER, ETHER), final=True)
    _arm(setup, token, ch.fn.concludeFinal(ch.p(), as_state(final), ch.sigs(final)), False)
    setup.chain.transact(token.functions.approve(setup.contract.address, 5), setup.alice)
    assert ch.error(ch.fn.deposit(ch.id, 0, token.address, 5), setup.alice) == (
        "ChannelConcluded",
        (),
    )
    assert ch.holdings() == (ETHER, ETHER)
    assert ch.status()[0] == 0


def test_a_token_that_moves_our_balance_during_transfer_from_is_not_credited(
    setup: Setup,
) -> None:
    """From inside transferFrom the token triggers a refund of its own tokens from another
    channel: the Adjudicator's balance grows by less than the deposit, which is refused."""
    token = setup.token("HostileToken")
    other = funded(setup, token, (ETHER, 0), (3, 0))
    other.conclude_final(other.state(1, (ETHER, 0), final=True), setup.alice)
    ch = setup.channel()
    _arm(setup, token, other.fn.refund(other.p(), token.address), on_transfer=False)
    setup.chain.transact(token.functions.approve(setup.contract.address, 5), setup.alice)
    assert ch.error(ch.fn.deposit(ch.id, 0, token.address, 5), setup.alice) == (
        "TransferMismatch",
        (5, 2),
    )
    assert ch.token_holdings(token) == (0, 0)
    assert other.token_holdings(token) == (3, 0)  # the refund was undone with the deposit
    assert token_balance(token, setup.contract.address) == 3
