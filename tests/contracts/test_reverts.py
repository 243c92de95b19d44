"""Every way a call to the Adjudicator can fail, each with its custom error, on both chains."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import coincurve
import pytest
from eth_utils import keccak, to_checksum_address

from perund.channel.encoding import Signer, address_of_public_key, signing_digest
from perund.channel.proposal import MAX_HOLDING
from perund.channel.types import Address, State

from .conftest import CHALLENGE, ETH_HEX, ETHER, Channel, Err, Setup, as_state

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
TOKEN = Address(bytes.fromhex("00000000000000000000000000000000000000aa"))
TOKEN2 = Address(bytes.fromhex("00000000000000000000000000000000000000bb"))


def funded(setup: Setup, amounts: tuple[int, int] = (ETHER, ETHER)) -> Channel:
    ch = setup.channel()
    if amounts[0]:
        ch.deposit(setup.alice, 0, amounts[0])
    if amounts[1]:
        ch.deposit(setup.bob, 1, amounts[1])
    return ch


def register_error(ch: Channel, state: State, sigs: list[bytes], sender: str) -> Err:
    return ch.error(ch.fn.register(ch.p(), as_state(state), sigs), sender)


def conclude_final_error(ch: Channel, state: State, sigs: list[bytes], sender: str) -> Err:
    return ch.error(ch.fn.concludeFinal(ch.p(), as_state(state), sigs), sender)


# ------------------------------------------------------------------ deposit


def test_deposit_participant_index_above_one(setup: Setup) -> None:
    ch = setup.channel()
    assert ch.error(ch.fn.deposit(ch.id, 2, ETH_HEX, 1), setup.alice, 1) == (
        "InvalidParticipantIndex",
        (),
    )


def test_deposit_zero_amount(setup: Setup) -> None:
    ch = setup.channel()
    assert ch.error(ch.fn.deposit(ch.id, 0, ETH_HEX, 0), setup.alice, 0) == ("ZeroAmount", ())


@pytest.mark.parametrize("value", [0, 999, 1001])
def test_deposit_value_must_equal_amount(setup: Setup, value: int) -> None:
    ch = setup.channel()
    assert ch.error(ch.fn.deposit(ch.id, 0, ETH_HEX, 1000), setup.alice, value) == (
        "ValueMismatch",
        (),
    )


def test_deposit_of_an_address_without_code_is_not_a_token(setup: Setup) -> None:
    ch = setup.channel()
    token = to_checksum_address(TOKEN)
    assert ch.error(ch.fn.deposit(ch.id, 0, token, 5), setup.alice) == (
        "InvalidToken",
        (token.lower(),),
    )


def test_deposit_after_cooperative_conclusion(setup: Setup) -> None:
    ch = funded(setup)
    ch.conclude_final(ch.state(1, (ETHER, ETHER), final=True), setup.alice)
    for index in (0, 1):
        call = ch.fn.deposit(ch.id, index, ETH_HEX, 1)
        assert ch.error(call, setup.alice, 1) == ("ChannelConcluded", ())


def test_deposit_after_dispute_conclusion(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    ch.register(state, setup.alice)
    setup.chain.advance(CHALLENGE)
    ch.conclude(state, setup.alice)
    assert ch.error(ch.fn.deposit(ch.id, 0, ETH_HEX, 1), setup.bob, 1) == ("ChannelConcluded", ())


def test_deposit_beyond_uint128_reverts(setup: Setup) -> None:
    ch = setup.channel()
    # The largest holding (all ones is reserved for the concluded mark): what the node's
    # proposals allow per deposit.
    big = MAX_HOLDING
    setup.chain.fund(setup.carol, big + 2 * ETHER)
    # Two steps: anvil refuses a transaction whose value plus fee reaches 2**128.
    ch.deposit(setup.carol, 1, 2**127)
    ch.deposit(setup.carol, 1, big - 2**127)
    assert ch.holdings() == (0, big)
    assert ch.error(ch.fn.deposit(ch.id, 1, ETH_HEX, 1), setup.carol, 1) == ("HoldingOverflow", ())
    # The other half of the slot is independent.
    ch.deposit(setup.alice, 0, 5)
    assert ch.holdings() == (5, big)
    huge = 2**255
    assert ch.error(ch.fn.deposit(ch.id, 0, ETH_HEX, huge), setup.alice, 0) == ("ValueMismatch", ())


# ------------------------------------------------------------------ signatures


def test_register_with_a_corrupted_signature(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    sigs = ch.sigs(state)
    bad = bytearray(sigs[1])
    bad[5] ^= 0x01
    assert register_error(ch, state, [sigs[0], bytes(bad)], setup.alice) == (
        "InvalidSignature",
        (1,),
    )


def test_register_signed_by_the_wrong_key(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    mallory = Signer(os.urandom(32))
    sigs = [bytes(mallory.sign_state(state)), ch.sigs(state)[1]]
    assert register_error(ch, state, sigs, setup.alice) == ("InvalidSignature", (0,))


def test_register_with_swapped_signatures(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    s0, s1 = ch.sigs(state)
    assert register_error(ch, state, [s1, s0], setup.alice) == ("InvalidSignature", (0,))


def test_a_signature_on_another_state_does_not_count(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(2, (ETHER, ETHER))
    other = ch.state(2, (ETHER + 1, ETHER - 1))
    sigs = [ch.sigs(state)[0], ch.sigs(other)[1]]
    assert register_error(ch, state, sigs, setup.alice) == ("InvalidSignature", (1,))


def _high_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda sig: sig[:64], id="64-bytes"),
        pytest.param(lambda sig: sig + b"\x00", id="66-bytes"),
        pytest.param(lambda sig: b"", id="empty"),
        pytest.param(lambda sig: sig[:64] + bytes((sig[64] - 27,)), id="v-0-1"),
        pytest.param(lambda sig: sig[:64] + b"\x1d", id="v-29"),
        pytest.param(_high_s, id="high-s"),
    ],
)
def test_malformed_signatures_are_refused(setup: Setup, mangle: Callable[[bytes], bytes]) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    s0, s1 = ch.sigs(state)
    assert register_error(ch, state, [s0, mangle(s1)], setup.alice) == ("MalformedSignature", (1,))
    final = ch.state(2, (ETHER, ETHER), final=True)
    f0, f1 = ch.sigs(final)
    assert conclude_final_error(ch, final, [mangle(f0), f1], setup.alice) == (
        "MalformedSignature",
        (0,),
    )


def test_the_high_s_twin_really_is_a_valid_ecdsa_signature(setup: Setup) -> None:
    """So the high-s case above tests the malleability rule, not just garbage bytes."""
    ch = setup.channel()
    state = ch.state(1, (1, 1))
    twin = _high_s(ch.sigs(state)[0])
    public = coincurve.PublicKey.from_signature_and_message(
        twin[:64] + bytes((twin[64] - 27,)), signing_digest(state), hasher=None
    )
    assert address_of_public_key(public.format(compressed=False)) == ch.signers[0].address


# ------------------------------------------------------------------ register


def test_register_state_of_another_channel(setup: Setup) -> None:
    ch = funded(setup)
    other = setup.channel(signers=ch.signers)
    state = other.state(1, (ETHER, ETHER))
    assert register_error(ch, state, ch.sigs(state), setup.alice) == ("ChannelIDMismatch", ())


@pytest.mark.parametrize(
    ("assets", "balances"),
    [
        pytest.param((), (), id="no-assets"),
        pytest.param((TOKEN, bytes(20)), ((1, 1), (1, 1)), id="eth-not-first"),
        pytest.param((bytes(20), TOKEN, TOKEN), ((1, 1), (0, 0), (0, 0)), id="duplicate-token"),
        pytest.param((bytes(20), bytes(20)), ((1, 1), (1, 1)), id="duplicate-eth"),
        pytest.param((bytes(20),), ((1, 1), (1, 1)), id="more-rows-than-assets"),
        pytest.param((bytes(20), TOKEN), ((1, 1),), id="fewer-rows-than-assets"),
        pytest.param((bytes(20),), ((1, 1, 1),), id="three-participants"),
        pytest.param((bytes(20),), ((1,),), id="one-participant"),
    ],
)
def test_malformed_asset_lists(
    setup: Setup, assets: tuple[bytes, ...], balances: tuple[tuple[int, ...], ...]
) -> None:
    ch = funded(setup, (1, 1))
    # A raw tuple: the Python State refuses exactly these shapes.
    tup = (ch.id, 1, [to_checksum_address(a) for a in assets], [list(r) for r in balances], True)
    sigs = [bytes(s.sign_digest(_digest(ch, tup))) for s in ch.signers]
    assert ch.error(ch.fn.register(ch.p(), tup, sigs), setup.alice) == ("InvalidAssets", ())
    assert ch.error(ch.fn.concludeFinal(ch.p(), tup, sigs), setup.alice) == ("InvalidAssets", ())


def _digest(ch: Channel, state_tuple: tuple[Any, ...]) -> bytes:
    h = bytes(ch.fn.hashState(state_tuple).call())
    return keccak(b"\x19Ethereum Signed Message:\n32" + h)


def test_refute_with_a_lower_version(setup: Setup) -> None:
    ch = funded(setup)
    ch.register(ch.state(5, (ETHER, ETHER)), setup.alice)
    stale = ch.state(4, (2 * ETHER, 0))
    assert register_error(ch, stale, ch.sigs(stale), setup.alice) == ("StaleVersion", (5, 4))


def test_refute_with_an_equal_version_but_another_state(setup: Setup) -> None:
    ch = funded(setup)
    ch.register(ch.state(5, (ETHER, ETHER)), setup.alice)
    twin = ch.state(5, (2 * ETHER, 0))
    assert register_error(ch, twin, ch.sigs(twin), setup.alice) == ("StaleVersion", (5, 5))


def test_refute_after_the_timeout(setup: Setup) -> None:
    ch = funded(setup)
    ch.register(ch.state(1, (ETHER, ETHER)), setup.alice)
    setup.chain.advance(CHALLENGE)
    newer = ch.state(2, (0, 2 * ETHER))
    assert register_error(ch, newer, ch.sigs(newer), setup.bob) == ("ChallengeTimedOut", ())


def test_register_after_cooperative_conclusion(setup: Setup) -> None:
    ch = funded(setup)
    ch.conclude_final(ch.state(9, (ETHER, ETHER), final=True), setup.alice)
    old = ch.state(3, (2 * ETHER, 0))
    assert register_error(ch, old, ch.sigs(old), setup.alice) == ("ChannelConcluded", ())


def test_register_after_dispute_conclusion(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    ch.register(state, setup.alice)
    setup.chain.advance(CHALLENGE)
    ch.conclude(state, setup.alice)
    newer = ch.state(2, (2 * ETHER, 0))
    assert register_error(ch, newer, ch.sigs(newer), setup.alice) == ("ChannelConcluded", ())


# ------------------------------------------------------------------ conclude


def test_conclude_without_registration(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER), final=True)
    assert ch.error(ch.fn.conclude(ch.p(), as_state(state)), setup.alice) == ("NotRegistered", ())


def test_conclude_before_the_timeout(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    ch.register(state, setup.alice)
    timeout = ch.status()[2]
    assert ch.error(ch.fn.conclude(ch.p(), as_state(state)), setup.alice) == (
        "ChallengeNotOver",
        (timeout,),
    )
    setup.chain.advance(CHALLENGE // 2)
    assert ch.error(ch.fn.conclude(ch.p(), as_state(state)), setup.alice)[0] == "ChallengeNotOver"


def test_conclude_with_a_state_other_than_the_registered_one(setup: Setup) -> None:
    ch = funded(setup)
    ch.register(ch.state(1, (ETHER, ETHER)), setup.alice)
    setup.chain.advance(CHALLENGE)
    for other in (
        ch.state(1, (2 * ETHER, 0)),
        ch.state(2, (ETHER, ETHER)),
        ch.state(1, (ETHER, ETHER), final=True),
    ):
        assert ch.error(ch.fn.conclude(ch.p(), as_state(other)), setup.alice) == (
            "StateMismatch",
            (),
        )


def test_conclude_with_other_params(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    ch.register(state, setup.alice)
    setup.chain.advance(CHALLENGE)
    other = setup.channel(signers=ch.signers, receivers=(os.urandom(20), os.urandom(20)))
    assert other.error(other.fn.conclude(other.p(), as_state(state)), setup.alice) == (
        "NotRegistered",
        (),
    )


def test_no_double_payout(setup: Setup) -> None:
    chain = setup.chain
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER))
    ch.register(state, setup.alice)
    chain.advance(CHALLENGE)
    ch.conclude(state, setup.alice)
    paid = (chain.balance(ch.receivers[0]), chain.balance(ch.receivers[1]))
    assert paid == (ETHER, ETHER)
    assert ch.error(ch.fn.conclude(ch.p(), as_state(state)), setup.bob) == ("ChannelConcluded", ())
    final = ch.state(2, (2 * ETHER, 0), final=True)
    assert conclude_final_error(ch, final, ch.sigs(final), setup.bob) == ("ChannelConcluded", ())
    assert (chain.balance(ch.receivers[0]), chain.balance(ch.receivers[1])) == paid


def test_no_double_payout_after_conclude_final(setup: Setup) -> None:
    ch = funded(setup)
    registered = ch.state(1, (ETHER, ETHER))
    ch.register(registered, setup.alice)
    final = ch.state(2, (2 * ETHER, 0), final=True)
    ch.conclude_final(final, setup.alice)
    assert conclude_final_error(ch, final, ch.sigs(final), setup.alice) == ("ChannelConcluded", ())
    setup.chain.advance(CHALLENGE)
    assert ch.error(ch.fn.conclude(ch.p(), as_state(registered)), setup.bob) == (
        "ChannelConcluded",
        (),
    )
    assert setup.chain.balance(ch.receivers[0]) == 2 * ETHER
    assert setup.chain.balance(ch.receivers[1]) == 0
    assert setup.chain.balance(setup.contract.address) == 0


# ------------------------------------------------------------------ concludeFinal


def test_conclude_final_with_a_non_final_state(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(3, (ETHER, ETHER))
    assert conclude_final_error(ch, state, ch.sigs(state), setup.alice) == ("NotFinal", ())


def test_conclude_final_state_of_another_channel(setup: Setup) -> None:
    ch = funded(setup)
    other = setup.channel(signers=ch.signers)
    state = other.state(3, (ETHER, ETHER), final=True)
    assert conclude_final_error(ch, state, ch.sigs(state), setup.alice) == ("ChannelIDMismatch", ())


def test_conclude_final_with_one_signature_missing(setup: Setup) -> None:
    ch = funded(setup)
    state = ch.state(3, (2 * ETHER, 0), final=True)
    s0, _ = ch.sigs(state)
    assert conclude_final_error(ch, state, [s0, s0], setup.alice) == ("InvalidSignature", (1,))


# ------------------------------------------------------------------ withdraw and gas


def test_withdraw_with_nothing_owed(setup: Setup) -> None:
    fn = setup.contract.functions.withdraw(ETH_HEX)
    assert setup.chain.revert_error(setup.contract, fn, setup.alice) == ("NothingOwed", ())


def test_conclude_with_too_little_gas_for_the_payout_stipend(setup: Setup) -> None:
    """A concluder cannot starve a receiver's stipend to force it onto the pull path."""
    ch = funded(setup)
    state = ch.state(1, (ETHER, ETHER), final=True)
    call = ch.fn.concludeFinal(ch.p(), as_state(state), ch.sigs(state))
    needed = call.estimate_gas({"from": setup.alice})
    assert ch.error(call, setup.alice, gas=needed - 20_000) == ("InsufficientGas", ())
    ch.conclude_final(state, setup.alice)
    assert setup.chain.balance(ch.receivers[0]) == ETHER
