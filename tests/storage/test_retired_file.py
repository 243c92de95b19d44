"""Retired channels in a file of their own (`retired`, indexed by `retired.idx`): out of the
data file, across reopens, a torn tail, a kill between the two files at each step of a
retirement and of a revival, the migration of a store of the code before, paging, and the
index the open reads instead of the file."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import semidbm
from twisted.internet.task import Clock

from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import StoreCorrupt, StoreError
from perund.storage import codec, retired_file
from perund.storage.datalog import DataLog
from perund.storage.store import SessionStore
from tests.channel.factories import make_pair
from tests.storage.helpers import renamed

RETIRED = "retired"
INDEX = "retired.idx"


def closed(channel: Channel) -> Channel:
    return replace(channel, phase=Phase.CLOSED)


def channels(count: int) -> list[Channel]:
    """`count` closed channels of Alice's, each its own ID."""
    alice, _ = make_pair()
    return [closed(renamed(alice, 100 + n)) for n in range(count)]


def data_keys(path: Path) -> set[bytes]:
    db: Any = semidbm.open(str(path), "r")
    try:
        return set(db.keys())
    finally:
        db.close()


def frames(path: Path) -> list[int]:
    """Where each record of the retired file starts, then its size."""
    data, at, starts = (path / RETIRED).read_bytes(), 0, []
    while at < len(data):
        starts.append(at)
        at += struct.unpack_from("!I", data, at)[0] + 8
    return [*starts, at]


def data_end(path: Path) -> int:
    """The end of the data file's records (a closed store's file ends there)."""
    return os.path.getsize(path / "data")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def opened(path: Path, clock: Clock) -> Iterator[list[SessionStore]]:
    """Stores a test opened, closed at its end (a test appends each it opens)."""
    stores: list[SessionStore] = []
    yield stores
    for store in stores:
        store.close()


def open_store(path: Path, clock: Clock, stores: list[SessionStore],
               **kwargs: Any) -> SessionStore:
    store = SessionStore(path, clock, **kwargs)
    stores.append(store)
    return store


def copy(source: Path, target: Path, *, data: int | None = None,
         retired: int | None = None) -> Path:
    """A copy of the closed store `source`, its data file and its retired file cut at the
    sizes given."""
    shutil.copytree(source, target)
    if data is not None:
        os.truncate(target / "data", data)
    if retired is not None:
        os.truncate(target / RETIRED, retired)
    return target


def where(path: Path, channel_id: ChannelID) -> tuple[Channel | None, Channel | None]:
    """The channel as the store at `path` holds it: (live, retired)."""
    store = SessionStore(path, Clock())
    try:
        return store.channel(channel_id), store.retired_channel(channel_id)
    finally:
        store.close()


def test_retired_records_leave_the_data_file_and_come_back_when_put_again(
        path: Path, clock: Clock, opened: list[SessionStore]) -> None:
    a, b = channels(2)
    store = open_store(path, clock, opened)
    store.put(a)
    store.put(b)
    store.retire(a.channel_id)
    store.close()
    assert (path / RETIRED).stat().st_size > 0
    assert all(key[:1] not in (b"r", b"u") for key in data_keys(path))
    assert b"c" + a.channel_id not in data_keys(path)

    store = open_store(path, clock, opened)
    assert [c.channel_id for c in store.channels()] == [b.channel_id]
    assert store.retired_channel(a.channel_id) == a
    settling = replace(a, phase=Phase.CLOSING)  # its conclusion was lost: settled again
    store.put(settling)
    store.close()
    assert b"u" + a.channel_id in data_keys(path)  # the revival marker

    store = open_store(path, clock, opened)
    assert store.channel(a.channel_id) == settling
    assert store.retired_channel(a.channel_id) is None
    assert store.retired_count() == 0
    assert store.retired_ids(10) == ([], 1)  # its old record's place, looked at and passed
    store.put(closed(settling))
    store.retire(a.channel_id)  # retired again: its newer record is the one read
    store.close()

    store = open_store(path, clock, opened)
    assert store.channel(a.channel_id) is None
    assert store.retired_channel(a.channel_id) == closed(settling)
    assert store.retired_ids(10)[0] == [a.channel_id]
    assert store.retired_count() == 1
    store.close()
    assert b"u" + a.channel_id not in data_keys(path)  # of no use since: deleted at the open


