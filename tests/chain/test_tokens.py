"""Tokens through the chain backend, on anvil: deposits of ETH and tokens in one transaction with
a permit or after approvals, USDT-style tokens, the reads, bad input; and the embedded dev
chain's test token PRN."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList

from perund.chain.abi import ContractCodec
from perund.chain.account import Account
from perund.chain.anvil import Anvil
from perund.chain.artifact import ContractArtifact, load_artifact
from perund.chain.backend import ChainBackend
from perund.chain.embedded import DEV_TOKEN_SUPPLY, EmbeddedChain, dev_token_address
from perund.chain.tokens import TokenInfo
from perund.channel import events as ev
from perund.channel.encoding import Signer, channel_id
from perund.channel.types import ETH, Address, ChannelID, Params, State
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvalidContracts,
    PeerNotFunded,
    PerundError,
    TxReverted,
)
from perund.session.onchain import ChainSettlement
from tests.chain.conftest import ANVIL_CHAIN_ID, ETHER, make_backend

TEST_ARTIFACTS = Path(__file__).resolve().parents[1] / "contracts" / "artifacts"
MINTED = 1_000 * ETHER


@pytest_twisted.async_yield_fixture
async def backend(anvil_node: Anvil) -> AsyncIterator[ChainBackend]:
    """A backend on the session's anvil with a fresh Adjudicator."""
    chain = make_backend(anvil_node.url, ANVIL_CHAIN_ID)
    try:
        await chain.connect()
        await chain.deploy_adjudicator(Account(anvil_node.private_keys[0]))
        yield chain
    finally:
        chain.stopService()


async def deploy_token(chain: ChainBackend, anvil: Anvil, artifact: ContractArtifact,
                       *args: Any) -> Address:
    """Deploy a token, minting MINTED for dev accounts 1 and 2."""
    codec = ContractCodec(artifact.abi)
    deployer = Account(anvil.private_keys[0])
    receipt = await chain.sender.transact(
        deployer, "deploy", None, codec.encode_constructor(artifact.bytecode, *args))
    assert receipt.contract_address is not None
    token = Address(receipt.contract_address)
    for key in anvil.private_keys[1:3]:
        mint = codec.encode_call("mint", Account(key).address, MINTED)
        await chain.sender.transact(deployer, "mint", token, mint)
    return token


def no_bool_artifact() -> ContractArtifact:
    return ContractArtifact.from_json(json.loads((TEST_ARTIFACTS / "NoBoolToken.json").read_text()))


def deposited(receipt: Any) -> list[tuple[Address, int]]:
    return [(e.args["asset"], e.args["amount"]) for e in receipt.events if e.name == "Deposited"]


