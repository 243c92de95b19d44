"""Payment history through two real channel clients over loopback TCP, each on a session store:
references travel with the update, merged payments are listed one by one on both sides, and
requests that end unpaid (declined, expired) are recorded on both sides as such."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from perund.chain.backend import ChainBackend
from perund.channel.encoding import Signer
from perund.channel.memo import PaymentPart
from perund.channel.types import ETH, State
from perund.errors import PeerRejected
from perund.peer.manager import PeerManager
from perund.session.notices import UpdateNotice
from perund.storage.history import PaymentQuery
from perund.storage.store import SessionStore
from perund.wire.messages import Update, UpdateAccept

from .conftest import ETHER, User, listening_pair, open_between

Row = tuple[str, int, int | None, bool, str, str | None]


def _history(store: SessionStore) -> list[Row]:
    page = store.history.page(PaymentQuery(), limit=1000)
    return [(r.direction, r.amount, r.version, r.request, r.status, r.reference)
            for r in reversed(page.payments)]


@contextlib.asynccontextmanager
async def on_stores(chain: ChainBackend, tmp_path: Path
                    ) -> AsyncIterator[tuple[User, User, tuple[SessionStore, SessionStore]]]:
    """alice and bob listening on loopback, each on a session store (with its history);
    stopped and closed afterwards."""
    stores = SessionStore(tmp_path / "alice", reactor), SessionStore(tmp_path / "bob", reactor)
    pair = await listening_pair(chain, *stores)
    alice, bob = pair.alice, pair.bob
    try:
        yield alice, bob, stores
    finally:
        await alice.peers.stop()
        await bob.peers.stop()
        alice.client.stop()
        bob.client.stop()
        for store in stores:
            store.close()


@pytest_twisted.ensureDeferred
async def test_references_merged_payments_and_unpaid_requests_on_both_sides(
        chain: ChainBackend, tmp_path: Path) -> None:
    async with on_stores(chain, tmp_path) as (alice, bob, stores):
        cid = await open_between(alice, bob, ETHER, ETHER)

        await alice.client.send(cid, ((ETH, 5),), reference="inv-1")
        # Three payments at once: the first goes alone, the other two wait and share an update.
        await gatherResults([alice.client.send(cid, ((ETH, amount),), reference=ref)
                             for amount, ref in ((1, None), (2, "a"), (3, "b"))])
        # A request bob's user declines, one alice's user lets expire.
        asking = alice.client.send(cid, ((ETH, -7),), reference="order-2")
        question = await bob.update_question()
        assert isinstance(question, UpdateNotice)
        await bob.client.respond_update(cid, question.update_id, False)
        with pytest.raises(PeerRejected):
            await asking
        alice.client.response_timeout = 0.2
        asking = bob.client.send(cid, ((ETH, -4),))
        await alice.update_question()
        with pytest.raises(PeerRejected, match="did not answer in time"):
            await asking

        mine = _history(stores[0])
        assert mine == [
            ("sent", 5, 1, False, "paid", "inv-1"),
            ("sent", 1, 2, False, "paid", None),
            ("sent", 2, 3, False, "paid", "a"),
            ("sent", 3, 3, False, "paid", "b"),
            ("received", 7, None, True, "rejected", "order-2"),
            ("sent", 4, None, True, "expired", None),
        ]
        flipped = {"sent": "received", "received": "sent"}
        assert _history(stores[1]) == [(flipped[d], *rest) for d, *rest in mine]


@pytest_twisted.ensureDeferred
async def test_a_refused_update_leaves_its_memo_to_no_other_update(
        chain: ChainBackend, tmp_path: Path) -> None:
    """A stranger's update naming the channel, or the peer's own that alice refuses, carries
    a memo for a version alice pays at next: her plain payment must not take it on."""
    async with on_stores(chain, tmp_path) as (alice, bob, stores):
        endpoint = f"tcp:host=127.0.0.1:port={alice.peers.port}"
        stranger = PeerManager(reactor, Signer(bytes([7]) * 32),
                               {alice.client.address: endpoint}.get, keepalive_interval=None)
        try:
            cid = await open_between(alice, bob, ETHER, ETHER)
            balances = ((ETHER - 5, ETHER + 5),)

            def junk(version: int) -> Update:
                memo = (PaymentPart((5,), reference=f"INV-ATTACKER-{version}"),)
                return Update(State(cid, version, (ETH,), balances), b"\x01" * 65, memo)

            # A ping's answer comes after alice has handled what came before it on that link.
            await stranger.send(alice.client.address, junk(1))
            await stranger.ping(alice.client.address, 5.0)
            await alice.client.send(cid, ((ETH, 5),))
            await bob.peers.send(alice.client.address, junk(2))
            await bob.peers.ping(alice.client.address, 5.0)
            await alice.client.send(cid, ((ETH, 5),))
            expected = [("sent", 5, 1, False, "paid", None), ("sent", 5, 2, False, "paid", None)]
            assert _history(stores[0]) == expected
            flipped = {"sent": "received", "received": "sent"}
            assert _history(stores[1]) == [(flipped[d], *rest) for d, *rest in expected]
        finally:
            await stranger.stop()


@pytest_twisted.ensureDeferred
async def test_a_peers_memo_going_both_ways_is_recorded_as_its_net_payment(
        chain: ChainBackend, tmp_path: Path) -> None:
    """bob pays 1 wei with a memo of two 1-wei payments and a 1-wei request: alice's user
    never paid that request (the update is taken on its net), and parts like these would turn
    1 wei into hundreds of records. alice records the one payment she received."""
    async with on_stores(chain, tmp_path) as (alice, bob, stores):
        cid = await open_between(alice, bob, ETHER, ETHER)
        state = State(cid, 1, (ETH,), ((ETHER + 1, ETHER - 1),))
        memo = (PaymentPart((1,), reference="a"), PaymentPart((1,), reference="b"),
                PaymentPart((1,), request=True, reference="c"))
        answer = await bob.peers.request(
            alice.client.address, Update(state, bob.client.signer.sign_state(state), memo), 5.0)
        assert isinstance(answer, UpdateAccept)
        assert _history(stores[0]) == [("received", 1, 1, False, "paid", None)]
        # One way, the same memo's parts are each a record.
        state = State(cid, 2, (ETH,), ((ETHER + 3, ETHER - 3),))
        memo = (PaymentPart((1,), reference="d"), PaymentPart((1,), reference="e"))
        answer = await bob.peers.request(
            alice.client.address, Update(state, bob.client.signer.sign_state(state), memo), 5.0)
        assert isinstance(answer, UpdateAccept)
        assert _history(stores[0])[1:] == [("received", 1, 2, False, "paid", "d"),
                                           ("received", 1, 2, False, "paid", "e")]
