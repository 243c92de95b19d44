"""Repair on open: a torn or truncated tail is cut and every earlier record kept; damage in the
middle is an error naming the file, and the file is left as it was."""

from __future__ import annotations

import os
import shutil
import struct
from binascii import crc32
from dataclasses import replace
from pathlib import Path

import pytest
import semidbm
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import StoreCorrupt
from perund.storage import datafile
from perund.storage.datalog import ROOM
from perund.storage.store import SessionStore
from tests.storage.helpers import durable, persisted_payments


def _record(key: bytes, value: bytes | None) -> bytes:
    """One record in semidbm's format (value None: a delete)."""
    if value is None:
        return struct.pack("!ii", len(key), -1) + key + struct.pack("!I", crc32(key))
    return (struct.pack("!ii", len(key), len(value)) + key + value
            + struct.pack("!I", crc32(key + value)))


def _boundaries(path: Path) -> list[int]:
    """The offset where each record starts, then the file size."""
    data = path.read_bytes()
    at, starts = len(datafile.HEADER), []
    while at < len(data):
        starts.append(at)
        key_size, value_size = struct.unpack_from("!ii", data, at)
        at += 12 + key_size + max(value_size, 0)
    return [*starts, at]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Channel]]:
    """A store holding one record per persisted value of a few payments (one channel, two
    sides: the same key each time), plus a block cursor; each value's record in order (no
    payment records: tests/storage/test_history.py tears those)."""
    values = list(persisted_payments(4))
    source = tmp_path / "source"
    clock = Clock()
    store = SessionStore(source, clock, record_payments=False)
    for value in values:
        store.put(value)
        clock.advance(0)  # one commit (one record) per value
    store.close()
    return source, values


def _copy(source: Path, target: Path, size: int, zeros: int = 0) -> Path:
    """A copy of store `source` whose data file is cut at `size`, then `zeros` zeros."""
    shutil.copytree(source, target)
    os.truncate(target / "data", size)
    if zeros:
        with open(target / "data", "ab") as f:
            f.write(bytes(zeros))
    return target


def _open_channel(path: Path) -> Channel | None:
    store = SessionStore(path, Clock())
    try:
        found = list(store.channels())
        assert len(found) <= 1
        return found[0] if found else None
    finally:
        store.close()


def test_a_cut_anywhere_in_the_last_record_keeps_every_earlier_one(
    written: tuple[Path, list[Channel]], tmp_path: Path
) -> None:
    source, values = written
    bounds = _boundaries(source / "data")
    assert len(bounds) == len(values) + 1
    last_start, end = bounds[-2], bounds[-1]
    for size in range(last_start, end):
        copy = _copy(source, tmp_path / f"cut{size}", size)
        assert _open_channel(copy) == durable(values[-2])
        assert os.path.getsize(copy / "data") == last_start
        shutil.rmtree(copy)
    assert _open_channel(source) == durable(values[-1])