def test_retired_and_put_again_in_one_turn_after_an_earlier_revival_stays_live(
        path: Path, clock: Clock, opened: list[SessionStore]) -> None:
    a, = channels(1)
    store = open_store(path, clock, opened)
    store.put(a)
    store.retire(a.channel_id)
    clock.advance(0)
    store.put(a)  # live again: a marker names its record
    clock.advance(0)
    store.retire(a.channel_id)
    store.put(a)  # same turn: the retirement never reaches the file, the marker still counts
    store.close()
    store = open_store(path, clock, opened)
    assert store.channel(a.channel_id) == a
    assert store.retired_count() == 0


def test_compaction_no_longer_copies_retired_records(
        tmp_path: Path, clock: Clock, opened: list[SessionStore]) -> None:
    sizes = []
    for count in (10, 300):
        path = tmp_path / str(count)
        store = open_store(path, clock, opened)
        retiring = channels(count)
        for channel in retiring:
            store.put(channel)
        clock.advance(0)
        for channel in retiring:
            store.retire(channel.channel_id)
        store.put(make_pair()[0])  # one live channel
        store.close()
        store = open_store(path, clock, opened, compact_ratio=1.0001, compact_min_bytes=1)
        assert store.compactions == 1
        assert store.retired_count() == count
        store.close()
        sizes.append(data_end(path))
    assert sizes[0] == sizes[1]


# ---------------------------------------------------------------------------------------------
# A torn tail and a kill between the two files


@pytest.fixture
def two_retired(path: Path, clock: Clock) -> tuple[Path, Channel, Channel, int]:
    """A store where `a` retired, then `b` (its own commit); and the size its data file had
    before `b`'s retirement (`b` live there)."""
    a, b = channels(2)
    store = SessionStore(path, clock)
    store.put(a)
    store.put(b)
    store.retire(a.channel_id)
    store.close()
    before = data_end(path)
    store = SessionStore(path, clock)
    store.retire(b.channel_id)
    store.close()
    return path, a, b, before


def test_a_retired_record_torn_anywhere_leaves_its_channel_live(
        two_retired: tuple[Path, Channel, Channel, int], tmp_path: Path) -> None:
    """A crash inside the append of `b`'s record: the deletion of its live record never
    reached the data file (the append is fsynced first). The torn tail is cut, `a` stays
    retired, `b` live; a new retirement of `b` then holds."""
    path, a, b, before = two_retired
    start, end = frames(path)[-2:]
    for size in range(start, end):
        cut = copy(path, tmp_path / f"cut{size}", data=before, retired=size)
        assert where(cut, b.channel_id) == (b, None)
        assert where(cut, a.channel_id) == (None, a)
        assert os.path.getsize(cut / RETIRED) == start
        if size == start + 40:
            clock = Clock()
            store = SessionStore(cut, clock)
            store.retire(b.channel_id)
            store.close()
            assert where(cut, b.channel_id) == (None, b)
        shutil.rmtree(cut)


@pytest.mark.parametrize("tail", [b"\x00" * 4096, b"\x00\x00\x01\x00\xff", b"\xff" * 600])
def test_zeros_or_garbage_after_the_retired_records_are_cut(
        two_retired: tuple[Path, Channel, Channel, int], tail: bytes) -> None:
    path, a, b, _ = two_retired
    size = os.path.getsize(path / RETIRED)
    with open(path / RETIRED, "ab") as f:
        f.write(tail)
    assert where(path, a.channel_id) == (None, a)
    assert where(path, b.channel_id) == (None, b)
    assert os.path.getsize(path / RETIRED) == size


def test_damage_in_the_middle_of_the_retired_file_is_an_error_naming_it(
        two_retired: tuple[Path, Channel, Channel, int]) -> None:
    path, *_ = two_retired
    os.remove(path / INDEX)  # else the open reads the last record only, and finds it whole
    data = bytearray((path / RETIRED).read_bytes())
    data[60] ^= 0x40  # inside a's record, b's intact after it
    (path / RETIRED).write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt) as raised:
        SessionStore(path, Clock())
    assert str(path / RETIRED) in str(raised.value)
    assert "offset 0" in str(raised.value)
    assert (path / RETIRED).read_bytes() == bytes(data)  # nothing cut


def test_a_kill_after_the_retired_record_before_the_live_ones_deletion_keeps_it_retired(
        two_retired: tuple[Path, Channel, Channel, int], tmp_path: Path) -> None:
    """`b`'s record is in the retired file whole; the data file cut anywhere in the commit
    that deletes its live record (or before it): `b` is retired, and its live record goes."""
    path, _, b, before = two_retired
    for size in range(before, data_end(path) + 1):
        cut = copy(path, tmp_path / f"cut{size}", data=size)
        assert where(cut, b.channel_id) == (None, b)
        assert b"c" + b.channel_id not in data_keys(cut)
        shutil.rmtree(cut)


