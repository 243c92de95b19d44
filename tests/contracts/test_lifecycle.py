"""Happy paths of the Adjudicator, with every balance checked to the wei."""

from __future__ import annotations

from perund.channel.encoding import state_hash
from perund.channel.types import ETH, Address, State

from .conftest import CHALLENGE, ETH_HEX, ETHER, Setup


def test_cooperative_close_pays_both_receivers_in_one_call(setup: Setup) -> None:
    ch = setup.channel()
    r0 = ch.deposit(setup.alice, 0, ETHER)
    r1 = ch.deposit(setup.bob, 1, 2 * ETHER)
    assert ch.events(r0, "Deposited") == [
        {
            "channelID": ch.id,
            "participantIndex": 0,
            "asset": ETH_HEX,
            "amount": ETHER,
            "holding": ETHER,
        }
    ]
    assert ch.events(r1, "Deposited")[0]["holding"] == 2 * ETHER
    assert ch.holdings() == (ETHER, 2 * ETHER)
    assert setup.chain.balance(setup.contract.address) == 3 * ETHER

    final = ch.state(9, (ETHER + 123, 2 * ETHER - 123), final=True)
    receipt = ch.conclude_final(final, setup.carol)

    assert setup.chain.balance(ch.receivers[0]) == ETHER + 123
    assert setup.chain.balance(ch.receivers[1]) == 2 * ETHER - 123
    assert setup.chain.balance(setup.contract.address) == 0
    assert ch.events(receipt, "Concluded") == [{"channelID": ch.id, "version": 9}]
    assert ch.events(receipt, "PaidOut") == [
        {"channelID": ch.id, "receiver": ch.receivers[0], "asset": ETH_HEX,
         "amount": ETHER + 123, "pushed": True},
        {"channelID": ch.id, "receiver": ch.receivers[1], "asset": ETH_HEX,
         "amount": 2 * ETHER - 123, "pushed": True},
    ]  # fmt: skip
    assert ch.holdings() == (0, 0)
    assert ch.status() == (2, 0, 0, b"\x00" * 32)
    assert ch.owed(ch.receivers[0]) == 0 and ch.owed(ch.receivers[1]) == 0


