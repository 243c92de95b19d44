"""SessionStore's retired channels: when a channel closed, retiring it out of `channels` (and of
the loading), reading it back, a retirement torn by a crash, and a retired channel in use
again."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import semidbm
from eth_hash.auto import keccak
from twisted.internet.task import Clock

from perund.channel.phases import Phase
from perund.channel.records import Channel, SignedState
from perund.channel.types import ChannelID
from perund.storage import codec
from perund.storage.store import SessionStore
from tests.channel.factories import fully_signed_by_both, make_pair, next_state
from tests.storage.helpers import renamed


def two_channels() -> tuple[Channel, Channel]:
    """Alice's side of two channels (make_pair's sides share one channel ID)."""
    alice, _ = make_pair()
    return alice, renamed(alice, 1)


def closed(channel: Channel) -> Channel:
    return replace(channel, phase=Phase.CLOSED)


def paid(channel: Channel, amount: int) -> Channel:
    """`channel` one version on, `amount` moved from participant 0 to 1 (fully signed)."""
    assert channel.current is not None
    (ours, theirs), = channel.current.state.balances
    state = next_state(channel, balances=((ours - amount, theirs + amount),))
    return replace(channel, current=SignedState(state, fully_signed_by_both(state)))


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_000_000)
    return clock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(path: Path, clock: Clock) -> Iterator[SessionStore]:
    s = SessionStore(path, clock)
    yield s
    s.close()


def reopen(store: SessionStore, path: Path, clock: Clock) -> SessionStore:
    store.close()
    return SessionStore(path, clock)


def test_the_store_keeps_when_a_channel_first_closed(store: SessionStore, clock: Clock) -> None:
    alice, _ = make_pair()
    store.put(alice)
    assert store.closed_at(alice.channel_id) is None
    clock.advance(10)
    store.put(closed(alice))
    assert store.closed_at(alice.channel_id) == clock.seconds()
    clock.advance(10)
    store.put(closed(alice))  # put again closed: still the first time
    assert store.closed_at(alice.channel_id) == clock.seconds() - 10


def test_a_channel_closed_before_the_store_kept_the_time_counts_as_closed_at_the_open(
        store: SessionStore, path: Path, clock: Clock) -> None:
    alice, _ = make_pair()
    store.put(closed(alice))
    store.delete_meta("closedat:" + alice.channel_id.hex())  # as an older node left it
    clock.advance(50)
    store = reopen(store, path, clock)
    try:
        assert store.closed_at(alice.channel_id) == clock.seconds()
    finally:
        store.close()


def test_a_retired_channel_leaves_the_channels_and_is_read_back_from_the_file(
        store: SessionStore, path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = two_channels()
    alice = closed(paid(alice, 7))
    store.put(alice)
    store.put(bob)
    store.retire(alice.channel_id)
    assert [c.channel_id for c in store.channels()] == [bob.channel_id]
    assert store.channel(alice.channel_id) is None
    assert store.closed_at(alice.channel_id) is None
    assert store.retired_channel(alice.channel_id) == alice  # before the commit, too
    assert store.retired_channel(bob.channel_id) is None
    assert store.retired_count() == 1

    decoded: list[bytes] = []
    real = codec.decode_channel

    def counting(value: bytes) -> Channel:
        decoded.append(value)
        return real(value)

    monkeypatch.setattr(codec, "decode_channel", counting)
    store = reopen(store, path, clock)
    try:
        assert len(decoded) == 1  # bob's: a retired channel is not decoded at the open
        assert [c.channel_id for c in store.channels()] == [bob.channel_id]
        assert store.retired_channel(alice.channel_id) == alice
        assert store.retired_count() == 1
        assert store.metas("closedat:") == {}
    finally:
        store.close()


def test_only_a_closed_channel_retires(store: SessionStore) -> None:
    alice, _ = make_pair()
    store.put(alice)
    with pytest.raises(ValueError, match="closed"):
        store.retire(alice.channel_id)
    with pytest.raises(ValueError, match="closed"):
        store.retire(make_pair()[1].channel_id)  # not held
    assert store.channel(alice.channel_id) == alice


def test_the_payments_of_a_retired_channel_stay_in_the_history(
        store: SessionStore, path: Path, clock: Clock) -> None:
    alice, _ = make_pair()
    store.put(alice)
    store.put(paid(alice, 5), by_us=True)
    store.put(closed(paid(paid(alice, 5), 2)), by_us=True)
    before = [(r.payment_id, r.amount) for r in store.history.recent]
    assert len(before) == 2
    store.retire(alice.channel_id)
    store = reopen(store, path, clock)  # the payment records are still in the data file
    try:
        assert [(r.payment_id, r.amount) for r in store.history.recent] == before
    finally:
        store.close()


def test_a_retirement_torn_before_the_live_record_went_still_stands(
        store: SessionStore, path: Path, clock: Clock) -> None:
    alice, _ = make_pair()
    alice = closed(alice)
    store.put(alice)
    store.retire(alice.channel_id)
    store.close()
    # The commit's tail torn between the retired record and the live one's deletion.
    db: Any = semidbm.open(str(path), "w")
    db[b"c" + alice.channel_id] = codec.encode_channel(alice)
    db.close()
    store = SessionStore(path, clock)
    try:
        assert list(store.channels()) == []
        assert store.retired_channel(alice.channel_id) == alice
    finally:
        store.close()
    db = semidbm.open(str(path), "r")
    try:
        assert b"c" + alice.channel_id not in db  # deleted at that open
    finally:
        db.close()


def test_a_retired_channel_put_again_is_live_again(
        store: SessionStore, path: Path, clock: Clock) -> None:
    alice, _ = make_pair()
    store.put(closed(alice))
    store.retire(alice.channel_id)
    clock.advance(0)  # committed
    settling = replace(alice, phase=Phase.CLOSING)  # its conclusion was lost: settled again
    store.put(settling)
    assert store.retired_channel(alice.channel_id) is None  # before the commit, too
    clock.advance(0)
    assert store.retired_channel(alice.channel_id) is None
    store = reopen(store, path, clock)
    try:
        assert list(store.channels()) == [settling]
        assert store.retired_count() == 0
    finally:
        store.close()


def test_a_retired_channel_survives_a_compaction(path: Path, clock: Clock) -> None:
    store = SessionStore(path, clock)
    alice, bob = two_channels()
    store.put(closed(alice))
    store.retire(alice.channel_id)
    for amount in range(1, 30):
        store.put(paid(bob, amount))
        clock.advance(0)  # each its own commit: the file grows
    store.close()
    store = SessionStore(path, clock, compact_min_bytes=1)  # compacts while opening
    try:
        assert store.compactions == 1
        assert store.retired_channel(alice.channel_id) == closed(alice)
    finally:
        store.close()
    store = SessionStore(path, clock)
    try:
        assert store.retired_channel(alice.channel_id) == closed(alice)
        assert [c.channel_id for c in store.channels()] == [bob.channel_id]
    finally:
        store.close()


def test_retired_ids_come_the_last_retired_first_a_page_at_a_time(
        store: SessionStore, path: Path, clock: Clock) -> None:
    first, second = two_channels()
    third = replace(second, channel_id=ChannelID(keccak(b"a third")))
    for channel in (first, second, third):
        store.put(closed(channel))
    for channel in (second, first, third):
        store.retire(channel.channel_id)
    assert store.retired_ids(10)[0] == []  # not committed yet
    clock.advance(0)
    order = [third.channel_id, first.channel_id, second.channel_id]
    assert store.retired_ids(10) == (order, 3)  # the keys looked at: the store holds no others
    assert store.retired_ids(1)[0] == order[:1]
    assert store.retired_ids(5, before=order[0])[0] == order[1:]
    assert store.retired_ids(5, before=order[2])[0] == []
    assert store.retired_ids(5, before=ChannelID(b"\x01" * 32)) == ([], 0)
    store = reopen(store, path, clock)
    try:
        assert store.retired_ids(10)[0] == order
        store.put(closed(first))  # settled again and closed: live again
        clock.advance(0)
        assert store.retired_ids(10)[0] == [third.channel_id, second.channel_id]
        store.retire(first.channel_id)  # retired again: the last one now
        clock.advance(0)
        assert store.retired_ids(10)[0] == [first.channel_id, third.channel_id,
                                         second.channel_id]
    finally:
        store.close()