@pytest_twisted.ensureDeferred
async def test_eth_and_a_permit_token_fund_in_one_transaction(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    token = await deploy_token(backend, anvil_node, load_artifact("TestToken"), "Test", "TST")
    alice = Account(anvil_node.private_keys[1])
    cid = ChannelID(os.urandom(32))
    before = await backend.token_balance(token, alice.address)
    receipts = await backend.fund(alice, cid, 0, [(ETH, ETHER), (token, 5 * ETHER)])
    # No approve transaction: the permit went inside the deposit.
    assert [r.tx_type for r in receipts] == ["fundParticipant"]
    assert deposited(receipts[0]) == [(ETH, ETHER), (token, 5 * ETHER)]
    assert await backend.holdings(cid, ETH) == (ETHER, 0)
    assert await backend.holdings(cid, token) == (5 * ETHER, 0)
    assert await backend.token_balance(token, alice.address) == before - 5 * ETHER
    assert await backend.token_allowance(token, alice.address) == 0
    funds = await backend.channel_funds([(cid, (ETH, token))])
    assert funds[0][1] == (ETHER, 5 * ETHER)


@pytest_twisted.ensureDeferred
async def test_without_permits_the_token_is_approved_first(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    token = await deploy_token(backend, anvil_node, load_artifact("TestToken"), "Test", "TST")
    bob = Account(anvil_node.private_keys[2])
    cid = ChannelID(os.urandom(32))
    receipts = await backend.fund(bob, cid, 1, [(token, 7)], use_permits=False)
    assert [r.tx_type for r in receipts] == ["approve", "fundParticipant"]
    assert await backend.holdings(cid, token) == (0, 7)
    # An allowance that covers the deposit needs neither a permit nor an approve.
    await backend.approve_token(bob, token, 10)
    receipts = await backend.fund(bob, cid, 1, [(token, 4)])
    assert [r.tx_type for r in receipts] == ["fundParticipant"]
    assert await backend.token_allowance(token, bob.address) == 6
    assert await backend.holdings(cid, token) == (0, 11)


@pytest_twisted.ensureDeferred
async def test_a_usdt_style_token_is_approved_through_zero(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    token = await deploy_token(backend, anvil_node, no_bool_artifact())
    alice = Account(anvil_node.private_keys[1])
    cid = ChannelID(os.urandom(32))
    # No EIP-2612 here: an approve, whose missing return value is fine.
    receipts = await backend.fund(alice, cid, 0, [(ETH, 1), (token, 3)])
    assert [r.tx_type for r in receipts] == ["approve", "fundParticipant"]
    # A nonzero allowance too small for the next deposit: the token refuses to change it
    # directly, so it is set to zero first.
    await backend.approve_token(alice, token, 1)
    receipts = await backend.fund(alice, cid, 0, [(token, 2)])
    assert [r.tx_type for r in receipts] == ["approve", "approve", "fundParticipant"]
    assert await backend.holdings(cid, token) == (5, 0)
    assert await backend.holdings(cid, ETH) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_token_reads(backend: ChainBackend, anvil_node: Anvil) -> None:
    token = await deploy_token(backend, anvil_node, load_artifact("TestToken"), "Test", "TST")
    assert await backend.token_info(token) == TokenInfo(token, "TST", 18)
    holder = Account(anvil_node.private_keys[1]).address
    assert await backend.token_balance(token, holder) >= 0
    for not_a_token in (Address(os.urandom(20)), backend.require_adjudicator()):
        with pytest.raises(InvalidContracts):
            await backend.token_info(not_a_token)


@pytest_twisted.ensureDeferred
async def test_bad_deposits_are_refused_before_anything_is_sent(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    token = await deploy_token(backend, anvil_node, load_artifact("TestToken"), "Test", "TST")
    alice = Account(anvil_node.private_keys[1])
    cid = ChannelID(os.urandom(32))
    for index, deposits in ((2, [(ETH, 1)]), (0, []), (0, [(ETH, 0)]), (0, [(token, -1)])):
        with pytest.raises(InvalidArgument):
            await backend.fund(alice, cid, index, deposits)
    with pytest.raises(InvalidContracts):  # no token at that address
        await backend.fund(alice, cid, 0, [(Address(os.urandom(20)), 1)])
    # More than the account holds: the permit is fine, the deposit's preflight is not.
    with pytest.raises(TxReverted) as refused:
        await backend.fund(alice, cid, 0, [(token, MINTED + 1)])
    assert refused.value.data["error"] == "TokenTransferFailed"
    assert await backend.holdings(cid, token) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_the_embedded_chain_deploys_prn_and_keeps_it(tmp_path: Path) -> None:
    devchain = EmbeddedChain(reactor, tmp_path / "devchain", state_interval=1.0)
    chain = ChainBackend(reactor, url="http://pending", chain_id=devchain.chain_id,
                         receipt_poll_interval=0.02)
    chain.startService()
    try:
        chain.use_url(await devchain.start())
        assert devchain.fresh
        await chain.connect()
        await chain.run_blocking(devchain.fund_dev_accounts_blocking)
        devchain.record(await chain.deploy_adjudicator(devchain.dev_account(0)))
        assert devchain.recorded_test_token() is None
        token = await devchain.add_test_token(chain)
        # Where `perund generate` says it is: dev account 0's second creation.
        assert token == dev_token_address()
        assert devchain.recorded_test_token_info() == ("PRN", token, 18)
        assert await chain.token_info(token) == TokenInfo(token, "PRN", 18)
        for key in devchain.private_keys:
            assert await chain.token_balance(token, Account(key).address) == DEV_TOKEN_SUPPLY
        recorded = json.loads((devchain.folder / "devchain.json").read_text())
        assert recorded["testToken"]["symbol"] == "PRN"
        assert recorded["testToken"]["decimals"] == 18
        assert devchain.recorded_test_token() == token
        assert devchain.recorded_adjudicator() == chain.adjudicator
    finally:
        await devchain.stop()
        chain.stopService()
    # Started again on its saved state: the token and the balances are still there.
    again = EmbeddedChain(reactor, tmp_path / "devchain")
    chain = ChainBackend(reactor, url="http://pending", chain_id=again.chain_id,
                         adjudicator=again.recorded_adjudicator())
    chain.startService()
    try:
        chain.use_url(await again.start())
        assert not again.fresh
        await chain.connect()
        assert again.recorded_test_token() == token
        holder = again.dev_account(3).address
        assert await chain.token_balance(token, holder) == DEV_TOKEN_SUPPLY
    finally:
        await again.stop()
        chain.stopService()


@pytest.mark.parametrize("use_permits", [True, False])
@pytest_twisted.ensureDeferred
async def test_one_account_funding_two_channels_at_once_funds_both(
    backend: ChainBackend, anvil_node: Anvil, use_permits: bool
) -> None:
    """Each funding reads the allowance, then grants and spends it: two at once from one
    account must not overwrite or spend each other's (a permit's nonce, an approval)."""
    token = await deploy_token(backend, anvil_node, load_artifact("TestToken"), "Test", "TST")
    alice = Account(anvil_node.private_keys[1])
    first, second = ChannelID(os.urandom(32)), ChannelID(os.urandom(32))
    both = await DeferredList([
        backend.fund(alice, first, 0, [(token, 3 * ETHER)], use_permits=use_permits),
        backend.fund(alice, second, 1, [(ETH, ETHER), (token, 4 * ETHER)],
                     use_permits=use_permits)], consumeErrors=True)
    assert all(ok for ok, _ in both), both
    assert await backend.holdings(first, token) == (3 * ETHER, 0)
    assert await backend.holdings(second, token) == (0, 4 * ETHER)
    assert await backend.holdings(second, ETH) == (0, ETHER)


@pytest_twisted.ensureDeferred
async def test_a_session_funds_every_asset_in_one_deposit_and_never_twice(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    """ChainSettlement: ETH and a token in one fundParticipant (after the token's allowance),
    every transaction counted; a restart that funds again deposits nothing more; the peer's
    token-only share is waited for."""
    token = await deploy_token(backend, anvil_node, load_artifact("TestToken"), "Test", "TST")
    alice, bob = Account(anvil_node.private_keys[1]), Account(anvil_node.private_keys[2])
    assert backend.chain_id is not None and backend.adjudicator is not None
    params = Params(60, int.from_bytes(os.urandom(32), "big"),
                    (Signer(os.urandom(32)).address, Signer(os.urandom(32)).address),
                    (alice.address, bob.address))
    cid = channel_id(backend.chain_id, backend.adjudicator, params)
    assets, balances = (ETH, token), ((ETHER, 0), (5 * ETHER, 7 * ETHER))
    mine, theirs = ev.Fund(cid, params, 0, assets, balances), ev.Fund(cid, params, 1, assets,
                                                                      balances)
    ours = ChainSettlement(reactor, backend, alice, poll_interval=0.05, funding_timeout=0.3,
                           use_permits=False)
    with pytest.raises(PeerNotFunded):
        await ours.fund(mine)
    assert [r.tx_type for r in ours.receipts] == ["approve", "fundParticipant"]
    assert ours.fees_paid == sum(r.fee for r in ours.receipts) > 0
    # The node restarts and funds again: nothing more is deposited; bob's token share comes.
    again = ChainSettlement(reactor, backend, alice, poll_interval=0.05, funding_timeout=10.0)
    waiting = again.fund(mine)
    bobs = ChainSettlement(reactor, backend, bob, poll_interval=0.05, funding_timeout=10.0)
    await bobs.fund(theirs)
    await waiting
    assert again.receipts == []
    assert [r.tx_type for r in bobs.receipts] == ["fundParticipant"]  # a permit inside it
    assert await backend.holdings(cid, ETH) == (ETHER, 0)
    assert await backend.holdings(cid, token) == (5 * ETHER, 7 * ETHER)


@pytest_twisted.ensureDeferred
async def test_a_session_deposits_nothing_in_a_token_the_node_disabled(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    """A channel restored in its funding (or funded again after a reorganisation) holds a
    token the node disabled at its start: not a unit of ours goes in, not even the approval,
    and the funding fails saying why; the same channel in ETH alone is funded."""
    token = await deploy_token(backend, anvil_node, load_artifact("TestToken"), "Test", "TST")
    alice = Account(anvil_node.private_keys[1])
    assert backend.chain_id is not None and backend.adjudicator is not None
    params = Params(60, int.from_bytes(os.urandom(32), "big"),
                    (Signer(os.urandom(32)).address, Signer(os.urandom(32)).address),
                    (alice.address, Account(anvil_node.private_keys[2]).address))
    cid = channel_id(backend.chain_id, backend.adjudicator, params)
    disabled = {token: "no decimals()"}
    ours = ChainSettlement(reactor, backend, alice, poll_interval=0.05, funding_timeout=0.3,
                           use_permits=False, refused_asset=disabled.get)
    with pytest.raises(FailedPrecondition, match=r"not depositing .*no decimals\(\)"):
        await ours.fund(ev.Fund(cid, params, 0, (ETH, token), ((ETHER, 0), (5, 0))))
    assert ours.receipts == []
    assert await backend.holdings(cid, ETH) == (0, 0)
    with pytest.raises(PeerNotFunded):  # ETH alone is deposited; bob never funds
        await ours.fund(ev.Fund(cid, params, 0, (ETH,), ((ETHER, ETHER),)))
    assert await backend.holdings(cid, ETH) == (ETHER, 0)


@pytest_twisted.ensureDeferred
async def test_an_approval_counts_even_when_the_deposit_after_it_fails(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    """A fee-on-transfer token is approved, then its deposit is refused (the contract takes
    exact amounts only): the approval's gas was spent, and the caller's list has its receipt."""
    artifact = ContractArtifact.from_json(
        json.loads((TEST_ARTIFACTS / "FeeToken.json").read_text()))
    token = await deploy_token(backend, anvil_node, artifact)
    alice = Account(anvil_node.private_keys[1])
    sent: list[Any] = []
    with pytest.raises(PerundError, match="TransferMismatch"):
        await backend.fund(alice, ChannelID(os.urandom(32)), 0, [(token, 1_000)],
                           use_permits=False, sent=sent)
    assert [r.tx_type for r in sent] == ["approve"] and sent[0].fee > 0


@pytest_twisted.ensureDeferred
async def test_a_credited_payout_is_withdrawn_once_the_token_lets_it_go(
    backend: ChainBackend, anvil_node: Anvil
) -> None:
    """The token refuses the conclusion's payout, so the Adjudicator credits it; the session's
    withdraw fails while the token still refuses, then gets every unit, then has nothing to
    do (no transaction)."""
    artifact = ContractArtifact.from_json(
        json.loads((TEST_ARTIFACTS / "HostileToken.json").read_text()))
    token = await deploy_token(backend, anvil_node, artifact)
    codec = ContractCodec(artifact.abi)
    deployer, alice = Account(anvil_node.private_keys[0]), Account(anvil_node.private_keys[1])
    assert backend.chain_id is not None and backend.adjudicator is not None
    signers = (Signer(os.urandom(32)), Signer(os.urandom(32)))
    params = Params(60, int.from_bytes(os.urandom(32), "big"),
                    (signers[0].address, signers[1].address),
                    (alice.address, Account(anvil_node.private_keys[2]).address))
    cid = channel_id(backend.chain_id, backend.adjudicator, params)
    await backend.fund(alice, cid, 0, [(token, 5)], use_permits=False)
    revert_on_transfer = codec.encode_call("setMode", 2, True)
    await backend.sender.transact(deployer, "setMode", token, revert_on_transfer)
    final = State(cid, 1, (token,), ((5, 0),), True)
    await backend.conclude_final(alice, params, final,
                                 (signers[0].sign_state(final), signers[1].sign_state(final)))
    assert await backend.owed(alice.address, token) == 5
    ours = ChainSettlement(reactor, backend, alice)
    with pytest.raises(TxReverted, match="TransferFailed"):
        await ours.withdraw_owed(token)
    before = await backend.token_balance(token, alice.address)
    await backend.sender.transact(deployer, "setMode", token, codec.encode_call("setMode", 0, True))
    assert await ours.withdraw_owed(token) == 5
    assert await backend.token_balance(token, alice.address) == before + 5
    sent = len(ours.receipts)
    assert await ours.withdraw_owed(token) == 0 and len(ours.receipts) == sent
