"""semidbm's data file on disk: checking it, repairing a torn tail, and compacting it safely.

semidbm 0.5.1 keeps one append-only file, `<dir>/data`: an 8-byte header (`SEMI`, format
major and minor as two big-endian uint16) and then one record per key written::

    key size (int32 BE) ‖ value size (int32 BE, -1 for a delete) ‖ key ‖ value ‖ CRC32 (BE)

where the CRC32 covers `key ‖ value` (just `key` for a delete). semidbm writes each record with
one `os.write` on an unbuffered `O_APPEND` descriptor; the store writes a whole commit's records
with one (`append`), in the same format, over zeros it keeps ahead of them while open
(perund.storage.datalog), so there is no user-space buffer to flush. semidbm's loader does
not check the CRCs, fails on a partial record header, and on a record cut inside its value
stops reading but leaves the stray bytes in the file: the next append lands after them, and the
file no longer parses. Hence `repair` runs before every open (it also cuts those zeros).

semidbm's own `compact()` is not crash-safe (it reuses a leftover `compact/` directory as is,
and never fsyncs the directory after its rename), so `compact` here writes a fresh file, fsyncs
it, renames it over the data file and fsyncs the directory.
"""

from __future__ import annotations

import os
import shutil
import struct
from binascii import crc32
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import semidbm
from twisted.logger import Logger

from perund.errors import StoreCorrupt

log = Logger()

DATA_NAME: Final = "data"
"""semidbm's data file in the store directory."""

COMPACT_DIR: Final = "compact"
"""Where a compaction writes the new data file before renaming it into place."""

HEADER: Final = b"SEMI" + struct.pack("!HH", 1, 1)
"""The header semidbm 0.5.1 writes (format 1.1); it reads any minor version of format 1."""

RECORD_OVERHEAD: Final = 12
"""Bytes a record takes besides its key and value: two sizes and the CRC32."""

MAX_KEY: Final = 1024
MAX_VALUE: Final = 16 * 1024 * 1024
"""Bounds on record sizes this store writes; a record header outside them is damage."""

_SIZES: Final = struct.Struct("!ii")
_CRC: Final = struct.Struct("!I")


@dataclass
class Scan:
    """What `scan` found: the offset after the last good record, the file size, and each live
    key's record size (for the compaction trigger)."""

    good_end: int
    size: int
    records: int = 0
    live: dict[bytes, int] = field(default_factory=dict)
    content_end: int = 0
    """Where the bytes that are not zero end: the room an open store keeps ahead of its
    records is zeros (`DataLog`), cut at the next open like a torn tail, but silently."""

    @property
    def torn(self) -> int:
        """Bytes of a torn write after the last good record (zeros after them not counted)."""
        return max(self.content_end - self.good_end, 0)


def record_size(key: bytes, value: bytes | None) -> int:
    """Bytes one record of `key` takes in the file (`value` None: a delete)."""
    return RECORD_OVERHEAD + len(key) + (0 if value is None else len(value))


def _record_end(data: bytes, at: int) -> int | None:
    """The end offset of a complete, intact record starting at `at`, else None."""
    if len(data) - at < 8:
        return None
    key_size: int
    value_size: int
    key_size, value_size = _SIZES.unpack_from(data, at)
    if not 0 < key_size <= MAX_KEY or not -1 <= value_size <= MAX_VALUE:
        return None
    body_end = at + 8 + key_size + max(value_size, 0)
    end = body_end + 4
    if end > len(data):
        return None
    (expected,) = _CRC.unpack_from(data, body_end)
    if crc32(memoryview(data)[at + 8 : body_end]) != expected:
        return None
    return end


def scan(path: str, shown: str | None = None) -> Scan:
    """Check semidbm data file `path` record by record (sizes and CRC32).

    A damaged region followed by nothing intact is a torn tail: the result says where the good
    part ends. A damaged record followed by an intact one is damage in the middle, which no crash
    of ours can cause and which repair must not paper over: `StoreCorrupt` naming the file and
    the offset. So is a header that is not semidbm's, or a delete of a key never written.
    """
    with open(path, "rb") as f:
        data = f.read()
    path = shown or path  # the name in messages from here on
    size = len(data)
    if size < len(HEADER):
        if data != HEADER[:size]:
            raise StoreCorrupt(f"{path} is not a semidbm data file", file=path)
        return Scan(good_end=0, size=size)
    if data[:4] != HEADER[:4] or data[4:6] != HEADER[4:6]:
        raise StoreCorrupt(f"{path} is not a semidbm format 1 data file", file=path)
    content_end = _content_end(data)
    result = Scan(good_end=len(HEADER), size=size, content_end=content_end)
    at = len(HEADER)
    live = result.live
    while at < size:
        end = _record_end(data, at)
        if end is None:
            # No intact record lies wholly in the zeros at the end (its key size would be 0).
            for later in range(at + 1, content_end - RECORD_OVERHEAD + 1):
                if _record_end(data, later) is not None:
                    raise StoreCorrupt(
                        f"{path}: damaged record at offset {at}, intact records after it "
                        f"(from offset {later}); not a torn write, refusing to guess",
                        file=path,
                        offset=at,
                    )
            break
        key_size, value_size = _SIZES.unpack_from(data, at)
        key = data[at + 8 : at + 8 + key_size]
        if value_size < 0:
            if key not in live:
                raise StoreCorrupt(
                    f"{path}: record at offset {at} deletes a key that does not exist",
                    file=path,
                    offset=at,
                )
            del live[key]
        else:
            live[key] = end - at
        result.records += 1
        at = result.good_end = end
    return result


