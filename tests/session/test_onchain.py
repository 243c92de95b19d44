"""ChainSettlement on the embedded chain: deposits are never made twice, count once confirmed,
and a watcher's news of one ends a funding wait at once."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.encoding import Signer, channel_id
from perund.channel.steps import register_latest
from perund.channel.types import ETH, Params, hex_address
from perund.errors import ChainRpcError, PeerNotFunded, TxReverted, TxTimedOut
from perund.session.onchain import ChainSettlement

from .conftest import ETHER, Pair, open_between


def funding(chain: ChainBackend, a: Account, b: Account) -> tuple[ev.Fund, ev.Fund]:
    assert chain.chain_id is not None and chain.adjudicator is not None
    params = Params(60, int.from_bytes(os.urandom(32), "big"),
                    (Signer(os.urandom(32)).address, Signer(os.urandom(32)).address),
                    (a.address, b.address))
    cid = channel_id(chain.chain_id, chain.adjudicator, params)
    balances = ((2 * ETHER, ETHER),)
    return (ev.Fund(cid, params, 0, (ETH,), balances), ev.Fund(cid, params, 1, (ETH,), balances))


def two_accounts(chain: ChainBackend) -> tuple[Account, Account, ev.Fund, ev.Fund]:
    """alice's and bob's accounts (dev accounts 1 and 2) and their `funding` of a channel."""
    keys = chain.dev_private_keys()
    alice, bob = Account(keys[1]), Account(keys[2])
    mine, theirs = funding(chain, alice, bob)
    return alice, bob, mine, theirs


async def _bob_funds_too(chain: ChainBackend, bob: Account, theirs: ev.Fund,
                         funded: Deferred[None]) -> None:
    """bob deposits his share; alice's funding (`funded`) then ends, both shares held once."""
    await ChainSettlement(reactor, chain, bob, poll_interval=0.02).fund(theirs)
    await funded
    assert await chain.holdings(theirs.channel_id) == (2 * ETHER, ETHER)


@pytest_twisted.ensureDeferred
async def test_a_restarted_funding_does_not_deposit_twice(chain: ChainBackend) -> None:
    keys = chain.dev_private_keys()
    alice, bob = Account(keys[1]), Account(keys[2])
    first = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=0.2)
    mine, theirs = funding(chain, alice, bob)
    with pytest.raises(PeerNotFunded):
        await first.fund(mine)  # bob never funds: our deposit is made, then the deadline
    assert len(first.receipts) == 1
    # The node restarts and funds again: the deposit on-chain is recognised, not repeated.
    again = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=5.0)
    bobs = ChainSettlement(reactor, chain, bob, poll_interval=0.02, funding_timeout=5.0)
    await bobs.fund(theirs)
    await again.fund(mine)
    assert again.receipts == [] and len(bobs.receipts) == 1
    assert await chain.holdings(mine.channel_id) == (2 * ETHER, ETHER)


async def _settles(d: Deferred[None], seconds: float) -> bool:
    """Whether `d` fires within `seconds` (it keeps running either way)."""
    waited = 0.0
    while not d.called and waited < seconds:
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02
    return d.called


@pytest_twisted.ensureDeferred
async def test_funding_counts_deposits_only_once_they_are_confirmed(
        chain: ChainBackend) -> None:
    alice, bob, mine, theirs = two_accounts(chain)
    ours = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=30.0,
                           confirmations=3)
    funded = ours.fund(mine)
    assert not await _settles(funded, 0.3)  # bob's share is missing
    # Bob's node counts what the newest block holds; its deposit is that block.
    await ChainSettlement(reactor, chain, bob, poll_interval=0.02, funding_timeout=30.0).fund(
        theirs)
    assert await chain.holdings(mine.channel_id) == (2 * ETHER, ETHER)  # held, unconfirmed
    assert not await _settles(funded, 0.5)
    await chain.mine()
    await chain.mine()
    assert not await _settles(funded, 0.3)  # two blocks above bob's deposit: still short
    await chain.mine()
    assert await _settles(funded, 2.0)
    await funded