def test_receivers_that_are_the_depositors_get_outcome_minus_fees(setup: Setup) -> None:
    chain = setup.chain
    ch = setup.channel(receivers=(bytes.fromhex(setup.alice[2:]), bytes.fromhex(setup.bob[2:])))
    before = (chain.balance(setup.alice), chain.balance(setup.bob))
    ch.deposit(setup.alice, 0, 3 * ETHER)
    ch.deposit(setup.bob, 1, ETHER)
    ch.conclude_final(ch.state(4, (ETHER // 2, 3 * ETHER + ETHER // 2), final=True), setup.alice)
    assert chain.balance(setup.alice) == before[0] - 3 * ETHER + ETHER // 2 - chain.fee_total(
        setup.alice
    )
    assert chain.balance(setup.bob) == before[1] - ETHER + 3 * ETHER + ETHER // 2 - chain.fee_total(
        setup.bob
    )


def test_dispute_register_refute_conclude_after_timeout(setup: Setup) -> None:
    chain = setup.chain
    ch = setup.channel()
    ch.deposit(setup.alice, 0, ETHER)
    ch.deposit(setup.bob, 1, ETHER)

    v1 = ch.state(1, (ETHER + 10, ETHER - 10))
    receipt = ch.register(v1, setup.alice)
    registered_at = chain.timestamp()
    timeout = registered_at + CHALLENGE
    assert ch.events(receipt, "Registered") == [
        {"channelID": ch.id, "version": 1, "timeout": timeout, "isFinal": False,
         "balances": [[ETHER + 10, ETHER - 10]]}
    ]  # fmt: skip
    assert ch.status() == (1, 1, timeout, state_hash(v1))

    v2 = ch.state(2, (ETHER - 77, ETHER + 77))
    receipt = ch.register(v2, setup.bob)
    # The refutation keeps the first timeout: a dispute cannot be stretched by refuting.
    assert ch.events(receipt, "Registered")[0]["timeout"] == timeout
    assert ch.status() == (1, 2, timeout, state_hash(v2))

    chain.advance(CHALLENGE)
    receipt = ch.conclude(v2, setup.carol)
    assert ch.events(receipt, "Concluded") == [{"channelID": ch.id, "version": 2}]
    assert chain.balance(ch.receivers[0]) == ETHER - 77
    assert chain.balance(ch.receivers[1]) == ETHER + 77
    assert chain.balance(setup.contract.address) == 0
    assert ch.status() == (2, 0, 0, b"\x00" * 32)


def test_registered_final_state_concludes_without_waiting(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, ETHER)
    final = ch.state(5, (0, ETHER), final=True)
    ch.register(final, setup.alice)
    ch.conclude(final, setup.bob)
    assert setup.chain.balance(ch.receivers[1]) == ETHER
    assert setup.chain.balance(ch.receivers[0]) == 0


def test_conclude_final_overrides_a_running_dispute(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, ETHER)
    ch.deposit(setup.bob, 1, ETHER)
    ch.register(ch.state(3, (ETHER, ETHER)), setup.alice)
    final = ch.state(4, (2 * ETHER, 0), final=True)
    ch.conclude_final(final, setup.bob)
    assert setup.chain.balance(ch.receivers[0]) == 2 * ETHER
    assert ch.status()[0] == 2


def test_reregistering_the_same_state_is_a_silent_no_op(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, ETHER)
    v1 = ch.state(1, (ETHER, 0))
    ch.register(v1, setup.alice)
    status = ch.status()
    receipt = ch.register(v1, setup.bob)
    assert ch.events(receipt, "Registered") == []
    assert ch.status() == status


def test_version_zero_unfunded_peer_everyone_gets_their_deposit_back(setup: Setup) -> None:
    """The funding-timeout path: only Alice funded; v0 says Bob has 1 ether he never paid."""
    chain = setup.chain
    ch = setup.channel()
    ch.deposit(setup.alice, 0, 2 * ETHER)
    v0 = ch.state(0, (2 * ETHER, ETHER))
    ch.register(v0, setup.alice)
    chain.advance(CHALLENGE)
    ch.conclude(v0, setup.alice)
    assert chain.balance(ch.receivers[0]) == 2 * ETHER
    assert chain.balance(ch.receivers[1]) == 0
    assert chain.balance(setup.contract.address) == 0


def test_underfunded_outcome_refunds_exact_deposits(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, ETHER)
    ch.deposit(setup.bob, 1, 5)
    # The outcome moves Bob's unpaid share to Alice, but the total is short by one wei.
    ch.conclude_final(ch.state(2, (ETHER + 6, 0), final=True), setup.alice)
    assert setup.chain.balance(ch.receivers[0]) == ETHER
    assert setup.chain.balance(ch.receivers[1]) == 5


def test_surplus_goes_back_to_who_deposited_more_than_its_outcome(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, 3 * ETHER)
    ch.deposit(setup.bob, 1, ETHER)
    # Outcome 0.5 / 2 of the 4 held: the surplus of 1.5 is Alice's (she over-deposited by 2.5),
    # Bob's outcome exceeds his deposit and he gets exactly it.
    ch.conclude_final(ch.state(2, (ETHER // 2, 2 * ETHER), final=True), setup.alice)
    assert setup.chain.balance(ch.receivers[0]) == 2 * ETHER
    assert setup.chain.balance(ch.receivers[1]) == 2 * ETHER
    assert setup.chain.balance(setup.contract.address) == 0


def test_surplus_split_when_both_deposited_more_than_their_outcome(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, 30)
    ch.deposit(setup.bob, 1, 12)
    ch.conclude_final(ch.state(2, (25, 10), final=True), setup.alice)
    assert setup.chain.balance(ch.receivers[0]) == 30
    assert setup.chain.balance(ch.receivers[1]) == 12


def test_top_up_deposits_add_up_per_participant(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, 1)
    receipt = ch.deposit(setup.carol, 0, 2)  # anyone may fund a participant's share
    ch.deposit(setup.bob, 1, 40)
    assert ch.events(receipt, "Deposited")[0]["holding"] == 3
    assert ch.holdings() == (3, 40)
    ch.conclude_final(ch.state(1, (43, 0), final=True), setup.bob)
    assert setup.chain.balance(ch.receivers[0]) == 43


def test_channels_do_not_share_holdings(setup: Setup) -> None:
    a = setup.channel()
    b = setup.channel()
    a.deposit(setup.alice, 0, 100)
    b.deposit(setup.alice, 1, 7)
    assert a.holdings() == (100, 0) and b.holdings() == (0, 7)
    a.conclude_final(a.state(1, (0, 100), final=True), setup.alice)
    assert b.holdings() == (0, 7)
    assert setup.chain.balance(setup.contract.address) == 7


def test_zero_outcome_pays_nothing_and_emits_no_payout(setup: Setup) -> None:
    ch = setup.channel()
    ch.deposit(setup.alice, 0, 50)
    receipt = ch.conclude_final(ch.state(1, (50, 0), final=True), setup.alice)
    assert [e["receiver"] for e in ch.events(receipt, "PaidOut")] == [ch.receivers[0]]


def test_state_with_a_token_hashes_and_concludes_paying_only_eth(setup: Setup) -> None:
    token = Address(b"\x00" * 19 + b"\xaa")
    ch = setup.channel()
    ch.deposit(setup.alice, 0, 10)
    state = State(ch.id, 3, (ETH, token), ((4, 6), (7, 0)), True)
    receipt = ch.conclude_final(state, setup.alice)
    # No token can be deposited yet: its outcome is underfunded and refunds the nothing deposited.
    assert [(e["receiver"], e["asset"], e["amount"]) for e in ch.events(receipt, "PaidOut")] == [
        (ch.receivers[0], ETH_HEX, 4),
        (ch.receivers[1], ETH_HEX, 6),
    ]


def test_eth_deposited_into_a_channel_whose_state_lists_no_eth_is_refunded(setup: Setup) -> None:
    token = Address(b"\x00" * 19 + b"\xaa")
    ch = setup.channel()
    ch.deposit(setup.alice, 0, 10)
    ch.deposit(setup.bob, 1, 3)
    state = State(ch.id, 3, (token,), ((5, 5),), True)
    receipt = ch.conclude_final(state, setup.alice)
    assert setup.chain.balance(ch.receivers[0]) == 10
    assert setup.chain.balance(ch.receivers[1]) == 3
    assert setup.chain.balance(setup.contract.address) == 0
    assert [e["pushed"] for e in ch.events(receipt, "PaidOut")] == [True, True]