def _content_end(data: bytes) -> int:
    """The offset after the last byte of `data` that is not zero (0 if all are)."""
    end = len(data)
    while end:
        start = max(end - 65536, 0)
        chunk = data[start:end]
        if chunk.count(0) != len(chunk):
            return start + len(chunk.rstrip(b"\0"))
        end = start
    return 0


def _fsync_path(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make the directory entries of `path` durable (after a create or rename in it)."""
    _fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace the small file `path` by `data`: after any crash it holds the old or the new
    content, whole (written beside it, fsynced, renamed over it, the directory fsynced). The
    file gets `mode` (node state is its owner's alone by default)."""
    target = os.fspath(path)
    tmp = target + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with open(fd, "wb") as out:
        os.fchmod(fd, mode)  # an older .tmp keeps its mode through O_CREAT
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    fsync_dir(os.path.dirname(os.path.abspath(target)))


def repair(directory: str, shown: str | None = None) -> Scan | None:
    """Make `<directory>/data` openable by semidbm, keeping every intact record.

    Removes what an interrupted compaction left behind, cuts a torn tail (logging how many bytes
    went) and rewrites a torn header of a file that holds no record yet. None when there is no
    data file; `StoreCorrupt` for damage that is not a torn tail (see `scan`). `shown` is the
    folder's name in messages (`directory` may reach it through a descriptor).
    """
    shown = shown or directory
    leftover = os.path.join(directory, COMPACT_DIR)
    if os.path.lexists(leftover):
        # The data file is the old or the new one, both complete: the rename is the commit point.
        log.warn("store {directory}: removing an interrupted compaction", directory=shown)
        shutil.rmtree(leftover)
        fsync_dir(directory)
    path = os.path.join(directory, DATA_NAME)
    if not os.path.exists(path):
        return None
    result = scan(path, os.path.join(shown, DATA_NAME))
    if result.good_end == 0:
        # Torn while semidbm wrote the header of a new file: nothing was ever stored in it.
        log.warn("store {path}: rewriting a torn file header ({size} bytes)",
                 path=os.path.join(shown, DATA_NAME), size=result.size)
        with open(path, "wb") as f:
            f.write(HEADER)
            f.flush()
            os.fsync(f.fileno())
        return Scan(good_end=len(HEADER), size=len(HEADER))
    if result.size != result.good_end:
        if result.torn:
            log.warn(
                "store {path}: cut {cut} bytes of a torn last write at offset {offset}; "
                "{records} intact records kept",
                path=os.path.join(shown, DATA_NAME), cut=result.torn, offset=result.good_end,
                records=result.records,
            )
        os.truncate(path, result.good_end)
        _fsync_path(path)
        result = Scan(good_end=result.good_end, size=result.good_end,
                      records=result.records, live=result.live)
    return result


def append(db: Any, writes: Iterable[tuple[bytes, bytes | None]],
           room: Callable[[int], int] | None = None) -> int:
    """Append `writes` (a value of None deletes a key `db` holds) to open semidbm handle `db`'s
    data file in one write, and update its index as its own setters would; the bytes appended.

    One system call for a whole commit instead of one per record: the records land in order,
    so a write torn by a crash keeps a prefix of them, which `repair` then cuts back to the last
    intact record, as it does for a torn single record.

    With `room`, the records are written over zeros kept ahead of them: `room(end)` makes the
    file reach `end` at least and returns a descriptor to write with (not appending).
    """
    offset: int = db._current_offset
    blob = bytearray()
    placed: list[tuple[bytes, tuple[int, int] | None]] = []
    for key, value in writes:
        key_size = len(key)
        if value is None:
            blob += _SIZES.pack(key_size, -1)
            blob += key
            blob += _CRC.pack(crc32(key))
            placed.append((key, None))
        else:
            value_size = len(value)
            placed.append((key, (offset + len(blob) + 8 + key_size, value_size)))
            blob += _SIZES.pack(key_size, value_size)
            blob += key
            blob += value
            blob += _CRC.pack(crc32(value, crc32(key)))
    view = memoryview(blob)
    if room is None:
        fd = db._data_fd
        while view:
            # A regular file takes a short write only when it cannot take more (a full disk):
            # the next write then raises, and the commit fails with the index as it was.
            view = view[os.write(fd, view):]
    else:
        fd, at = room(offset + len(blob)), offset
        while view:
            written = os.pwrite(fd, view, at)
            view, at = view[written:], at + written
    index: dict[bytes, tuple[int, int]] = db._index
    for key, where in placed:
        if where is None:
            del index[key]
        else:
            index[key] = where
    db._current_offset = offset + len(blob)
    return len(blob)


def compact(directory: str, items: Iterable[tuple[bytes, bytes]]) -> int:
    """Replace `<directory>/data` by a file holding only `items`, crash-safely; its size.

    The caller must have closed its semidbm handle on the data file (and reopens it after).
    Until the rename the old file is untouched; the new one is complete and fsynced before it.
    """
    tmp = os.path.join(directory, COMPACT_DIR)
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    new = semidbm.open(tmp, "n")
    try:
        append(new, items)
    finally:
        new.close()  # fsyncs
    os.replace(os.path.join(tmp, DATA_NAME), os.path.join(directory, DATA_NAME))
    fsync_dir(directory)
    os.rmdir(tmp)
    return os.path.getsize(os.path.join(directory, DATA_NAME))