@pytest_twisted.ensureDeferred
async def test_news_of_a_deposit_wakes_a_funding_wait(chain: ChainBackend) -> None:
    alice, bob, mine, theirs = two_accounts(chain)
    # Without news, the holdings are read again only every 60 s.
    ours = ChainSettlement(reactor, chain, alice, funding_timeout=120.0, funding_recheck=60.0)
    funded = ours.fund(mine)
    assert not await _settles(funded, 0.5)  # deposited ours; bob's is missing
    await ChainSettlement(reactor, chain, bob, poll_interval=0.02).fund(theirs)
    assert not await _settles(funded, 0.5)  # nobody told: the next read is a minute away
    ours.deposit_seen(mine.channel_id)
    assert await _settles(funded, 2.0)
    await funded
    assert ours._deposit_news == {}


@pytest_twisted.ensureDeferred
async def test_a_deposit_is_logged_in_its_currency_with_the_wei_kept_as_a_field(
        chain: ChainBackend) -> None:
    alice, bob, mine, theirs = two_accounts(chain)
    ours = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=30.0)
    with capturedLogs() as events:
        await gatherResults([ours.fund(mine), ChainSettlement(
            reactor, chain, bob, poll_interval=0.02).fund(theirs)])
    deposited = sorted((e for e in events if "deposits" in e), key=lambda e: e["deposits"])
    assert [e["deposits"] for e in deposited] == [[(hex_address(ETH), ETHER)],  # bob's
                                                  [(hex_address(ETH), 2 * ETHER)]]  # alice's
    for event, shown in zip(deposited, ("1 ETH", "2 ETH"), strict=True):
        assert formatEvent(event).startswith(
            f"channel 0x{mine.channel_id.hex()}: deposited {shown} in block ")
        assert "(1 transaction, gas " in formatEvent(event)


@pytest_twisted.ensureDeferred
async def test_a_cancelled_funding_wait_leaves_nothing_behind(chain: ChainBackend) -> None:
    alice, _, mine, _ = two_accounts(chain)
    ours = ChainSettlement(reactor, chain, alice, funding_timeout=120.0, funding_recheck=60.0)
    funded = ours.fund(mine)
    assert not await _settles(funded, 0.5)
    funded.cancel()
    with pytest.raises(CancelledError):
        await funded
    assert ours._deposit_news == {}
    assert not any(call.active() for call in reactor.getDelayedCalls()
                   if getattr(call.func, "__name__", "") == "_wake")


class _EarlierDepositLands:
    """The chain as a node sees it when a deposit of its own sent earlier (before a restart)
    is mined just as the one it sends now fails."""

    def __init__(self, chain: ChainBackend, error: Exception) -> None:
        self._chain = chain
        self._error = error

    def __getattr__(self, name: str) -> object:
        return getattr(self._chain, name)

    async def deposit(self, account: Account, cid: bytes, index: int, asset: bytes,
                      amount: int) -> None:
        await self._chain.deposit(account, cid, index, asset, amount)  # the earlier one
        raise self._error


@pytest.mark.parametrize("error", [
    TxTimedOut("the deposit transaction 0x12 was not mined within 15 s"),
    TxReverted("fundParticipant reverted: TokenTransferFailed", error="TokenTransferFailed"),
], ids=["timed-out", "reverted"])
@pytest_twisted.ensureDeferred
async def test_a_failed_deposit_is_no_failure_when_the_chain_holds_our_share(
        chain: ChainBackend, error: Exception) -> None:
    """After our deposit fails (timed out, or reverted as the second of two), the holdings
    are read again: a funded channel is not taken for an unfunded one."""
    alice, bob, mine, theirs = two_accounts(chain)
    ours = ChainSettlement(reactor, cast(ChainBackend, _EarlierDepositLands(chain, error)), alice,
                           poll_interval=0.02, funding_timeout=5.0)
    funded = ours.fund(mine)
    await _bob_funds_too(chain, bob, theirs, funded)


