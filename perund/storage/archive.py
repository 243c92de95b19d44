"""The payment archive: the older payment records of a session, on disk only, within a size.

Recent payments live in the store's data file, written in the same commit as the states they
produced. When the store compacts its data file, it first appends those records here and
fsyncs, so the data file stays the size of the channels while the history grows without
costing memory or start-up time (docs/storage.md, "Payment history").

The archive is two files of `perund/storage/archive_file.py`, each with its index: `payments`,
which records are appended to, and `payments.1`, the one before it. Once `payments` holds half
of `max_bytes` it is renamed over `payments.1`, dropping the oldest payments at once, and the
next records start a new `payments`: the archive stays within `max_bytes` (the limit
`limits.payment_history_size`), and no record is ever copied. The rename is the only step
that changes what the archive holds, and it is atomic; the indexes are derived data, checked
when first used.

Offsets are the archive's: those of `payments.1` first, then those of `payments` after its
size. A rotation shifts them, so an offset kept across one (in a client's cursor) no longer
points at its record, which the history notices (it checks, never trusts) and looks up again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Final

from twisted.logger import Logger

from perund.storage import datafile
from perund.storage.archive_file import ArchiveFile
from perund.storage.payments import PaymentRecord

log = Logger()

ARCHIVE_NAME: Final = "payments"
OLDER_NAME: Final = "payments.1"
INDEX_SUFFIX: Final = ".idx"


def archive_files() -> tuple[str, ...]:
    """The names of the files an archive keeps in its folder."""
    return (ARCHIVE_NAME, OLDER_NAME, ARCHIVE_NAME + INDEX_SUFFIX, OLDER_NAME + INDEX_SUFFIX)


class PaymentArchive:
    """The archived payments of the store in `directory`, newest within `max_bytes` (None: no
    limit); see the module."""

    def __init__(self, directory: str, max_bytes: int | None = None,
                 shown: str | None = None) -> None:
        self.directory = directory
        self.shown = shown or directory
        """The folder's name in messages (`directory` may reach it through a descriptor)."""
        self.max_bytes = max_bytes
        self._current = self._file(ARCHIVE_NAME)
        self._older: ArchiveFile | None = None
        if os.path.exists(os.path.join(directory, OLDER_NAME)):
            self._older = self._file(OLDER_NAME)
        self.dropped = 0
        """Rotations that dropped payments, since this archive was opened."""

    def _file(self, name: str) -> ArchiveFile:
        path = os.path.join(self.directory, name)
        return ArchiveFile(path, path + INDEX_SUFFIX, os.path.join(self.shown, name))

    @property
    def size(self) -> int:
        """Bytes in both files."""
        return self._older_size + self._current.size

    @property
    def _older_size(self) -> int:
        return self._older.size if self._older is not None else 0

    @property
    def last_id(self) -> int:
        """The ID of the newest archived record, -1 when there is none."""
        if self._current.size:
            return self._current.last_id
        return self._older.last_id if self._older is not None else -1

    def append(self, records: Iterable[PaymentRecord]) -> None:
        """Append `records` (IDs above `last_id`, rising; those at or below it are archived
        already) and fsync; then rotate if `payments` reached half of `max_bytes`. OSError if
        the append failed."""
        last = self.last_id
        self._current.append(record for record in records if record.payment_id > last)
        if self.max_bytes is not None and self._current.size >= self.max_bytes // 2:
            self._rotate()

    def _rotate(self) -> None:
        """`payments` becomes `payments.1` (the old one dropped); the next append starts a
        new `payments`."""
        current, older = self._current, self._older
        # Read before the rename: afterwards the older file's name holds the newer records.
        dropped = (older.first_id, older.last_id) if older is not None and older.size else None
        try:
            if older is not None and os.path.exists(older.index_path):
                os.unlink(older.index_path)
            os.replace(current.path, os.path.join(self.directory, OLDER_NAME))
            if os.path.exists(current.index_path):
                os.replace(current.index_path,
                           os.path.join(self.directory, OLDER_NAME + INDEX_SUFFIX))
            datafile.fsync_dir(self.directory)
        except OSError:
            # Appended and fsynced already: the archive is whole, just not rotated yet.
            log.failure("payment archive {path}: could not rotate it (tried again at the "
                        "next archiving)", path=self.shown)
            self._current, self._older = self._file(ARCHIVE_NAME), self._older_if_any()
            return
        if dropped is not None:
            self.dropped += 1
            log.info("payment archive {path}: dropped payments {first} to {last}, the oldest, "
                     "to stay within limits.payment_history_size ({limit} bytes)",
                     path=self.shown, first=dropped[0], last=dropped[1],
                     limit=self.max_bytes)
        self._older = self._file(OLDER_NAME)
        self._current = self._file(ARCHIVE_NAME)

    def _older_if_any(self) -> ArchiveFile | None:
        exists = os.path.exists(os.path.join(self.directory, OLDER_NAME))
        return self._file(OLDER_NAME) if exists else None

    def newest_first(self, before: int | None = None) -> Iterator[tuple[int, PaymentRecord]]:
        """Records newest first, each with the offset where it starts; with `before` (an offset
        a previous iteration yielded), those before it only."""
        end = self.size if before is None else before
        base = self._older_size
        if end > base:
            for at, record in self._current.newest_first(end - base):
                yield base + at, record
            end = base
        if self._older is not None and end > 0:
            yield from self._older.newest_first(end)

    def get(self, payment_id: int) -> PaymentRecord | None:
        """The archived record `payment_id`, or None (also when it was dropped)."""
        return self._holding(payment_id).get(payment_id)

    def start_of(self, payment_id: int) -> int | None:
        """The offset where the first record with an ID of `payment_id` or above starts (the
        archive's size when there is none); None for an empty archive."""
        if self.size == 0:
            return None
        if self._holding(payment_id) is not self._current:
            assert self._older is not None
            return self._older.start_of(payment_id)
        start = self._current.start_of(payment_id)
        return self.size if start is None else self._older_size + start

    def record_at(self, offset: int) -> PaymentRecord | None:
        """The record that starts at `offset`, or None when no record starts there."""
        base = self._older_size
        if offset >= base:
            return self._current.record_at(offset - base)
        return self._older.record_at(offset) if self._older is not None else None

    def _holding(self, payment_id: int) -> ArchiveFile:
        """The file that holds `payment_id` if any does: the older one up to its last ID."""
        older = self._older
        if older is not None and older.size and payment_id <= older.last_id:
            return older
        return self._current
