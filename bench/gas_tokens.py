"""Token lives of bench/gas.py: channels holding ETH and a token, or a token alone.

Each life uses a fresh TestToken (standard ERC20 with EIP-2612, contracts/test/TestToken.sol),
approves exactly what it deposits (one approve per token deposit, as Perun's figures were
measured), and checks every account's ETH and token balance to the unit at the end.
"""

from __future__ import annotations

from typing import Any

from gas_chain import CHALLENGE, ETHER, Run, as_params, as_state
from web3.contract import Contract

TOKENS = 100 * ETHER
"""Token units each participant deposits."""


def _deposit_token(
    run: Run, token: Contract, index: int, cid: bytes, amount: int
) -> dict[str, int]:
    """Participant `index` approves `amount` and deposits it with `deposit`."""
    sender = run.accounts[index]
    fn = run.adjudicator.functions
    calls = {
        f"approve_{index}": run.send(
            sender, token.functions.approve(run.adjudicator.address, amount)
        ),
        f"deposit_{index}": run.send(sender, fn.deposit(cid, index, token.address, amount)),
    }
    run.books.book(sender, token.address, -amount)
    return calls


def _fund_eth_and_token(
    run: Run, token: Contract, index: int, cid: bytes, eth: int, tokens: int, permit: bool
) -> dict[str, int]:
    """Participant `index` funds ETH and the token in one `fundParticipant`, after an approve
    transaction or with a permit executed inside it."""
    sender = run.accounts[index]
    fn = run.adjudicator.functions
    calls: dict[str, int] = {}
    permits: list[tuple[Any, ...]] = []
    if permit:
        permits.append(run.permit(token, index, tokens))
    else:
        calls[f"approve_{index}"] = run.send(
            sender, token.functions.approve(run.adjudicator.address, tokens)
        )
    call = fn.fundParticipant(cid, index, [run.eth, token.address], [eth, tokens], permits)
    calls[f"fundParticipant_{index}"] = run.send(sender, call, eth)
    run.books.book(sender, token.address, -tokens)
    return calls


def eth_token_cooperative(run: Run, permit: bool = False) -> dict[str, int]:
    """ETH + token: each participant approves and funds both assets in one transaction (or
    with a permit instead of the approve), then concludeFinal pays all four payouts."""
    token = run.token()
    run.open_books()
    params = run.params()
    cid = run.channel_id(params)
    calls: dict[str, int] = {}
    for index in (0, 1):
        calls.update(_fund_eth_and_token(run, token, index, cid, ETHER, TOKENS, permit))
    final = run.state(
        params,
        9,
        (run.eth, token.address),
        ((ETHER + ETHER // 3, ETHER - ETHER // 3), (TOKENS - 7, TOKENS + 7)),
        final=True,
    )
    calls["concludeFinal"] = run.send(
        run.accounts[0],
        run.adjudicator.functions.concludeFinal(
            as_params(params), as_state(final), run.sigs(params, final)
        ),
    )
    run.pay_out(params, final)
    run.books.check()
    return calls


def token_cooperative(run: Run) -> dict[str, int]:
    """Token only: approve + deposit each, concludeFinal paying both (and writing the
    concluded flag to a fresh slot: no ETH was ever deposited)."""
    token = run.token()
    run.open_books()
    params = run.params()
    cid = run.channel_id(params)
    calls: dict[str, int] = {}
    for index in (0, 1):
        calls.update(_deposit_token(run, token, index, cid, TOKENS))
    final = run.state(params, 4, (token.address,), ((TOKENS // 2, TOKENS * 3 // 2),), final=True)
    calls["concludeFinal"] = run.send(
        run.accounts[1],
        run.adjudicator.functions.concludeFinal(
            as_params(params), as_state(final), run.sigs(params, final)
        ),
    )
    run.pay_out(params, final)
    run.books.check()
    return calls


def eth_token_dispute(run: Run) -> dict[str, int]:
    """ETH + token: approve and fund each, register v1, refute with v2, conclude after the
    challenge period paying all four payouts."""
    token = run.token()
    run.open_books()
    params = run.params()
    cid = run.channel_id(params)
    fn = run.adjudicator.functions
    calls: dict[str, int] = {}
    for index in (0, 1):
        calls.update(_fund_eth_and_token(run, token, index, cid, ETHER, TOKENS, permit=False))
    assets = (run.eth, token.address)
    v1 = run.state(params, 1, assets, ((ETHER + ETHER // 2, ETHER // 2), (TOKENS + 5, TOKENS - 5)))
    v2 = run.state(
        params, 2, assets, ((ETHER - ETHER // 4, ETHER + ETHER // 4), (3, 2 * TOKENS - 3))
    )
    alice, bob = run.accounts[:2]
    calls["register"] = run.send(
        alice, fn.register(as_params(params), as_state(v1), run.sigs(params, v1))
    )
    calls["refute"] = run.send(
        bob, fn.register(as_params(params), as_state(v2), run.sigs(params, v2))
    )
    run.advance(CHALLENGE)
    calls["conclude"] = run.send(bob, fn.conclude(as_params(params), as_state(v2)))
    run.pay_out(params, v2)
    run.books.check()
    return calls


def permit_deposit(run: Run) -> int:
    """One `fundParticipant` of a token alone with a permit (no approve transaction), into a
    fresh holdings slot: the counterpart of an approve plus a deposit."""
    token = run.token()
    run.open_books()
    params = run.params()
    cid = run.channel_id(params)
    sender = run.accounts[0]
    call = run.adjudicator.functions.fundParticipant(
        cid, 0, [token.address], [TOKENS], [run.permit(token, 0, TOKENS)]
    )
    gas = run.send(sender, call)
    run.books.book(sender, token.address, -TOKENS)
    run.books.check()
    return gas