@pytest_twisted.ensureDeferred
async def test_a_deposit_mined_after_its_receipt_timed_out_still_funds_the_channel(
        chain: ChainBackend) -> None:
    """Not mined within `tx_timeout` is not failed: the funding wait goes on reading the
    holdings, ours too, and the channel opens when the deposit lands (it used to be taken for
    unfunded, disputed, and the user told the deposit failed)."""
    alice, bob, mine, theirs = two_accounts(chain)
    chain.sender.tx_timeout = 0.2
    await chain.set_automine(False)
    ours = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=5.0)
    funded = ours.fund(mine)
    assert not await _settles(funded, 0.6)  # the receipt timed out; the wait goes on
    await chain.mine()
    await chain.set_automine(True)
    chain.sender.tx_timeout = 20.0
    await _bob_funds_too(chain, bob, theirs, funded)


@pytest_twisted.ensureDeferred
async def test_a_deposit_never_mined_fails_the_funding_at_its_deadline_as_ours(
        chain: ChainBackend) -> None:
    alice, _, mine, _ = two_accounts(chain)
    chain.sender.tx_timeout = 0.2
    await chain.set_automine(False)
    try:
        ours = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=0.5)
        with pytest.raises(TxTimedOut):  # ours is missing: not the peer's fault
            await ours.fund(mine)
    finally:
        await chain.mine()
        await chain.set_automine(True)


