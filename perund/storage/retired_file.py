"""The file of a session store's retired channels, `retired`, and its index `retired.idx`
(docs/storage.md, "Retired channels").

The file: records appended, never rewritten, each framed as `length (uint32 BE) ‖ body ‖
CRC32(body) (uint32 BE)`, the body being `channel ID (32 bytes) ‖ channel record`
(`codec.encode_channel`). A later record of the same ID supersedes an earlier one. Every
append is fsynced before the store lets anything depend on it (the live record's deletion),
so only the last append can be torn by a crash; the open cuts such a torn tail, and refuses,
as the data file does, damage followed by intact records (not a crash of ours).

The index: `channel ID (32) ‖ offset (uint64 BE) ‖ CRC32 of the two (uint32 BE)` per record,
in file order, so that the open learns where every retired channel is without reading the
file. It is derived data: appended after the file's fsync, without one of its own; at the open
its entries must check (CRC, offsets rising from 0), the last must name the record found at its
offset, and the records after it (an index entry lost with its page) are read and indexed; when
it does not match, it is rebuilt from the file (the only open that reads every record).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Final, cast

from twisted.logger import Logger

from perund.channel.types import ChannelID
from perund.errors import StoreCorrupt
from perund.storage import datafile
from perund.words import plural

log = Logger()

RETIRED_NAME: Final = "retired"
INDEX_SUFFIX: Final = ".idx"
ID_SIZE: Final = 32
_U32: Final = struct.Struct("!I")
_FRAME: Final = 2 * _U32.size
_ENTRY: Final = struct.Struct("!32sQI")
_ENTRY_BODY: Final = 40  # the bytes of an entry its CRC covers


def retired_files() -> tuple[str, ...]:
    """The names of the files the retired channels keep in the store's folder."""
    return (RETIRED_NAME, RETIRED_NAME + INDEX_SUFFIX)


def index_entries(raw: bytes) -> Iterator[tuple[ChannelID, int]]:
    """The (channel ID, offset) pairs of index bytes `RetiredFile.load` returned."""
    for channel_id, offset, _ in _ENTRY.iter_unpack(raw):
        yield ChannelID(channel_id), offset


def _entry(channel_id: bytes, offset: int) -> bytes:
    head = channel_id + offset.to_bytes(8, "big")
    return head + _U32.pack(zlib.crc32(head))


