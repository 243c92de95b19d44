"""A payer killed while its payment is in flight, on a fake clock with a real session store:
the peer countersigned, the answer never arrived, and the restarted node learns of the payment
from the peer's Sync. Its history keeps the payment's reference and the merged payments' parts,
which the memo kept in the store carries over the restart (perund.session.memos)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from perund.channel.types import ETH
from perund.storage.history import PaymentQuery
from perund.storage.memo_records import PREFIX, memo_name
from perund.storage.store import SessionStore

from .fakes import Net, open_channel, restart, side


def _run(clock: Clock, seconds: float, step: float = 0.001) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)


def _sent(store: SessionStore) -> list[tuple[int, str | None, int | None]]:
    page = store.history.page(PaymentQuery(), limit=100)
    return [(r.amount, r.reference, r.version) for r in reversed(page.payments)]


def test_a_payment_countersigned_while_the_payer_was_down_keeps_its_reference(
        tmp_path: Path) -> None:
    clock = Clock()
    net = Net(clock, latency=0.001)
    alice = side(net, SessionStore(tmp_path / "alice", clock), request_timeout=1.0,
                 response_timeout=5.0)
    bob = side(net, request_timeout=1.0, response_timeout=5.0)
    cid = open_channel(net, alice, bob)
    alice.client.send(cid, ((ETH, 7),), reference="inv-7").addErrback(lambda _: None)
    alice.client.send(cid, ((ETH, 2),), reference="a").addErrback(lambda _: None)
    alice.client.send(cid, ((ETH, 3),), reference="b").addErrback(lambda _: None)
    # The first payment goes alone; the other two share the next update. Bob countersigns
    # each; alice is cut off before his second answer reaches her.
    for _ in range(1000):
        if bob.client.channels[cid].latest.version == 2:
            break
        clock.advance(0.0001)
    net.cut(alice.address)
    _run(clock, 0.01)
    before = alice.client.store
    assert isinstance(before, SessionStore)
    assert [v for _, _, v in _sent(before)] == [1]
    assert len(before.metas(PREFIX)) == 1  # the in-flight update's memo, kept
    before.close()  # all the killed process had appended is in its data file

    reopened = SessionStore(tmp_path / "alice", clock)
    restart(net, alice, store=reopened, request_timeout=1.0, response_timeout=5.0)
    net.mend(alice.address)
    _run(clock, 1.0)

    assert alice.client.channels[cid].latest.version == 2
    assert _sent(reopened) == [(7, "inv-7", 1), (2, "a", 2), (3, "b", 2)]
    # The next payment settles every earlier one: the kept memo goes.
    alice.client.send(cid, ((ETH, 1),))
    _run(clock, 0.1)
    assert _sent(reopened)[-1][:2] == (1, None) and reopened.metas(PREFIX) == {}
    reopened.close()


def test_memo_records_of_recorded_states_or_unreadable_go_at_the_restart(
        tmp_path: Path) -> None:
    clock = Clock()
    net = Net(clock, latency=0.001)
    store = SessionStore(tmp_path / "alice", clock)
    alice = side(net, store)
    bob = side(net)
    cid = open_channel(net, alice, bob)
    alice.client.send(cid, ((ETH, 7),), reference="inv-7")
    _run(clock, 0.1)
    assert list(store.metas(PREFIX)) == [memo_name(cid, 1)]  # kept until the next update
    store.set_meta(memo_name(cid, 5), b"\x01garbage")
    store.set_meta(PREFIX + "not-a-channel:1", b"")
    store.close()

    reopened = SessionStore(tmp_path / "alice", clock)
    restart(net, alice, store=reopened)
    clock.advance(0)
    assert reopened.metas(PREFIX) == {}
    reopened.close()
