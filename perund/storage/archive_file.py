"""One file of the payment archive (`perund/storage/archive.py`): payment records appended in
rising ID order, with a sparse index beside it.

The file: records framed as `length (uint32 BE) ‖ payment record ‖ length`, the length repeated
after the record so the file can be read backwards, newest first, which is how it is listed.
A torn tail (a crash while appending) is cut on open; the records it held are still in the
store's data file and are appended again.

The index file: `(payment ID, offset)` as two uint64 BE for every 256th record, so that `get`
and a cursor without its offset find their place without reading the file from the start. It
is derived data: written without fsync, checked when first used, and rebuilt from the file when
it does not match.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Final

from twisted.logger import Logger

from perund.errors import StoreCorrupt
from perund.storage import datafile
from perund.storage.payments import PaymentRecord, decode_payment, encode_payment
from perund.words import plural

log = Logger()

_LENGTH: Final = struct.Struct("!I")
_FRAME: Final = 2 * _LENGTH.size
_CHUNK: Final = 1 << 16
_INDEX_EVERY: Final = 256
"""Every this many records the sparse index keeps an (id, offset) pair, for `get`."""
_ENTRY: Final = struct.Struct("!QQ")


class ArchiveFile:
    """One append-only file of archived payment records, and its index (see the module)."""

    def __init__(self, path: str, index_path: str, shown: str | None = None) -> None:
        self.path = path
        self.shown = shown or path
        """The file's name in messages (`path` may reach it through its open folder)."""
        self.index_path = index_path
        self.size = 0
        self.last_id = -1
        """The ID of the newest archived record, -1 when there is none."""
        self._index: list[tuple[int, int]] | None = None
        self._indexed_to = 0  # the archive offset the index has covered
        self._indexed_count = 0  # records before that offset
        if os.path.exists(self.path):
            self._open()

    def _open(self) -> None:
        self.size = os.path.getsize(self.path)
        if self.size == 0:
            return
        last = self._last_record()
        if last is None:
            good = self._good_end()
            log.warn("payment archive {path}: cut a torn tail of {tail}", path=self.shown,
                     torn=self.size - good, tail=plural(self.size - good, "byte"))
            with open(self.path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
            self.size = good
            last = self._last_record() if good else None
        if last is not None:
            self.last_id = last.payment_id

    @property
    def first_id(self) -> int | None:
        """The ID of the oldest record, None when there is none."""
        first = self.record_at(0) if self.size else None
        return None if first is None else first.payment_id

    def append(self, records: Iterable[PaymentRecord]) -> None:
        """Append `records` (IDs above `last_id`, rising) and fsync; OSError if it failed."""
        frames, last, count = [], self.last_id, 0
        for record in records:
            if record.payment_id <= last:
                continue  # archived already (a compaction that crashed after appending)
            body = encode_payment(record)
            frames.append(_LENGTH.pack(len(body)) + body + _LENGTH.pack(len(body)))
            last = record.payment_id
            count += 1
        if not frames:
            return
        new = not os.path.exists(self.path)
        fd = os.open(self.path,
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"".join(frames))
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            datafile.fsync_dir(os.path.dirname(self.path))
        self.size = os.path.getsize(self.path)
        self.last_id = last
        if self._index is None:
            self._sparse_index()  # loads the index file (or builds it once) and extends it
        else:
            self._extend_index()

    def newest_first(self, before: int | None = None) -> Iterator[tuple[int, PaymentRecord]]:
        """Records newest first, each with the offset where it starts; with `before` (an offset
        a previous iteration yielded), those before it only."""
        end = self.size if before is None else before
        if not 0 < end <= self.size:
            return
        with open(self.path, "rb") as f:
            buffer, start = b"", end
            while end > 0:
                if len(buffer) < _FRAME or _LENGTH.unpack_from(buffer, len(buffer) - 4)[0] \
                        + _FRAME > len(buffer):
                    if start == 0:
                        raise StoreCorrupt(f"payment archive {self.shown} is damaged")
                    read = min(_CHUNK, start)
                    f.seek(start - read)
                    buffer = f.read(read) + buffer
                    start -= read
                    continue
                length = _LENGTH.unpack_from(buffer, len(buffer) - 4)[0]
                frame = len(buffer) - length - _FRAME
                if _LENGTH.unpack_from(buffer, frame)[0] != length:
                    raise StoreCorrupt(f"payment archive {self.shown} is damaged")
                record = decode_payment(buffer[frame + 4:frame + 4 + length])
                end -= length + _FRAME
                buffer = buffer[:frame]
                yield end, record

    def get(self, payment_id: int) -> PaymentRecord | None:
        """The archived record `payment_id`, or None."""
        found = self._find(payment_id)
        return None if found is None or found[1].payment_id != payment_id else found[1]

    def start_of(self, payment_id: int) -> int | None:
        """The offset where the first record with an ID of `payment_id` or above starts (the
        archive's size when there is none); None for an empty archive."""
        if self.size == 0:
            return None
        found = self._find(payment_id)
        return self.size if found is None else found[0]

    def _find(self, payment_id: int) -> tuple[int, PaymentRecord] | None:
        """The first record with an ID of `payment_id` or above, and its offset."""
        if payment_id > self.last_id or self.size == 0:
            return None
        index = self._sparse_index()
        at = bisect.bisect_right(index, (max(payment_id, 0), self.size)) - 1
        offset = index[at][1] if at >= 0 else 0
        with open(self.path, "rb") as f:
            f.seek(offset)
            while offset < self.size:
                length = _LENGTH.unpack(f.read(4))[0]
                record = decode_payment(f.read(length))
                f.read(4)
                if record.payment_id >= payment_id:
                    return offset, record
                offset += length + _FRAME
        return None

    def _sparse_index(self) -> list[tuple[int, int]]:
        if self._index is None:
            self._index = self._read_index()
            if self._index:
                self._indexed_to = self._index[-1][1]
                self._indexed_count = (len(self._index) - 1) * _INDEX_EVERY
            self._extend_index()
        return self._index

    def _read_index(self) -> list[tuple[int, int]]:
        """The index file's entries, if they match the archive (else nothing: rebuilt)."""
        try:
            with open(self.index_path, "rb") as f:
                raw = f.read()
        except OSError:
            return []
        if len(raw) % _ENTRY.size:
            return []  # torn: rebuilt (and rewritten whole)
        entries = [_ENTRY.unpack_from(raw, at) for at in range(0, len(raw), _ENTRY.size)]
        for payment_id, offset in entries[-1:] + entries[:1]:
            record = self.record_at(offset)
            if record is None or record.payment_id != payment_id:
                return []
        if entries and entries[0][1] != 0:
            return []
        return entries

    def _extend_index(self) -> None:
        """Index the records after `_indexed_to`, and append the new entries to the file."""
        assert self._index is not None
        added: list[tuple[int, int]] = []
        offset, count = self._indexed_to, self._indexed_count
        newest = self._index[-1][1] if self._index else -1
        unpack = _LENGTH.unpack_from
        with open(self.path, "rb") as f:
            f.seek(offset)
            buffer, base = b"", offset  # the file's bytes from offset `base` on
            while offset < self.size:
                at = offset - base
                if at + 4 > len(buffer) or at + unpack(buffer, at)[0] + _FRAME > len(buffer):
                    buffer, base = buffer[at:] + f.read(_CHUNK * 16), offset
                    continue
                length = unpack(buffer, at)[0]
                if count % _INDEX_EVERY == 0 and offset > newest:
                    added.append((decode_payment(buffer[at + 4:at + 4 + length]).payment_id,
                                  offset))
                offset += length + _FRAME
                count += 1
        self._indexed_to, self._indexed_count = offset, count
        if not added:
            return
        self._index.extend(added)
        try:
            mode = "ab" if len(self._index) > len(added) else "wb"
            with open(self.index_path, mode) as f:
                f.write(b"".join(_ENTRY.pack(*entry) for entry in added))
        except OSError:
            log.warn("payment archive {path}: could not write its index (it is rebuilt when "
                     "needed)", path=self.shown)

    def record_at(self, offset: int) -> PaymentRecord | None:
        """The record that starts at `offset`, or None when no record starts there."""
        if not 0 <= offset <= self.size - _FRAME:
            return None
        with open(self.path, "rb") as f:
            f.seek(offset)
            length = _LENGTH.unpack(f.read(4))[0]
            if offset + length + _FRAME > self.size:
                return None
            body = f.read(length)
            tail = _LENGTH.unpack(f.read(4))[0]
        if tail != length:
            return None
        try:
            return decode_payment(body)
        except StoreCorrupt:
            return None

    def _last_record(self) -> PaymentRecord | None:
        """The newest record, or None when the tail does not frame one."""
        if self.size < _FRAME:
            return None
        with open(self.path, "rb") as f:
            f.seek(self.size - 4)
            length = _LENGTH.unpack(f.read(4))[0]
            if length + _FRAME > self.size:
                return None
            f.seek(self.size - length - _FRAME)
            head = _LENGTH.unpack(f.read(4))[0]
            body = f.read(length)
        if head != length:
            return None
        try:
            return decode_payment(body)
        except StoreCorrupt:
            return None

    def _good_end(self) -> int:
        """The end of the last complete record, reading forwards."""
        good = 0
        with open(self.path, "rb") as f:
            while True:
                head = f.read(4)
                if len(head) < 4:
                    return good
                length = _LENGTH.unpack(head)[0]
                body = f.read(length)
                tail = f.read(4)
                if len(body) < length or len(tail) < 4 or _LENGTH.unpack(tail)[0] != length:
                    return good
                try:
                    decode_payment(body)
                except StoreCorrupt:
                    return good
                good += length + _FRAME