def test_a_revival_cut_anywhere_leaves_the_channel_live_or_retired_never_neither(
        path: Path, clock: Clock, tmp_path: Path) -> None:
    """A retired channel put again (its conclusion settled again): the data file cut at every
    byte of that commit. Before its live record is whole the channel is retired as it was;
    once it is, live, never shadowed by its retired record."""
    a, = channels(1)
    store = SessionStore(path, clock)
    store.put(a)
    store.retire(a.channel_id)
    store.close()
    before = data_end(path)
    settling = replace(a, phase=Phase.CLOSING)
    store = SessionStore(path, clock)
    store.put(settling)
    store.close()
    end = data_end(path)
    assert end - before > 400
    for size in range(before, end + 1):
        cut = copy(path, tmp_path / f"cut{size}", data=size)
        assert where(cut, a.channel_id) == ((settling, None) if size == end else (None, a))
        shutil.rmtree(cut)


# ---------------------------------------------------------------------------------------------
# A store of the code before: retired records under `r` keys in the data file


def old_format(path: Path, clock: Clock, retired: list[Channel], live: list[Channel]) -> None:
    """A store as the code before left it: `retired` under `r` keys in the data file, in that
    order (the order they retired), and `live` channels."""
    store = SessionStore(path, clock)
    for channel in live:
        store.put(channel)
    store.close()
    db: Any = semidbm.open(str(path), "w")
    for channel in retired:
        db[b"r" + channel.channel_id] = codec.encode_channel(channel)
    db.close()


def test_a_store_of_the_code_before_moves_its_retired_records_at_the_open(
        path: Path, clock: Clock, opened: list[SessionStore]) -> None:
    retired, (live,) = channels(3), channels(4)[3:]
    old_format(path, clock, retired, [live, retired[1]])  # retired[1]: a retirement torn then
    store = open_store(path, clock, opened)
    newest_first = [c.channel_id for c in reversed(retired)]
    assert store.retired_ids(10)[0] == newest_first
    assert [c.channel_id for c in store.channels()] == [live.channel_id]
    assert all(store.retired_channel(c.channel_id) == c for c in retired)
    store.close()
    keys = data_keys(path)
    assert all(key[:1] != b"r" for key in keys)
    assert b"c" + retired[1].channel_id not in keys
    size = os.path.getsize(path / RETIRED)

    # Killed after the records were appended, before their deletion reached the data file:
    # the next open appends none again and deletes them.
    old_format(path, clock, retired, [])
    store = open_store(path, clock, opened)
    assert store.retired_ids(10)[0] == newest_first
    assert store.retired_count() == 3
    store.close()
    assert os.path.getsize(path / RETIRED) == size
    assert all(key[:1] != b"r" for key in data_keys(path))

    # Killed inside the append: the torn tail is cut and the rest appended, in order.
    os.truncate(path / RETIRED, frames(path)[1] + 30)
    old_format(path, clock, retired, [])
    store = open_store(path, clock, opened)
    assert store.retired_ids(10)[0] == newest_first
    assert all(store.retired_channel(c.channel_id) == c for c in retired)
    store.close()
    assert os.path.getsize(path / RETIRED) == size


# ---------------------------------------------------------------------------------------------
# Paging, and what the open reads


def test_a_page_of_retired_ids_costs_its_length_wherever_it_starts(
        path: Path, clock: Clock, opened: list[SessionStore]) -> None:
    retiring = channels(120)
    store = open_store(path, clock, opened)
    for channel in retiring:
        store.put(channel)
    clock.advance(0)
    for channel in retiring:
        store.retire(channel.channel_id)
        clock.advance(0)  # each in its own commit
    newest_first = [c.channel_id for c in reversed(retiring)]
    for reopened in (False, True):
        if reopened:
            store.close()
            store = open_store(path, clock, opened)
        assert store.retired_ids(10, before=newest_first[99]) == (newest_first[100:110], 10)
        pages, before = [], None
        while True:
            ids, looked = store.retired_ids(7, before)
            assert looked == len(ids)
            if not ids:
                break
            pages.extend(ids)
            before = ids[-1]
        assert pages == newest_first
    # One put again (live: passed over), one retired again (the newest now).
    store.put(retiring[50])
    store.put(retiring[10])
    clock.advance(0)
    store.retire(retiring[10].channel_id)
    clock.advance(0)
    expected = [retiring[10].channel_id] + [cid for cid in newest_first
                                            if cid not in (retiring[10].channel_id,
                                                           retiring[50].channel_id)]
    assert store.retired_ids(200)[0] == expected
    store.close()
    store = open_store(path, clock, opened)
    assert store.retired_ids(200)[0] == expected
    assert store.retired_count() == 119


