"""Intermediary fees between three loopback clients on the embedded dev chain: ingrid charges
the opener; the quote, the opener's limit, her check of the lock, the fold, to the wei
(docs/protocol.md "Intermediary fees")."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_twisted

from perund.chain.backend import ChainBackend
from perund.channel.fees import FeeTerms
from perund.channel.phases import Phase
from perund.channel.types import ETH, ChannelID
from perund.channel.virtual import is_virtual
from perund.channel.virtual_opening import VirtualOpenRequest
from perund.errors import FailedPrecondition, PeerRejected
from perund.session.fees import FeeBook
from perund.session.notices import ProposalNotice
from perund.storage import MemoryStore

from .conftest import ETHER, open_between
from .test_virtual_flow import Hub, carol_closed, three_users

BASE, PPM = 10**15, 1000
FEE = BASE + 3 * ETHER * PPM // 10**6  # for 3 ETH locked: 0.001 + 0.003 = 0.004 ETH


@pytest_twisted.async_yield_fixture
async def hub(chain: ChainBackend) -> AsyncIterator[Hub]:
    alice, ingrid, carol = await three_users(chain)
    ingrid.client.intermediary.schedule = {ETH: FeeTerms(BASE, PPM)}
    la = await open_between(alice, ingrid, 10 * ETHER, 10 * ETHER)
    lc = await open_between(carol, ingrid, 10 * ETHER, 10 * ETHER)
    yield Hub(alice, ingrid, carol, la, lc)
    for user in (alice, ingrid, carol):
        user.client.stop()
        await user.peers.stop()


def request(hub: Hub, max_fee: tuple[int, ...] = ()) -> VirtualOpenRequest:
    return VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                              ((3 * ETHER, 0),), 60, max_fee)


def nothing_locked(hub: Hub) -> None:
    for user, ledger in ((hub.alice, hub.la), (hub.ingrid, hub.la), (hub.ingrid, hub.lc),
                         (hub.carol, hub.lc)):
        channel = user.client.channels[ledger]
        assert not channel.latest.locked and channel.phase is Phase.OPEN
        assert channel.latest.balances == ((10 * ETHER, 10 * ETHER),)
        assert not user.client.fees.totals(ledger)


@pytest_twisted.ensureDeferred
async def test_the_opener_pays_the_quoted_fee_with_its_lock_and_the_fold_pays_all(
        hub: Hub) -> None:
    opening = hub.alice.client.open_channel(request(hub, (FEE + 1,)))
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    await hub.carol.client.respond_proposal(notice.proposal.proposal_id, True)
    vid = (await opening).channel_id
    # The lock took alice's 3 ETH and ingrid's 0 for carol, and moved the quoted fee (not the
    # limit) to ingrid, in one state both signed.
    la = hub.alice.client.channels[hub.la].latest
    assert la.balances == ((7 * ETHER - FEE, 10 * ETHER + FEE),)
    assert la == hub.ingrid.client.channels[hub.la].latest
    assert hub.carol.client.channels[hub.lc].latest.balances == ((10 * ETHER, 7 * ETHER),)
    assert hub.alice.client.fees.totals(hub.la) == {ETH: (0, FEE)}
    assert hub.ingrid.client.fees.totals(hub.la) == {ETH: (FEE, 0)}
    assert not hub.carol.client.fees.totals(hub.lc) and not hub.ingrid.client.fees.totals(hub.lc)
    assert hub.alice.client.fees.offered(vid) == ()  # settled once the lock was signed
    for _ in range(5):
        await hub.alice.client.send(vid, ((ETH, ETHER // 10),))
    closing = hub.alice.client.close(vid)
    question = await hub.carol.update_question()
    await hub.carol.client.respond_update(vid, question.update_id, True)  # type: ignore[attr-defined]
    assert (await closing).phase is Phase.CLOSED
    await carol_closed(hub, vid)
    # Folded: alice paid carol 0.5 ETH and ingrid the fee; ingrid ends the fee richer.
    la_after = hub.ingrid.client.channels[hub.la].latest
    lc_after = hub.ingrid.client.channels[hub.lc].latest
    assert la_after.balances == ((95 * ETHER // 10 - FEE, 105 * ETHER // 10 + FEE),)
    assert lc_after.balances == ((105 * ETHER // 10, 95 * ETHER // 10),)
    assert not la_after.locked and not lc_after.locked
    assert la_after.balances[0][1] + lc_after.balances[0][1] == 20 * ETHER + FEE
    assert la_after == hub.alice.client.channels[hub.la].latest
    assert lc_after == hub.carol.client.channels[hub.lc].latest


@pytest_twisted.ensureDeferred
async def test_a_fee_above_max_fee_is_refused_before_the_peer_is_asked(hub: Hub) -> None:
    for limit in ((), (FEE - 1,)):
        with pytest.raises(FailedPrecondition, match=re.escape(
                "charges a fee of 0.004 ETH, more than maxFee allows")) as raised:
            await hub.alice.client.open_channel(request(hub, limit))
        assert raised.value.data["fee"] == {"ETH": "0.004"}
    assert not any(isinstance(n, ProposalNotice) for n in hub.carol.notices)
    assert not any(is_virtual(c) for c in hub.alice.client.channels.values())
    nothing_locked(hub)


@pytest_twisted.ensureDeferred
async def test_the_fee_and_the_share_must_fit_the_openers_ledger(hub: Hub) -> None:
    whole = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                               ((10 * ETHER, 0),), 60, (ETHER,))
    with pytest.raises(FailedPrecondition, match="covers this virtual channel and the "
                                                 "intermediary's fee") as raised:
        await hub.alice.client.open_channel(whole)
    assert raised.value.data["fee"] == {"ETH": "0.011"}
    nothing_locked(hub)


@pytest_twisted.ensureDeferred
async def test_a_lock_paying_less_than_ingrids_fee_is_refused_naming_it(hub: Hub) -> None:
    opening = hub.alice.client.open_channel(request(hub, (ETHER,)))
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    # Ingrid raises her fee after her quote: alice's lock pays the old one.
    hub.ingrid.client.intermediary.schedule = {ETH: FeeTerms(2 * BASE, PPM)}
    hub.carol.client.respond_proposal(notice.proposal.proposal_id, True).addErrback(
        lambda _: None)
    # In ETH, as alice named the most she pays (FEE + BASE: 0.005 ETH), not in wei.
    with pytest.raises(PeerRejected, match=r"fee too low: the intermediary charges 0\.005 ETH$"):
        await opening
    vid: ChannelID = next(cid for cid, c in hub.alice.client.channels.items() if is_virtual(c))
    assert hub.alice.client.channels[vid].phase is Phase.CLOSED
    await carol_closed(hub, vid)  # carol's lock found no match in the window
    assert hub.alice.client.fees.offered(vid) == ()
    nothing_locked(hub)
    assert not hub.ingrid.client.intermediary.records


def test_the_fee_of_a_lock_not_signed_yet_outlasts_a_restart() -> None:
    store = MemoryStore()
    book = FeeBook(store)
    vid, ledger = ChannelID(b"\x01" * 32), ChannelID(b"\x02" * 32)
    book.offer(vid, (5, 0))
    book.offer(ChannelID(b"\x03" * 32), (0, 0))  # no fee: nothing kept
    book.record(ledger, (ETH,), (7,), earned=True)
    book.record(ledger, (ETH,), (2,), earned=False)
    again = FeeBook(store)
    assert again.offered(vid) == (5, 0) and again.offered(ChannelID(b"\x03" * 32)) == ()
    assert again.totals(ledger) == {ETH: (7, 2)}
    assert again.settled(vid) == (5, 0) and FeeBook(store).offered(vid) == ()
