"""The payment history of a session store: derived from the stored states, mirrored on both
sides, kept across reopening, archived by compaction, listed in pages, and equal to the
sequence of stored states whatever tears the tail of the data file."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from twisted.internet.task import Clock

from perund.channel.changes import OwnUpdate, RespondUpdate
from perund.channel.events import Persist, SendUpdate, SendUpdateAccept, UpdateNeedsUser
from perund.channel.machine import transition
from perund.channel.types import ETH, ChannelID
from perund.errors import InvalidArgument, StoreCorrupt, StoreError
from perund.storage.archive import PaymentArchive
from perund.storage.history import PaymentQuery
from perund.storage.payments import PaymentRecord, decode_payment, encode_payment
from perund.storage.store import SessionStore
from tests.channel.factories import ALICE, BOB, deliver, make_pair

Sides = tuple[SessionStore, SessionStore]


class Pay:
    """alice and bob paying each other through the pure cores, each side's values put into
    its own store as the cores ask (one commit per message, as over a network)."""

    def __init__(self, alice_store: SessionStore, bob_store: SessionStore, clock: Clock) -> None:
        self.alice, self.bob = make_pair()
        self.stores = {"alice": alice_store, "bob": bob_store}
        self.clock = clock
        alice_store.put(self.alice)
        bob_store.put(self.bob)
        clock.advance(0)

    def _persist(self, who: str, events: tuple[object, ...]) -> None:
        for event in events:
            if isinstance(event, Persist):
                store = self.stores[who]
                if event.write:
                    store.put(event.channel, event.by_us)
                else:
                    store.note(event.channel)
        self.clock.advance(1)

    def pay(self, payer: str, amount: int) -> None:
        """`payer` sends `amount` (negative: requests it, and the other side's user accepts)."""
        me, peer = (self.alice, self.bob) if payer == "alice" else (self.bob, self.alice)
        signers = (ALICE, BOB) if payer == "alice" else (BOB, ALICE)
        other = "bob" if payer == "alice" else "alice"
        me, events = transition(me, OwnUpdate(signers[0], ((ETH, amount),)))
        self._persist(payer, events)
        update = next(e for e in events if isinstance(e, SendUpdate))
        peer, answers = deliver(peer, update, *signers)
        self._persist(other, answers)
        asked = [e for e in answers if isinstance(e, UpdateNeedsUser)]
        if asked:
            peer, answers = transition(peer, RespondUpdate(signers[1], asked[0].update_id, True))
            self._persist(other, answers)
        accept = next(e for e in answers if isinstance(e, SendUpdateAccept))
        me, finals = deliver(me, accept, signers[1], signers[0])
        self._persist(payer, finals)
        self.alice, self.bob = (me, peer) if payer == "alice" else (peer, me)


def _listed(store: SessionStore, **query: object) -> list[PaymentRecord]:
    return store.history.page(PaymentQuery(**query), limit=1000).payments  # type: ignore[arg-type]


def _summary(records: list[PaymentRecord]) -> list[tuple[str, int, int | None, bool]]:
    return [(r.direction, r.amount, r.version, r.request) for r in records]


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture
def sides(tmp_path: Path, clock: Clock) -> Sides:
    return SessionStore(tmp_path / "alice", clock), SessionStore(tmp_path / "bob", clock)


def test_both_sides_list_the_same_payments_mirrored_newest_first(sides: Sides,
                                                                 clock: Clock) -> None:
    alice, bob = sides
    pay = Pay(alice, bob, clock)
    for _ in range(5):
        pay.pay("alice", 10)
    pay.pay("bob", 20)
    pay.pay("alice", -3)  # alice requests 3 from bob, whose user accepts

    assert _summary(_listed(alice)) == [
        ("received", 3, 7, True), ("received", 20, 6, False),
        *[("sent", 10, v, False) for v in (5, 4, 3, 2, 1)]]
    assert _summary(_listed(bob)) == [
        ("sent", 3, 7, True), ("sent", 20, 6, False),
        *[("received", 10, v, False) for v in (5, 4, 3, 2, 1)]]
    newest = _listed(alice)[0]
    assert (newest.channel_id, newest.peer, newest.asset) == (
        pay.alice.channel_id, BOB.address, ETH)
    assert [r.payment_id for r in _listed(alice)] == list(range(6, -1, -1))
    assert _summary(_listed(bob, direction="sent")) == [("sent", 3, 7, True),
                                                        ("sent", 20, 6, False)]
    times = [r.time for r in _listed(alice)]
    assert times == sorted(times, reverse=True) and len(set(times)) == len(times)
    assert len(_listed(alice, since=times[2], until=times[0])) == 2


def test_the_history_outlasts_a_reopen_and_is_announced_when_durable(
        tmp_path: Path, sides: Sides, clock: Clock) -> None:
    alice, bob = sides
    announced: list[list[PaymentRecord]] = []
    bob.payment_listeners.append(announced.append)
    pay = Pay(alice, bob, clock)
    pay.pay("alice", 10)
    assert [[r.amount for r in batch] for batch in announced] == [[10]]
    before = _listed(bob)
    bob.close()
    again = SessionStore(tmp_path / "bob", clock)
    assert _listed(again) == before
    assert again.history.get(before[0].payment_id) == before[0]
    assert again.history.get(99) is None
    again.close()
    alice.close()


def test_compaction_archives_payments_and_listing_pages_through_everything(
        tmp_path: Path, clock: Clock) -> None:
    alice = SessionStore(tmp_path / "alice", clock, compact_min_bytes=4096)
    bob = SessionStore(tmp_path / "bob", clock, compact_min_bytes=4096)
    pay = Pay(alice, bob, clock)
    for i in range(60):
        pay.pay("alice" if i % 3 else "bob", i + 1)
    assert bob.compactions > 0 and bob.history.archive.last_id >= 0
    assert len(bob.history.recent) < 60
    everything = _listed(bob)
    assert [r.payment_id for r in everything] == list(range(59, -1, -1))
    assert [r.amount for r in everything] == list(range(60, 0, -1))

    pages, cursor = [], None
    while True:
        page = bob.history.page(PaymentQuery(), limit=7, cursor=cursor)
        pages.extend(page.payments)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == everything

    # A rare filter ends pages at the scan budget; following the cursors finds them all.
    wanted, cursor, calls = [], None, 0
    while True:
        page = bob.history.page(PaymentQuery(direction="sent"), limit=100, cursor=cursor,
                                budget=9)
        wanted.extend(page.payments)
        calls += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert wanted == [r for r in everything if r.direction == "sent"] and calls > 5
    for record in everything:
        assert bob.history.get(record.payment_id) == record

    bob.close()
    again = SessionStore(tmp_path / "bob", clock, compact_min_bytes=4096)
    assert _listed(again) == everything
    again.close()
    alice.close()


def test_cursors_are_checked_not_trusted(tmp_path: Path, clock: Clock) -> None:
    alice = SessionStore(tmp_path / "alice", clock, compact_min_bytes=4096)
    bob = SessionStore(tmp_path / "bob", clock, compact_min_bytes=4096)
    pay = Pay(alice, bob, clock)
    for i in range(40):
        pay.pay("alice", i + 1)
    everything = _listed(bob)
    for bad in ("", "x", "-1", "1@", "12@x", "1" * 40, "0x10"):
        with pytest.raises(InvalidArgument, match="not a cursor"):
            bob.history.page(PaymentQuery(), cursor=bad)
    with pytest.raises(InvalidArgument, match="limit"):
        bob.history.page(PaymentQuery(), limit=0)
    # A made-up offset is not read from: the listing goes on below the ID all the same.
    for forged in ("20@3", "20@99999999", "20@0"):
        page = bob.history.page(PaymentQuery(), limit=1000, cursor=forged)
        assert page.payments == [r for r in everything if r.payment_id < 20]
    alice.close()
    bob.close()


def _boundaries(data: Path) -> list[int]:
    """Offsets where each record of a semidbm data file starts, and its end."""
    raw = data.read_bytes()
    at, starts = 8, []
    while at < len(raw):
        starts.append(at)
        key_size = int.from_bytes(raw[at:at + 4], "big", signed=True)
        value_size = int.from_bytes(raw[at + 4:at + 8], "big", signed=True)
        at += 8 + key_size + max(value_size, 0) + 4
    return [*starts, at]


def test_a_torn_commit_leaves_the_history_equal_to_the_stored_states(
        tmp_path: Path, clock: Clock) -> None:
    alice = SessionStore(tmp_path / "alice", clock)
    bob = SessionStore(tmp_path / "bob", clock)
    pay = Pay(alice, bob, clock)
    pay.pay("alice", 5)
    pay.pay("alice", 6)  # bob's last commit: payment record, then channel record
    bob.close()
    alice.close()
    bounds = _boundaries(tmp_path / "bob" / "data")
    for size in range(bounds[-3], bounds[-1] + 1):
        copy = tmp_path / f"cut{size}"
        shutil.copytree(tmp_path / "bob", copy)
        os.truncate(copy / "data", size)
        store = SessionStore(copy, clock)
        (channel,) = store.channels()
        assert channel.current is not None
        version = channel.current.state.version
        assert [r.version for r in _listed(store)] == list(range(version, 0, -1))
        store.close()
        shutil.rmtree(copy)


def test_the_archive_cuts_a_torn_tail(tmp_path: Path) -> None:
    records = [PaymentRecord(i, b"\x01" * 32, b"\x02" * 20, "sent", ETH, i + 1, i, 1.5 * i)
               for i in range(5)]  # type: ignore[arg-type]
    archive = PaymentArchive(str(tmp_path))
    archive.append(records[:4])
    whole = archive.size
    archive.append(records[4:])
    archive.append(records)  # already there: nothing is written twice
    assert archive.size == whole + len(encode_payment(records[4])) + 8
    for size in range(whole, archive.size):
        copy = tmp_path / f"cut{size}"
        copy.mkdir()
        shutil.copy(tmp_path / "payments", copy / "payments")
        os.truncate(copy / "payments", size)
        reopened = PaymentArchive(str(copy))
        assert reopened.last_id == 3 and reopened.size == whole
        assert [r for _, r in reopened.newest_first()] == records[3::-1]
        shutil.rmtree(copy)
    assert decode_payment(encode_payment(records[2])) == records[2]


def test_recording_can_be_turned_off_for_benchmarks(tmp_path: Path, clock: Clock) -> None:
    alice = SessionStore(tmp_path / "alice", clock, record_payments=False)
    bob = SessionStore(tmp_path / "bob", clock)
    pay = Pay(alice, bob, clock)
    pay.pay("alice", 1)
    assert _listed(alice) == [] and len(_listed(bob)) == 1
    alice.close()
    bob.close()


def test_requests_that_made_no_state_are_recorded_as_the_client_says(
        tmp_path: Path, clock: Clock) -> None:
    store = SessionStore(tmp_path / "s", clock)
    alice, _ = make_pair()
    store.put(alice)
    kept = store.add_payments([PaymentRecord(0, alice.channel_id, BOB.address, "received",
                                             ETH, 7, None, 5.0, True, "rejected", "inv-1")])
    assert kept[0].payment_id == 0
    kept = store.add_payments([PaymentRecord(0, alice.channel_id, BOB.address, "received",
                                             ETH, 8, None, 6.0, True, "expired")])
    assert kept[0].payment_id == 1
    clock.advance(0)
    assert [(r.status, r.reference) for r in _listed(store)] == [("expired", None),
                                                               ("rejected", "inv-1")]
    store.close()
    again = SessionStore(tmp_path / "s", clock)
    assert [r.amount for r in _listed(again)] == [8, 7]  # no version: kept whatever the state
    again.close()


def test_the_sparse_index_is_kept_checked_and_rebuilt(tmp_path: Path) -> None:
    records = [PaymentRecord(i, b"\x01" * 32, b"\x02" * 20, "sent", ETH, i + 1, i, float(i))
               for i in range(1000)]  # type: ignore[arg-type]
    archive = PaymentArchive(str(tmp_path))
    for first in range(0, 1000, 300):
        archive.append(records[first:first + 300])
    index_file = tmp_path / "payments.idx"
    assert index_file.stat().st_size == 4 * 16  # records 0, 256, 512, 768
    for damage in (b"", b"\x00" * 16 + b"\xff" * 16, index_file.read_bytes()[:-16],
                   index_file.read_bytes()[:20]):
        index_file.write_bytes(damage)
        reopened = PaymentArchive(str(tmp_path))
        assert [reopened.get(i) for i in (0, 255, 256, 700, 999)] == [
            records[i] for i in (0, 255, 256, 700, 999)]
        assert reopened.get(1000) is None and reopened.start_of(500) is not None
        assert index_file.stat().st_size == 4 * 16
    index_file.unlink()
    assert PaymentArchive(str(tmp_path)).get(999) == records[999]


def test_an_updates_memo_splits_it_into_its_payments_with_their_references(
        sides: Sides, clock: Clock) -> None:
    from perund.channel.memo import PaymentPart

    alice, bob = sides
    pay = Pay(alice, bob, clock)
    merged = (PaymentPart((4,), False, "inv-1"), PaymentPart((6,), False, None))
    for store in sides:
        store.annotate(pay.alice.channel_id, 1, merged)
    pay.pay("alice", 10)
    wrong = (PaymentPart((5,), False, "inv-2"),)  # claims 5 where the state moves 7
    for store in sides:
        store.annotate(pay.alice.channel_id, 2, wrong)
    pay.pay("alice", 7)
    request = (PaymentPart((3,), True, "order-9"),)
    for store in sides:
        store.annotate(pay.alice.channel_id, 3, request)
    pay.pay("alice", -3)

    def shown(store: SessionStore) -> list[tuple[str, int, bool, str | None]]:
        return [(r.direction, r.amount, r.request, r.reference) for r in _listed(store)]

    assert shown(alice) == [("received", 3, True, "order-9"), ("sent", 7, False, None),
                            ("sent", 6, False, None), ("sent", 4, False, "inv-1")]
    assert shown(bob) == [("sent", 3, True, "order-9"), ("received", 7, False, None),
                          ("received", 6, False, None), ("received", 4, False, "inv-1")]
    assert [r.version for r in _listed(bob)] == [3, 2, 1, 1]


@pytest.mark.parametrize("time", [float("nan"), float("inf"), -1.0, 1e300])
def test_a_payment_time_that_is_no_date_is_neither_written_nor_read(time: float) -> None:
    """A record whose time is NaN, infinite, negative or past year 9999 would break the API's
    dates and JSON: refused when encoded, and `StoreCorrupt` when a damaged file holds one
    (found by fuzzing the record decoders)."""
    record = PaymentRecord(1, ChannelID(b"\x01" * 32), BOB.address, "sent", ETH, 5, 2, 1.0)
    good = encode_payment(record)
    with pytest.raises(StoreError, match="time"):
        encode_payment(replace(record, time=time))
    damaged = good.replace(msgpack.packb(1.0), msgpack.packb(time))
    assert damaged != good
    with pytest.raises(StoreCorrupt, match="time"):
        decode_payment(damaged)