@pytest_twisted.ensureDeferred
async def test_a_lost_reply_to_our_deposit_neither_fails_the_funding_nor_deposits_twice(
        chain: ChainBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain took our deposit, but its reply to eth_sendRawTransaction was a load
    balancer's error (the chain review: the open failed and a funded channel was disputed).
    The funding tries again: it waits for our earlier transaction, reads the holdings, finds
    our share there and deposits nothing more. One holdings read failing is tried again too."""
    alice, bob, mine, theirs = two_accounts(chain)
    client = chain.client
    real_send, real_call = client.send_raw_blocking, client.call_blocking
    lost = [1, 1]

    def reply_lost(tx_type: str, raw: bytes) -> bytes:
        sent = real_send(tx_type, raw)
        if lost[0]:
            lost[0] -= 1
            raise ChainRpcError("eth_sendRawTransaction", -32000, "upstream request timeout")
        return sent

    def read_failed(*args: object, **kwargs: object) -> object:
        if lost[0] == 0 and lost[1]:
            lost[1] -= 1
            raise ChainRpcError("eth_call", -32000, "header not found")
        return real_call(*args, **kwargs)

    monkeypatch.setattr(client, "send_raw_blocking", reply_lost)
    monkeypatch.setattr(client, "call_blocking", read_failed)
    ours = ChainSettlement(reactor, chain, alice, poll_interval=0.02, funding_timeout=5.0,
                           funding_recheck=0.05)
    funded = ours.fund(mine)
    await _bob_funds_too(chain, bob, theirs, funded)
    assert lost == [0, 0] and ours.receipts == []  # its receipt was never read: no second


class _DepositsFailAWhile:
    """A chain whose deposits fail with an error of unknown outcome until `until` (reactor
    seconds), then go through."""

    def __init__(self, chain: ChainBackend, until: float) -> None:
        self._chain = chain
        self._until = until

    def __getattr__(self, name: str) -> object:
        return getattr(self._chain, name)

    async def deposit(self, account: Account, cid: bytes, index: int, asset: bytes,
                      amount: int) -> object:
        if reactor.seconds() < self._until:
            raise ChainRpcError("eth_sendRawTransaction", -32000, "header not found")
        return await self._chain.deposit(account, cid, index, asset, amount)


@pytest_twisted.ensureDeferred
async def test_the_funding_deadline_counts_from_the_start_however_long_our_deposit_took(
        chain: ChainBackend) -> None:
    """Our deposit's tries and the wait for the peer's share one deadline: a deposit that
    took most of `funding_timeout` does not buy the peer another whole one."""
    alice, _, mine, _ = two_accounts(chain)
    start = reactor.seconds()
    ours = ChainSettlement(reactor, cast(ChainBackend, _DepositsFailAWhile(chain, start + 1.5)),
                           alice, poll_interval=0.02, funding_timeout=2.0, funding_recheck=0.1)
    with pytest.raises(PeerNotFunded):
        await ours.fund(mine)
    # Ours went through after 1.5 s; the peer's never came: the deadline at 2 s, not 3.5 s.
    assert await chain.holdings(mine.channel_id) == (2 * ETHER, 0)
    assert reactor.seconds() - start < 3.0


class _CountsConcludes:
    """The chain, counting the conclude transactions sent through it (they go through)."""

    def __init__(self, chain: ChainBackend) -> None:
        self._chain = chain
        self.sent = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._chain, name)

    async def conclude(self, account: Account, params: Params, state: object) -> object:
        self.sent += 1
        return await self._chain.conclude(account, params, state)  # type: ignore[arg-type]

    async def conclude_final(self, account: Account, params: Params, state: object,
                             sigs: object) -> object:
        self.sent += 1
        return await self._chain.conclude_final(account, params, state, sigs)  # type: ignore


@pytest.mark.parametrize("registrar", ["alice", "bob"])
@pytest_twisted.ensureDeferred
async def test_after_a_restart_one_side_concludes_a_dispute(pair: Pair, registrar: str) -> None:
    """Who registered is known in memory only: after a restart of both sides neither knows it,
    and both waited the same grace and concluded at once, one of them paying for a revert. The
    side whose receiver the channel lists first now concludes after the grace, the other after
    twice the grace, and only if nobody did."""
    cid = await open_between(pair.alice, pair.bob, 2 * ETHER, ETHER)
    registering = getattr(pair, registrar)
    register = register_latest(registering.client.channels[cid])
    chain = _CountsConcludes(pair.chain)
    await ChainSettlement(reactor, cast(ChainBackend, chain), registering.account,
                          poll_interval=0.05).register(register)
    await pair.chain.advance_time(61)
    # Both nodes restart: new settlements, nothing remembered of the registration.
    restarted = [ChainSettlement(reactor, cast(ChainBackend, chain), user.account,
                                 poll_interval=0.05, conclude_grace=0.5)
                 for user in (pair.alice, pair.bob)]
    conclude = ev.Conclude(cid, register.params, register.state)
    both = await gatherResults([settlement.conclude(conclude) for settlement in restarted])
    assert chain.sent == 1
    assert [c.version for c in both] == [register.state.version] * 2  # type: ignore[union-attr]
    assert sum(len(settlement.receipts) for settlement in restarted) == 1


@pytest_twisted.ensureDeferred
async def test_after_a_restart_while_closing_one_side_concludes_the_final_state(
        pair: Pair) -> None:
    """A restart while closing makes neither side the proposer of the final state (both
    `primary=False`): both waited the same grace and sent concludeFinal, one reverting."""
    cid = await open_between(pair.alice, pair.bob, 2 * ETHER, ETHER)
    channel = pair.alice.client.channels[cid]
    latest = channel.latest
    final = replace(latest, version=latest.version + 1, is_final=True)
    signatures = (pair.alice.client.signer.sign_state(final),
                  pair.bob.client.signer.sign_state(final))
    chain = _CountsConcludes(pair.chain)
    restarted = [ChainSettlement(reactor, cast(ChainBackend, chain), user.account,
                                 poll_interval=0.05, conclude_grace=0.5)
                 for user in (pair.alice, pair.bob)]
    conclude = ev.ConcludeFinal(cid, cast(Params, channel.params), final, signatures, False)
    both = await gatherResults([settlement.conclude_final(conclude) for settlement in restarted])
    assert chain.sent == 1
    assert [c.version for c in both] == [final.version] * 2  # type: ignore[union-attr]