def _opened(path: str, flags: int, mode: str) -> BinaryIO:
    """File `path` opened with `flags`, never through a symbolic link (the store's folder is
    checked at the open; this keeps a link put there since from being followed)."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        return cast(BinaryIO, os.fdopen(fd, mode))
    except BaseException:
        os.close(fd)
        raise


def _frame_end(data: mmap.mmap | bytes, at: int, size: int) -> int | None:
    """The end of the intact record starting at `at`, or None when none starts there."""
    if at + _U32.size > size:
        return None
    length = _U32.unpack_from(data, at)[0]
    end = at + length + _FRAME
    if not ID_SIZE < length <= datafile.MAX_VALUE or end > size:
        return None
    body = data[at + 4:at + 4 + length]
    return end if _U32.unpack_from(data, end - 4)[0] == zlib.crc32(body) else None


class RetiredFile:
    """The retired channels' file in folder `directory` (shown as `shown` in messages) and its
    index (see the module). `load` once, then `append` and `read`."""

    def __init__(self, directory: str, shown: str) -> None:
        self.path = os.path.join(directory, RETIRED_NAME)
        self.index_path = self.path + INDEX_SUFFIX
        self.shown = os.path.join(shown, RETIRED_NAME)
        self.size = 0
        """Where the next record goes."""
        self._index_broken = False

    def load(self) -> bytes:
        """The index entries of every record, in file order (read them with
        `index_entries`), after cutting a torn tail; the index file is brought up to date.
        `StoreCorrupt` for damage a crash does not leave."""
        try:
            self.size = os.stat(self.path, follow_symlinks=False).st_size
        except FileNotFoundError:
            self.size = 0
        kept, index_bytes = self._read_index()
        start = 0
        if kept:
            channel_id, offset, _ = _ENTRY.unpack_from(kept, len(kept) - _ENTRY.size)
            if self._record_at(offset, ChannelID(channel_id)) is None:
                log.warn("retired channels {path}: the index does not match the file; "
                         "rebuilding it", path=self.shown)
                kept = b""
            else:
                start = offset + _U32.unpack(self._pread(_U32.size, offset))[0] + _FRAME
        added = self._scan_from(start)
        if kept and len(kept) == index_bytes:
            if added:
                self._write_index(added, "ab")
        elif kept or added or index_bytes > 0:
            self._write_index(kept + added, "wb")
        return kept + added

    def _read_index(self) -> tuple[bytes, int]:
        """The longest prefix of the index file's entries that checks, and the file's length
        (-1 when there is none)."""
        try:
            with _opened(self.index_path, os.O_RDONLY, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return b"", -1
        except OSError:
            return b"", 0
        good, previous = 0, -1
        for _, offset, crc in _ENTRY.iter_unpack(raw[:len(raw) - len(raw) % _ENTRY.size]):
            if zlib.crc32(raw[good:good + _ENTRY_BODY]) != crc or offset <= previous \
                    or (previous < 0 and offset != 0) or offset >= self.size:
                break
            previous = offset
            good += _ENTRY.size
        return raw[:good], len(raw)

    def _record_at(self, offset: int, channel_id: ChannelID) -> bytes | None:
        """The channel record in the intact record of `channel_id` at `offset`, else None."""
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            head = os.pread(fd, _U32.size, offset)
            if len(head) < _U32.size:
                return None
            length = _U32.unpack(head)[0]
            if not ID_SIZE < length <= datafile.MAX_VALUE:
                return None
            frame = os.pread(fd, length + _FRAME, offset)
        finally:
            os.close(fd)
        if _frame_end(frame, 0, len(frame)) is None or frame[4:4 + ID_SIZE] != channel_id:
            return None
        return frame[4 + ID_SIZE:4 + length]

    def _scan_from(self, start: int) -> bytes:
        """Index the records from offset `start` on; cut a torn tail after them."""
        added: list[bytes] = []
        size = self.size
        if start >= size:
            return b""
        with _opened(self.path, os.O_RDONLY, "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = start
            while at < size:
                end = _frame_end(data, at, size)
                if end is None:
                    break
                added.append(_entry(data[at + 4:at + 4 + ID_SIZE], at))
                at = end
            later = next((p for p in range(at + 1, size) if _frame_end(data, p, size)), None) \
                if at < size else None
        if later is not None:
            raise StoreCorrupt(
                f"{self.shown}: damaged record at offset {at}, intact records after it (from "
                f"offset {later}); not a torn write, refusing to guess", file=self.shown,
                offset=at)
        if at < size:
            log.warn("retired channels {path}: cut a torn tail of {tail} at offset {offset}",
                     path=self.shown, torn=size - at, tail=plural(size - at, "byte"), offset=at)
            with _opened(self.path, os.O_RDWR, "r+b") as cut:
                cut.truncate(at)
                os.fsync(cut.fileno())
            self.size = at
        return b"".join(added)

    def append(self, records: list[tuple[ChannelID, bytes]]) -> list[int]:
        """Append `records` (channel ID, channel record) with one write and fsync; the offset
        of each. OSError if that failed (what reached the file is then unknown: the store
        fails, and the next open cuts a torn tail)."""
        frames, offsets, at = [], [], self.size
        for channel_id, record in records:
            body = channel_id + record
            frames.append(_U32.pack(len(body)) + body + _U32.pack(zlib.crc32(body)))
            offsets.append(at)
            at += len(body) + _FRAME
        if not frames:
            return []
        new = self.size == 0 and not os.path.exists(self.path)
        fd = os.open(self.path,
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            data = b"".join(frames)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            datafile.fsync_dir(os.path.dirname(self.path))
        self.size = at
        self._write_index(b"".join(_entry(channel_id, offset)
                                   for (channel_id, _), offset in zip(records, offsets,
                                                                      strict=True)), "ab")
        return offsets

    def read(self, offset: int, channel_id: ChannelID) -> bytes:
        """The channel record of `channel_id` at `offset`; `StoreCorrupt` if it is not there."""
        record = self._record_at(offset, channel_id)
        if record is None:
            raise StoreCorrupt(f"{self.shown}: no intact record of the channel at offset "
                               f"{offset}", file=self.shown, offset=offset)
        return record

    def _pread(self, size: int, offset: int) -> bytes:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def _write_index(self, entries: bytes, mode: str) -> None:
        """Write the index file (derived: no fsync). After a failure (logged) nothing more is
        appended to it, so that no entry follows a gap: the next open indexes the records
        after its last good entry."""
        if self._index_broken and mode == "ab":
            return
        try:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
            with _opened(self.index_path, flags, mode) as f:
                f.write(entries)
            self._index_broken = False
        except OSError:
            self._index_broken = True
            log.warn("retired channels {path}: could not write its index (it is rebuilt when "
                     "needed)", path=self.shown)
