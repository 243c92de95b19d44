"""Virtual channels between three loopback clients on the embedded dev chain: alice and carol
each with a ledger channel to ingrid, a virtual channel alice-carol opened, used and closed
with no transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.types import ETH, Address, ChannelID
from perund.channel.virtual import is_virtual
from perund.channel.virtual_opening import VirtualOpenRequest
from perund.errors import FailedPrecondition, PeerRejected, PeerRequestTimedOut, PerundError
from perund.session.config import IntermediaryConfig
from perund.session.notices import ChannelNotice, ProposalNotice
from perund.wire.messages import VirtualLock

from .conftest import ETHER, User, make_user, open_between


@dataclass
class Hub:
    alice: User
    ingrid: User
    carol: User
    la: ChannelID
    lc: ChannelID


async def three_users(chain: ChainBackend, window: float = 3.0) -> tuple[User, User, User]:
    endpoints: dict[Address, str] = {}
    contacts: set[Address] = set()
    alice = make_user("alice", chain, 1, endpoints.get, contacts)
    ingrid = make_user("ingrid", chain, 2, endpoints.get, contacts,
                       intermediary=IntermediaryConfig(True, window))
    carol = make_user("carol", chain, 3, endpoints.get, contacts)
    for user in (alice, ingrid, carol):
        port = await user.peers.listen()
        endpoints[user.client.address] = f"tcp:host=127.0.0.1:port={port}"
        contacts.add(user.client.address)
    return alice, ingrid, carol


@pytest_twisted.async_yield_fixture
async def hub(chain: ChainBackend) -> AsyncIterator[Hub]:
    alice, ingrid, carol = await three_users(chain)
    la = await open_between(alice, ingrid, 10 * ETHER, 10 * ETHER)
    lc = await open_between(carol, ingrid, 10 * ETHER, 10 * ETHER)
    yield Hub(alice, ingrid, carol, la, lc)
    for user in (alice, ingrid, carol):
        user.client.stop()
        await user.peers.stop()


async def open_virtual(hub: Hub, ours: int = 3 * ETHER, theirs: int = 0) -> ChannelID:
    request = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                                 ((ours, theirs),), 60)
    opening = hub.alice.client.open_channel(request)
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    accepted = await hub.carol.client.respond_proposal(notice.proposal.proposal_id, True)
    channel = await opening
    assert accepted is not None and accepted.channel_id == channel.channel_id
    assert channel.phase is Phase.OPEN and accepted.phase is Phase.OPEN
    return channel.channel_id


async def carol_closed(hub: Hub, vid: ChannelID) -> None:
    if hub.carol.client.channels[vid].phase is not Phase.CLOSED:
        await hub.carol.next_notice(lambda n: isinstance(n, ChannelNotice) and isinstance(
            n.event, ev.Closed) and n.event.channel_id == vid)


@pytest_twisted.ensureDeferred
async def test_open_pay_and_close_a_virtual_channel_with_no_transaction(hub: Hub) -> None:
    chain_txs = [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)]  # type: ignore[attr-defined]
    vid = await open_virtual(hub)
    la_alice = hub.alice.client.channels[hub.la]
    assert la_alice.latest.balances == ((7 * ETHER, 10 * ETHER),)
    assert [lock.channel_id for lock in la_alice.latest.locked] == [vid]
    assert hub.carol.client.channels[hub.lc].latest.locked[0].balances == (3 * ETHER,)
    assert vid not in hub.ingrid.client.channels
    for _ in range(5):
        await hub.alice.client.send(vid, ((ETH, ETHER // 10),))
    closing = hub.alice.client.close(vid)
    question = await hub.carol.update_question()
    await hub.carol.client.respond_update(vid, question.update_id, True)  # type: ignore[attr-defined]
    closed = await closing
    assert closed.phase is Phase.CLOSED
    await carol_closed(hub, vid)
    # Folded: alice paid carol 0.5 ETH through the hub, ingrid is where she started.
    assert hub.alice.client.channels[hub.la].latest.balances == ((95 * ETHER // 10,
                                                                  105 * ETHER // 10),)
    assert not hub.alice.client.channels[hub.la].latest.locked
    assert hub.carol.client.channels[hub.lc].latest.balances == ((105 * ETHER // 10,
                                                                  95 * ETHER // 10),)
    ingrid = hub.ingrid.client.channels
    assert ingrid[hub.la].latest == hub.alice.client.channels[hub.la].latest
    assert ingrid[hub.lc].latest == hub.carol.client.channels[hub.lc].latest
    assert [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)] \
        == chain_txs  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_parent_that_funds_an_open_virtual_channel_does_not_close(hub: Hub) -> None:
    vid = await open_virtual(hub)
    with pytest.raises(FailedPrecondition, match="funds open virtual channels") as raised:
        await hub.alice.client.close(hub.la)
    assert raised.value.data["virtual_channels"] == ["0x" + vid.hex()]
    with pytest.raises(FailedPrecondition):
        await hub.alice.client.force_close(hub.la)
    # Payments with ingrid on the ledger go on beside the lock.
    paid = await hub.alice.client.send(hub.la, ((ETH, ETHER),))
    assert paid.latest.balances == ((6 * ETHER, 11 * ETHER),) and paid.latest.locked
    # Nor does ingrid close it, though she is no party of the virtual channel: the close
    # would take both ledgers, and the virtual channel with its version 0, on-chain (the
    # virtual-channel review's finding).
    sent = [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)]  # type: ignore[attr-defined]
    for ledger in (hub.la, hub.lc):
        with pytest.raises(FailedPrecondition, match="we are the intermediary of") as raised:
            await hub.ingrid.client.close(ledger).addTimeout(10, reactor)
        assert raised.value.data["virtual_channels"] == ["0x" + vid.hex()]
        assert hub.ingrid.client.channels[ledger].phase is Phase.OPEN
    assert hub.alice.client.channels[vid].phase is Phase.OPEN
    assert [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)] \
        == sent  # type: ignore[attr-defined]  # no transaction


@pytest_twisted.ensureDeferred
async def test_a_lock_without_its_match_is_refused_and_nothing_stays_locked(hub: Hub) -> None:
    # carol's node accepts the proposal, then never sends its lock (it crashed there).
    hub.carol.client._handlers[ev.LockParent] = lambda e: None
    request = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                                 ((ETHER, 0),), 60)
    opening = hub.alice.client.open_channel(request)
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    hub.carol.client.respond_proposal(notice.proposal.proposal_id, True).addErrback(
        lambda _: None)
    with pytest.raises(PeerRejected, match="no matching lock"):
        await opening
    (vid,) = [cid for cid, c in hub.alice.client.channels.items() if is_virtual(c)]
    assert hub.alice.client.channels[vid].phase is Phase.CLOSED
    for user, ledger in ((hub.alice, hub.la), (hub.ingrid, hub.la), (hub.ingrid, hub.lc)):
        channel = user.client.channels[ledger]
        assert not channel.latest.locked and channel.phase is Phase.OPEN
        assert channel.latest.balances == ((10 * ETHER, 10 * ETHER),)
    assert not hub.ingrid.client.intermediary.records


@pytest_twisted.ensureDeferred
async def test_an_intermediary_that_never_answers_costs_nothing(hub: Hub) -> None:
    hub.ingrid.client._handlers[ev.AwaitingMatch] = lambda e: None
    request = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                                 ((ETHER, 0),), 60)
    opening = hub.alice.client.open_channel(request)
    told: list[tuple[Phase, str]] = []

    def when_told(failure: Failure) -> Failure:
        # Looked at as alice's user is told, not later: after a request times out the peer
        # layer pings the link and drops it if the ping is late (under load it may be), and
        # the new link's sync then settles the lock's fate before the test would look.
        (v,) = [c for c in hub.alice.client.channels.values() if is_virtual(c)]
        refusals: list[str] = []
        hub.alice.client.close(v.channel_id).addErrback(
            lambda f: refusals.append(f.getErrorMessage()))
        told.append((v.phase, *refusals))
        return failure

    opening.addErrback(when_told)
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    # Short waits for the locks only (each wait reads them when it starts).
    for user in (hub.alice, hub.carol):
        user.client.response_timeout = user.client.request_timeout = 1.0
    accepting = hub.carol.client.respond_proposal(notice.proposal.proposal_id, True)
    for waiting in (opening, accepting):
        with pytest.raises(PeerRequestTimedOut, match="did not answer our lock"):
            await waiting
    (vid,) = [cid for cid, c in hub.alice.client.channels.items() if is_virtual(c)]
    ((phase, refusal),) = told
    assert phase is Phase.FUNDING  # its lock's fate unknown
    assert "not open yet" in refusal
    # The next connection syncs: ingrid never signed, so nothing is locked and it closes.
    for user in (hub.alice, hub.carol):
        closed = user.next_notice(lambda n: isinstance(n, ChannelNotice) and isinstance(
            n.event, ev.Closed) and n.event.channel_id == vid)
        await user.peers.disconnect(hub.ingrid.client.address)
        await closed
    for user, ledger in ((hub.alice, hub.la), (hub.carol, hub.lc)):
        assert not user.client.channels[ledger].latest.locked
        assert user.client.channels[ledger].latest == \
            hub.ingrid.client.channels[ledger].latest


@pytest_twisted.ensureDeferred
async def test_a_node_that_is_no_intermediary_refuses_every_lock(chain: ChainBackend) -> None:
    alice, ingrid, carol = await three_users(chain)
    ingrid.client.intermediary.enabled = False
    try:
        la = await open_between(alice, ingrid, 10 * ETHER, 10 * ETHER)
        await open_between(carol, ingrid, 10 * ETHER, 10 * ETHER)
        request = VirtualOpenRequest(carol.client.address, ingrid.client.address, (ETH,),
                                     ((ETHER, 0),), 60)
        # Its answer to the fee query already says so: carol is never asked.
        with pytest.raises(PeerRejected, match="does not serve as intermediary"):
            await alice.client.open_channel(request)
        assert not alice.client.channels[la].latest.locked
        assert not any(isinstance(n, ProposalNotice) for n in carol.notices)
    finally:
        for user in (alice, ingrid, carol):
            user.client.stop()
            await user.peers.stop()


@pytest_twisted.ensureDeferred
async def test_folds_an_intermediary_holds_and_never_answers_are_settled_on_chain(
        hub: Hub) -> None:
    """Ingrid receives both folds and stays silent (her node hangs, or her answers are lost):
    each party's fold is of unknown fate, and each takes its ledger on-chain with the final
    state rather than waiting for her forever (found on anvil by
    tests/integration/test_virtual_safety.py: the ledgers stayed open, unclosable)."""
    vid = await open_virtual(hub)
    await hub.alice.client.send(vid, ((ETH, ETHER // 10),))
    hub.ingrid.client._handlers[ev.AwaitingMatch] = lambda e: None
    for user in (hub.alice, hub.carol):
        user.client.response_timeout = user.client.request_timeout = 1.0
    closing = hub.alice.client.close(vid)
    closing.addErrback(lambda _: None)
    question = await hub.carol.update_question().addTimeout(10, reactor)
    await hub.carol.client.respond_update(vid, question.update_id, True)  # type: ignore[attr-defined]
    parties = ((hub.alice, hub.la), (hub.carol, hub.lc))
    for _ in range(100):
        if all(user.client.channels[ledger].phase in (Phase.CLOSING, Phase.DISPUTED)
               for user, ledger in parties):
            break
        await deferLater(reactor, 0.1, lambda: None)
    for user, ledger in parties:
        # Registration under way (or done) with the lock: the final state settles it.
        channel = user.client.channels[ledger]
        assert channel.phase in (Phase.CLOSING, Phase.DISPUTED), channel.phase
        assert [lock.channel_id for lock in channel.latest.locked] == [vid]


@pytest_twisted.ensureDeferred
async def test_a_version_0_the_proposer_never_countersigns_times_out(hub: Hub) -> None:
    """alice goes silent right after carol accepted (her countersignature on version 0 never
    comes): carol's channel closes after her wait, nothing locked, and her ledger closes as
    any (found on anvil: it stayed `proposing`, its ledger unclosable)."""
    hub.alice.client._handlers[ev.SendUpdateAccept] = lambda e: None
    hub.alice.client._handlers[ev.LockParent] = lambda e: None
    hub.carol.client.response_timeout = hub.carol.client.request_timeout = 0.5
    request = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                                 ((ETHER, 0),), 60)
    hub.alice.client.open_channel(request).addErrback(lambda _: None)
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    with pytest.raises(PerundError):
        await hub.carol.client.respond_proposal(notice.proposal.proposal_id, True).addTimeout(
            10, reactor)
    (vid,) = [cid for cid, c in hub.carol.client.channels.items() if is_virtual(c)]
    assert hub.carol.client.channels[vid].phase is Phase.CLOSED
    assert hub.carol.client.channels[vid].latest.version == 0  # shown as it was (no crash)
    assert not hub.carol.client.channels[hub.lc].latest.locked
    hub.carol.client._virtual.close_refusal(hub.lc)  # closes as any ledger


@pytest_twisted.ensureDeferred
async def test_a_ledger_whose_lock_is_of_unknown_fate_may_settle_on_chain(hub: Hub) -> None:
    """Ingrid holds both locks and never answers, for good: the virtual channel stays funding
    (she may have signed), but the ledger may still be settled through a dispute (found on
    anvil: closing it was refused until ingrid came back, which she may never do)."""
    hub.ingrid.client._handlers[ev.AwaitingMatch] = lambda e: None
    request = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address, (ETH,),
                                 ((ETHER, 0),), 60)
    for user in (hub.alice, hub.carol):
        user.client.response_timeout = user.client.request_timeout = 0.5
    opening = hub.alice.client.open_channel(request)
    notice = await hub.carol.proposal()
    assert isinstance(notice, ProposalNotice)
    hub.carol.client.respond_proposal(notice.proposal.proposal_id, True).addErrback(
        lambda _: None)
    with pytest.raises(PeerRequestTimedOut):
        await opening
    (vid,) = [cid for cid, c in hub.alice.client.channels.items() if is_virtual(c)]
    assert hub.alice.client.channels[vid].phase is Phase.FUNDING
    with pytest.raises(FailedPrecondition, match="not open yet"):
        await hub.alice.client.close(vid)
    hub.alice.client._virtual.close_refusal(hub.la)  # no refusal: nothing of it is locked
    hub.alice.client.force_close(hub.la).addErrback(lambda _: None)
    assert hub.alice.client.channels[hub.la].phase in (Phase.CLOSING, Phase.DISPUTED)
    assert not hub.alice.client.channels[hub.la].latest.locked


@pytest_twisted.ensureDeferred
async def test_a_close_that_waited_behind_a_lock_is_refused_not_disputed(hub: Hub) -> None:
    """alice closes her ledger just as her lock leaves: the close passes the check then (no
    lock yet), waits in the line behind the lock, and meets a ledger that funds the virtual
    channel. It used to turn that into a dispute of the ledger, and of the virtual channel
    just opened (the virtual-channel review's finding)."""
    sent = [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)]  # type: ignore[attr-defined]
    closes: list[object] = []
    original = hub.alice.peers.request

    def request(peer: Address, msg: object, timeout: float) -> object:
        answer = original(peer, msg, timeout)  # type: ignore[arg-type]
        if isinstance(msg, VirtualLock):
            closes.append(hub.alice.client.close(hub.la))
        return answer

    hub.alice.peers.request = request  # type: ignore[method-assign]
    vid = await open_virtual(hub)
    (closing,) = closes
    with pytest.raises(FailedPrecondition, match="funds open virtual channels"):
        await closing.addTimeout(10, reactor)  # type: ignore[attr-defined]
    assert hub.alice.client.channels[vid].phase is Phase.OPEN
    assert hub.alice.client.channels[hub.la].phase is Phase.OPEN
    assert [len(u.client.settler.receipts) for u in (hub.alice, hub.ingrid, hub.carol)] \
        == sent  # type: ignore[attr-defined]  # no transaction


