"""`DataLog`: a session store's open data file (semidbm's format, perund/storage/datafile.py)
and what it knows of its bytes: how many the file holds, how many of them are live, and so
whether a compaction would pay (docs/storage.md, "Compaction").

It knows nothing of what the records mean, except which keys are payment records: those leave
the file at a compaction (to the payment archive), so they count as garbage when deciding one.
The store decides when to append, fsync and compact; this class does each of them.
"""

from __future__ import annotations

import os
from typing import Any, Final

import semidbm
from twisted.logger import Logger

from perund.errors import StoreError
from perund.storage import datafile

log = Logger()

ROOM: Final = 1 << 20
"""Zeros an open data file keeps ahead of its records (`DataLog._make_room`)."""


class DataLog:
    """The data file of the store in directory `path`, repaired and opened (created if new).

    `payment_prefix` is the first byte of the keys of payment records. `over(ratio, minimum)`
    says when the file has grown past both `minimum` bytes and `ratio` times its live records
    (payment records not counted live).
    """

    def __init__(self, path: str, payment_prefix: bytes, shown: str | None = None) -> None:
        self.path = path
        self.shown = shown or path
        """The folder's name in messages (`path` may reach it through its descriptor)."""
        self._payment_prefix = payment_prefix
        scan = datafile.repair(path, self.shown)
        self._db: Any = semidbm.open(path, "c")
        self._writer, self._room = self._open_writer()
        if scan is None:
            # A new store: make its data file and the directory entry durable once.
            self._db.sync()
            datafile.fsync_dir(path)
            scan = datafile.Scan(good_end=len(datafile.HEADER), size=len(datafile.HEADER))
        self._live: dict[bytes, int] = scan.live  # key -> bytes of its record in the file
        self.live_bytes = len(datafile.HEADER) + sum(scan.live.values())
        """What the file would hold if compacted now."""
        self.payment_bytes = sum(size for key, size in scan.live.items()
                                 if key[:1] == payment_prefix)
        """Bytes of the live payment records."""
        self.file_bytes = scan.size
        """The data file's size."""
        self._retry_above = 0

    def _open_writer(self) -> tuple[int, int]:
        """A descriptor that writes where it is told (semidbm's own appends), and the size of
        the file: its end is where the records end until the first append makes room."""
        fd = os.open(os.path.join(self.path, datafile.DATA_NAME),
                     os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        return fd, os.fstat(fd).st_size

    def _make_room(self, end: int) -> int:
        """Make the file reach `end` at least, writing zeros `ROOM` bytes past it when it does
        not; the descriptor to write the records with.

        Records written over zeros the file already holds change neither its size nor its
        blocks, so their fsync flushes data alone: about a third less time than after an
        append (docs/storage.md, "Room ahead of the records"). The zeros cost one slower fsync
        per `ROOM` bytes; the next open cuts them (`datafile.repair`), and so does `close`."""
        if end > self._room:
            grown = end + ROOM
            zeros = bytes(min(grown - self._room, ROOM))
            at = self._room
            while at < grown:
                at += os.pwrite(self._writer, zeros[: grown - at], at)
            self._room = grown
        return self._writer

    def live_keys(self) -> list[bytes]:
        """The key of every live record (for loading)."""
        return list(self._db.keys())

    def value(self, key: bytes) -> bytes | None:
        """The live value of `key`, read from the file, or None."""
        try:
            value: bytes = self._db[key]
        except KeyError:
            return None
        return value

    def append(self, pending: dict[bytes, bytes | None]) -> None:
        """Append `pending` (None: delete) with one write; deletes of keys the file does not
        hold are dropped. OSError if the write failed."""
        db, live, payments = self._db, self._live, self._payment_prefix
        writes = [(key, value) for key, value in pending.items()
                  if value is not None or key in db]
        self.file_bytes += datafile.append(db, writes, self._make_room)
        for key, value in writes:
            if value is None:
                dropped = live.pop(key, 0)
                self.live_bytes -= dropped
                if key[:1] == payments:
                    self.payment_bytes -= dropped
            else:
                size = datafile.record_size(key, value)
                was = live.get(key, 0)
                self.live_bytes += size - was
                if key[:1] == payments:
                    self.payment_bytes += size - was
                live[key] = size

    def sync(self) -> None:
        """fsync the file (OSError if it failed)."""
        os.fsync(self._writer)

    def duplicate_descriptor(self) -> int:
        """A new descriptor of the data file, for an fsync on another thread that must not
        touch a number this process may reuse meanwhile (the caller closes it)."""
        return os.dup(self._db._data_fd)

    def over(self, ratio: float, minimum: int) -> bool:
        """Whether a compaction is due (and, after a failed one, the file has doubled)."""
        return (self.file_bytes > max(minimum, self._retry_above)
                and self.file_bytes > ratio * (self.live_bytes - self.payment_bytes))

    def compact(self, drop_payments: bool) -> bool:
        """Rewrite the file with its live records only (without the payment records if
        `drop_payments`); whether it was rewritten. A failed rewrite leaves the old file (the
        rename is the commit point) and is tried again once the file has doubled.
        `StoreError` if the file could not be opened again afterwards."""
        db, before = self._db, self.file_bytes
        payments = self._payment_prefix
        items = [(key, db[key]) for key in db if not (drop_payments and key[:1] == payments)]
        self._close_writer()
        db.close()
        compacted = False
        try:
            datafile.compact(self.path, items)
            compacted = True
        except Exception:
            log.failure("store {path}: compaction failed", path=self.shown)
            self._retry_above = 2 * before
        try:
            self._db = semidbm.open(self.path, "w")
            self._writer, self._room = self._open_writer()
            self.file_bytes = self._room
        except Exception as e:
            log.failure("store {path}: reopening after compaction failed", path=self.shown)
            raise StoreError(f"store {self.shown}: reopening after compaction: {e}") from None
        if not compacted:
            return False
        if drop_payments:
            for key in [key for key in self._live if key[:1] == payments]:
                self.live_bytes -= self._live.pop(key)
            self.payment_bytes = 0
        log.info("store {path}: compacted {before} bytes to {after}",
                 path=self.shown, before=before, after=self.file_bytes)
        return True

    def _close_writer(self) -> None:
        """Cut the zeros kept ahead of the records (a closed file is plain semidbm's), and
        close the writing descriptor. What a failed commit wrote of its records stays, as it
        would after an append: the next open keeps its whole records (`datafile.repair`)."""
        try:
            end = self._db._current_offset
            if self._room > end:
                ahead = os.pread(self._writer, self._room - end, end)
                os.ftruncate(self._writer, end + len(ahead.rstrip(b"\0")))
                self._room = end
        finally:
            os.close(self._writer)

    def close(self) -> None:
        """Close the file (semidbm fsyncs it first: cheap when nothing is new)."""
        try:
            self._close_writer()
        finally:
            self._db.close()