def test_the_open_reads_the_index_not_the_file_and_rebuilds_an_index_that_does_not_match(
        path: Path, clock: Clock, opened: list[SessionStore],
        monkeypatch: pytest.MonkeyPatch) -> None:
    retiring = channels(50)
    store = open_store(path, clock, opened)
    for channel in retiring:
        store.put(channel)
    clock.advance(0)
    for channel in retiring:
        store.retire(channel.channel_id)
        clock.advance(0)
    store.close()
    index = (path / INDEX).read_bytes()
    assert len(index) == 50 * 44
    newest_first = [c.channel_id for c in reversed(retiring)]

    read: list[int] = []
    real = retired_file._frame_end

    def counting(data: Any, at: int, size: int) -> int | None:
        read.append(at)
        return real(data, at, size)

    monkeypatch.setattr(retired_file, "_frame_end", counting)
    torn_entry = index[:-10]  # the last entry torn (its write cut by a crash)
    lagging = index[:-44 * 5]  # entries lost with their page
    garbled = index[:44 * 20] + bytes(44) + index[44 * 21:]  # a page of zeros inside
    last_offset = struct.unpack_from("!Q", index, len(index) - 12)[0]
    wrong_last = index[:-44] + retired_file._entry(index[:32], last_offset)  # another's ID
    for damaged, reads in ((index, 1), (b"", 50), (torn_entry, 2), (lagging, 6),
                           (garbled, 31), (wrong_last, 51), (b"\x07" * 100, 50)):
        (path / INDEX).write_bytes(damaged)
        read.clear()
        store = open_store(path, clock, opened)
        assert len(read) == reads, damaged[:8]
        assert store.retired_ids(100)[0] == newest_first
        assert store.retired_channel(retiring[3].channel_id) == retiring[3]
        store.close()
        assert (path / INDEX).read_bytes() == index
    os.remove(path / INDEX)
    store = open_store(path, clock, opened)
    assert store.retired_count() == 50
    store.close()
    assert (path / INDEX).read_bytes() == index


def test_a_retirement_that_cannot_reach_its_file_leaves_the_data_file_alone(
        path: Path, clock: Clock, opened: list[SessionStore],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit appends the retired records (fsynced) before its own: when that fails, the
    live record's deletion never reaches the data file, the store fails, and the channel is
    live at the next open."""
    a, b = channels(2)
    store = open_store(path, clock, opened)
    store.put(a)
    store.put(b)
    clock.advance(0)
    order: list[str] = []
    real_append = retired_file.RetiredFile.append
    real_fsync = os.fsync

    def appending(self: retired_file.RetiredFile, records: Any) -> list[int]:
        order.append("retired")
        return real_append(self, records)

    def syncing(fd: int) -> None:
        order.append("fsync")
        real_fsync(fd)

    def data_append(self: Any, pending: Any) -> None:
        order.append("data")
        real_data_append(self, pending)

    real_data_append = DataLog.append
    monkeypatch.setattr(retired_file.RetiredFile, "append", appending)
    monkeypatch.setattr(DataLog, "append", data_append)
    monkeypatch.setattr(retired_file.os, "fsync", syncing)
    store.retire(a.channel_id)
    clock.advance(0)
    # The retired file's fsync (and its folder's: it was new) before the data file's append.
    assert order[:4] == ["retired", "fsync", "fsync", "data"]

    def failing(self: retired_file.RetiredFile, records: Any) -> list[int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(retired_file.RetiredFile, "append", failing)
    store.retire(b.channel_id)
    done = store.flush()
    assert done is not None
    failures: list[Any] = []
    done.addErrback(failures.append)
    clock.advance(0)
    assert failures and "No space left" in str(failures[0].value)
    with pytest.raises(StoreError):
        store.close()
    monkeypatch.undo()
    assert where(path, b.channel_id) == (b, None)
    assert where(path, a.channel_id) == (None, a)