@pytest_twisted.ensureDeferred
async def test_an_intermediary_with_a_full_disk_refuses_locks_and_still_takes_folds(
        hub: Hub) -> None:
    """ingrid's disk is under `limits.min_free_disk`: no new virtual channel is funded through
    her (a lock moves money), but the one open closes, since its folds wind it down."""
    from perund.disk_guard import DiskGuard

    vid = await open_virtual(hub)
    guard = DiskGuard(reactor, 2**20, free=lambda _: 0)
    guard.watch("ingrid", Path("/srv/perund/ingrid"))
    hub.ingrid.client.refusals.append(lambda _, down: guard.refusal("ingrid", down))
    try:
        request = VirtualOpenRequest(hub.carol.client.address, hub.ingrid.client.address,
                                     (ETH,), ((ETHER, 0),), 60)
        opening = hub.alice.client.open_channel(request)
        notice = await hub.carol.proposal()
        assert isinstance(notice, ProposalNotice)
        accepting = hub.carol.client.respond_proposal(notice.proposal.proposal_id, True)
        for side in (opening, accepting):
            with pytest.raises(PerundError, match="disk is nearly full"):
                await side
        closing = hub.alice.client.close(vid)
        question = await hub.carol.update_question()
        await hub.carol.client.respond_update(vid, question.update_id, True)  # type: ignore[attr-defined]
        assert (await closing.addTimeout(20, reactor)).phase is Phase.CLOSED
        assert not hub.alice.client.channels[hub.la].latest.locked
    finally:
        guard.stop()