def test_a_cut_inside_an_earlier_record_keeps_the_ones_before_it(
    written: tuple[Path, list[Channel]], tmp_path: Path
) -> None:
    source, values = written
    bounds = _boundaries(source / "data")
    for i in (0, 1, len(values) // 2):
        start, end = bounds[i], bounds[i + 1]
        for size in (start + 1, start + 7, start + 8, start + 9, (start + end) // 2, end - 1):
            copy = _copy(source, tmp_path / f"cut{size}", size)
            assert _open_channel(copy) == (None if i == 0 else durable(values[i - 1]))
            shutil.rmtree(copy)


def test_a_repaired_store_takes_new_writes_that_survive_the_next_open(
    written: tuple[Path, list[Channel]], tmp_path: Path
) -> None:
    source, values = written
    bounds = _boundaries(source / "data")
    copy = _copy(source, tmp_path / "copy", bounds[-2] + 5)
    clock = Clock()
    store = SessionStore(copy, clock)
    store.put(values[-1])
    store.set_block_cursor(99)
    clock.advance(0)
    store.close()
    store = SessionStore(copy, clock)
    assert list(store.channels()) == [durable(values[-1])]
    assert store.block_cursor() == 99
    store.close()


@pytest.mark.parametrize("tail", [b"\x00" * 4096, b"\x00\x00\x00\x05\x00\x00", b"\xff" * 37,
                                  bytes(range(256)) * 3])
def test_zeros_or_garbage_after_the_last_record_are_cut(
    written: tuple[Path, list[Channel]], tail: bytes
) -> None:
    source, values = written
    size = os.path.getsize(source / "data")
    with open(source / "data", "ab") as f:
        f.write(tail)
    assert _open_channel(source) == durable(values[-1])
    assert os.path.getsize(source / "data") == size


def test_an_open_store_writes_over_zeros_it_keeps_ahead_and_a_crash_leaves_them_harmless(
        tmp_path: Path) -> None:
    """A commit writes its records over zeros the file holds already (its size unchanged, so
    its fsync flushes data alone); a copy taken while the store is open (a crash) opens with
    every record, the zeros cut without a word of a torn write; a torn record in front of them
    is cut as before, and the warning counts its bytes, not the zeros."""
    values = list(persisted_payments(3))
    source = tmp_path / "source"
    clock = Clock()
    store = SessionStore(source, clock, record_payments=False)
    store.put(values[0])
    clock.advance(0)
    size = os.path.getsize(source / "data")
    assert size >= store.file_bytes + ROOM
    store.put(values[1])
    clock.advance(0)
    assert os.path.getsize(source / "data") == size  # written over the zeros
    end = store.file_bytes
    crashed = tmp_path / "crashed"
    shutil.copytree(source, crashed)
    store.close()
    logged: list[str] = []
    with capturedLogs() as events:
        assert _open_channel(crashed) == durable(values[1])
        logged = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    assert logged == []
    assert os.path.getsize(crashed / "data") == end
    torn = tmp_path / "torn"
    shutil.copytree(crashed, torn)
    with open(torn / "data", "r+b") as f:  # the last record half written, zeros after it
        data = f.read()
        start = _boundaries(torn / "data")[-2]
        f.seek(start + (end - start) // 2)
        f.truncate()
        f.write(bytes(ROOM))
    with capturedLogs() as events:
        assert _open_channel(torn) == durable(values[0])
        logged = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    [warning] = logged
    cut = int(warning.split("cut ")[1].split(" bytes")[0])
    # The torn record's bytes (less any zeros it ended with), never the zeros after them.
    assert 0 < cut <= (end - start) // 2, warning
    assert data  # read before the tear


def test_a_torn_header_of_a_new_file_is_rewritten(tmp_path: Path) -> None:
    for size in range(len(datafile.HEADER)):
        path = tmp_path / f"h{size}"
        path.mkdir()
        (path / "data").write_bytes(datafile.HEADER[:size])
        assert _open_channel(path) is None
        assert (path / "data").read_bytes() == datafile.HEADER


@pytest.mark.parametrize("where", ["size", "key", "value", "checksum"])
def test_damage_in_the_middle_is_an_error_naming_the_file(
    written: tuple[Path, list[Channel]], where: str
) -> None:
    source, _ = written
    bounds = _boundaries(source / "data")
    start = bounds[2]
    offset = {"size": start + 5, "key": start + 9, "value": start + 60,
              "checksum": bounds[3] - 2}[where]
    data = bytearray((source / "data").read_bytes())
    data[offset] ^= 0x40
    (source / "data").write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt) as raised:
        SessionStore(source, Clock())
    assert str(source / "data") in str(raised.value)
    assert f"offset {start}" in str(raised.value)
    assert (source / "data").read_bytes() == bytes(data)  # nothing cut
    # The lock was released: once the damage is fixed by hand, the store opens.
    data[offset] ^= 0x40
    (source / "data").write_bytes(bytes(data))
    SessionStore(source, Clock()).close()


def test_a_record_that_does_not_decode_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.mkdir()
    key = b"c" + b"\x11" * 32
    (path / "data").write_bytes(datafile.HEADER + _record(key, b"\x01\x93\x01\x02\x03")
                                + _record(b"b", b"\x01\x05"))
    with pytest.raises(StoreCorrupt) as raised:
        SessionStore(path, Clock())
    assert str(path / "data") in str(raised.value)
    assert raised.value.data["key"] == key.hex()
    assert "channel record must be an array of 10" in str(raised.value)


def test_other_damage_that_semidbm_would_choke_on_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.mkdir()
    (path / "data").write_bytes(datafile.HEADER + _record(b"b", None) + _record(b"b", b"\x01\x05"))
    with pytest.raises(StoreCorrupt, match="deletes a key that does not exist"):
        SessionStore(path, Clock())
    (path / "data").write_bytes(b"GDBM" + datafile.HEADER[4:])
    with pytest.raises(StoreCorrupt, match="not a semidbm"):
        SessionStore(path, Clock())
    (path / "data").write_bytes(datafile.HEADER + _record(b"z", b"?"))
    with pytest.raises(StoreCorrupt, match="unknown kind of record"):
        SessionStore(path, Clock())


def test_semidbm_alone_does_not_survive_a_torn_tail(
    written: tuple[Path, list[Channel]], tmp_path: Path
) -> None:
    # Why repair exists: after a cut inside a value semidbm opens, but appends after the stray
    # bytes, so the next open reads the torn record's value across the new record, which is
    # lost; after a cut inside a record header it cannot open at all.
    source, _ = written
    bounds = _boundaries(source / "data")
    copy = _copy(source, tmp_path / "raw", bounds[-2] + 100)
    db = semidbm.open(str(copy), "c")
    db[b"b"] = b"\x01\x05"
    db.close()
    reopened = semidbm.open(str(copy), "r")
    assert b"b" not in reopened
    reopened.close()
    copy = _copy(source, tmp_path / "raw2", bounds[-2] + 3)
    with pytest.raises(semidbm.DBMLoadError):
        semidbm.open(str(copy), "r")


def test_a_deleted_channel_stays_deleted_across_repair(tmp_path: Path) -> None:
    values = list(persisted_payments(1))
    clock = Clock()
    store = SessionStore(tmp_path / "s", clock)
    store.put(values[0])
    store.put(values[-1])
    clock.advance(0)
    store.forget(ChannelID(values[0].channel_id))
    store.set_block_cursor(7)
    clock.advance(0)
    store.close()
    data = tmp_path / "s" / "data"
    os.truncate(data, os.path.getsize(data) - 1)  # tear the cursor record
    store = SessionStore(tmp_path / "s", clock)
    assert list(store.channels()) == []
    assert store.block_cursor() is None
    store.close()


def test_one_commit_is_one_write_in_semidbms_format(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit's records (writes and a delete) leave in one write, byte for byte what
    semidbm's own setters would have appended, and semidbm reads them back."""
    values = {b"c" + bytes([i]) * 32: bytes([i]) * (40 + i) for i in range(5)}
    ours = semidbm.open(str(tmp_path / "ours"), "c")
    theirs = semidbm.open(str(tmp_path / "theirs"), "c")
    for key, value in values.items():
        theirs[key] = value
    del theirs[b"c" + bytes([2]) * 32]
    writes: list[tuple[bytes, bytes | None]] = [*values.items(), (b"c" + bytes([2]) * 32, None)]
    written = os.write
    calls = []

    def counting(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return written(fd, data)

    monkeypatch.setattr(os, "write", counting)
    appended = datafile.append(ours, writes)
    monkeypatch.undo()
    assert calls == [appended]
    assert dict(ours._index) == dict(theirs._index)
    ours.close()
    theirs.close()
    assert (tmp_path / "ours" / "data").read_bytes() == (tmp_path / "theirs" / "data").read_bytes()
    reopened = semidbm.open(str(tmp_path / "ours"), "r")
    assert {key: reopened[key] for key in reopened} == {
        key: value for key, value in values.items() if key != b"c" + bytes([2]) * 32}
    reopened.close()


def test_a_commit_torn_inside_its_one_write_keeps_the_records_before_the_tear(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several channels' records in one commit leave in one write; cut at every offset inside
    it, the next open keeps exactly the records wholly before the cut."""
    first = list(persisted_payments(2))[-1]
    second = replace(first, channel_id=ChannelID(b"\x41" * 32))
    other = ChannelID(b"\x42" * 32)
    source = tmp_path / "source"
    clock = Clock()
    store = SessionStore(source, clock, record_payments=False)
    store.put(first)
    clock.advance(0)
    before = store.file_bytes
    store.put(second)
    store.put(replace(first, channel_id=other))
    written, writes = os.pwrite, []
    monkeypatch.setattr(os, "pwrite",
                        lambda fd, data, at: writes.append(at) or written(fd, data, at))
    clock.advance(0)  # one commit, two records
    monkeypatch.undo()
    assert writes == [before]  # one write, over the zeros kept ahead (no room to make)
    room = (source / "data").stat().st_size
    assert room >= before + ROOM
    store.close()
    assert (source / "data").stat().st_size == store.file_bytes  # closed: no zeros
    ends = [end for end in _boundaries(source / "data") if end > before]
    assert len(ends) == 2
    for cut in range(before + 1, ends[-1]):
        # The tear as a crash leaves it: on a file cut there, or with zeros after it (the
        # room the store kept, whose size was durable).
        for zeros in (0, room - cut):
            copy = _copy(source, tmp_path / f"cut{cut}-{zeros}", cut, zeros)
            reopened = SessionStore(copy, Clock(), record_payments=False)
            kept = {c.channel_id for c in reopened.channels()}
            assert kept == {first.channel_id} | ({second.channel_id} if cut >= ends[0] else set()) \
                | ({other} if cut >= ends[1] else set())
            reopened.close()
