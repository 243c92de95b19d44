"""The payout rule: outcome, surplus back to the over-depositor, refund when underfunded.

A hypothesis test drives random deposits and outcomes through the deployed contract and checks
every receiver's balance against the rule, and that the two payouts always add up to exactly what
the channel held (nothing lost, nothing created).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from perund.channel.encoding import Signer
from perund.channel.types import UINT256_MAX

from .conftest import ADJUDICATOR_JSON, Chain, Channel, load_artifact


def expected_payout(d0: int, d1: int, o0: int, o1: int) -> tuple[int, int]:
    """The payout rule (docs/specification.md §2, docs/contract.md), in plain Python."""
    held, total = d0 + d1, o0 + o1
    if held < total:
        return (d0, d1)
    surplus = held - total
    return (o0 + min(surplus, max(0, d0 - o0)), o1 + min(surplus, max(0, d1 - o1)))


amounts = st.one_of(st.integers(0, 10**21), st.sampled_from([0, 1, 10**18]))
outcomes = st.one_of(amounts, st.sampled_from([UINT256_MAX, 2**255]))


@given(d0=amounts, d1=amounts, o0=outcomes, o1=outcomes)
def test_rule_conserves_the_holdings(d0: int, d1: int, o0: int, o1: int) -> None:
    p0, p1 = expected_payout(d0, d1, o0, o1)
    assert p0 + p1 == d0 + d1
    assert p0 >= 0 and p1 >= 0
    if d0 + d1 >= o0 + o1:
        assert p0 >= o0 and p1 >= o1  # a funded outcome is always honoured


@pytest.fixture(scope="module")
def tester_setup(eth_tester_chain: Chain) -> tuple[Chain, object]:
    return eth_tester_chain, eth_tester_chain.deploy(load_artifact(ADJUDICATOR_JSON))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(d0=amounts, d1=amounts, o0=outcomes, o1=outcomes)
@example(d0=3, d1=1, o0=0, o1=2)  # surplus 2: all of it is participant 0's
@example(d0=30, d1=12, o0=25, o1=10)  # both over-deposited: each gets its own excess back
@example(d0=5, d1=0, o0=0, o1=6)  # underfunded by one: refunds
@example(d0=1, d1=1, o0=UINT256_MAX, o1=UINT256_MAX)  # the outcome's sum overflows uint256
def test_contract_pays_by_the_rule(
    tester_setup: tuple[Chain, object], d0: int, d1: int, o0: int, o1: int
) -> None:
    chain, contract = tester_setup
    alice, bob = chain.accounts[1], chain.accounts[2]
    ch = Channel(
        chain,
        contract,  # type: ignore[arg-type]
        (Signer(os.urandom(32)), Signer(os.urandom(32))),
        (os.urandom(20), os.urandom(20)),
        int.from_bytes(os.urandom(8), "big"),
    )
    if d0:
        ch.deposit(alice, 0, d0)
    if d1:
        ch.deposit(bob, 1, d1)
    ch.conclude_final(ch.state(1, (o0, o1), final=True), alice)
    paid = (chain.balance(ch.receivers[0]), chain.balance(ch.receivers[1]))
    assert paid == expected_payout(d0, d1, o0, o1)
    assert sum(paid) == d0 + d1
