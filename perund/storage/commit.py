"""`GroupCommit`: a session store's writes on their way to its data file: buffered for one
reactor turn, appended together, made durable by one fsync (docs/storage.md, "Durability and
group commit").

A commit, scheduled with `callLater(0)` on the first write of a reactor turn, appends every
pending write and runs one fsync: every write of that turn shares it. `flush` hands out a
Deferred that fires after the commit covering every write so far, or None when there is nothing
to wait for. A commit that nobody waits for (no `flush` since the last one) appends its records,
so that a killed process loses none of them, but leaves the fsync to the next commit that is
waited for, or to `sync_delay` seconds later, whichever comes first: writes nobody waits for do
not cost an fsync each (docs/protocol.md, "Durability by interest"). A commit that answers one
waiter fsyncs on the reactor thread (about 0.15 ms here, less than a thread hop would add); one
that answers several or none, given `sync_elsewhere`, runs its fsync there, and the reactor
goes on (docs/storage.md, "Where the fsync runs").

`before_append` runs before each commit's append (the store fsyncs its retired channels' file
there). The payments a commit makes (`unannounced`) are handed to `announce` once it is durable; a
compaction (`compaction_due`, `compact`: the store's) runs right after an fsync, since it copies
what the file holds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.errors import StoreError
from perund.metrics import FSYNC_BOUNDS, Histogram
from perund.storage.datalog import DataLog
from perund.storage.payments import PaymentRecord

log = Logger()

Durable = Callable[[StoreError | None], object]
"""Told once the writes it waited for are durable (None), or could not be made so (the error)."""

SyncRunner = Callable[[Callable[[], float]], Deferred[float]]
"""Runs a blocking call (an fsync, returning the seconds it took) off the reactor thread; its
Deferred fires on the reactor thread, with the call's result, when the call returns."""


class GroupCommit:
    """The pending writes of data file `file` (of the store in `path`) and their commits.

    `failed` is set once a commit failed (every later write and flush fails with it); `closed`
    once `close` ran. `fsync_times` records how long each commit's fsync took.
    """

    def __init__(self, file: DataLog, reactor: IReactorTime, path: str, *,
                 sync_delay: float, sync_elsewhere: SyncRunner | None,
                 announce: Callable[[list[PaymentRecord]], None],
                 compaction_due: Callable[[], bool], compact: Callable[[], None],
                 before_append: Callable[[], None] = lambda: None) -> None:
        self._file = file
        self._before_append = before_append
        self.path = path
        # zope interfaces do not type-check as protocols (their methods have no `self`).
        self._call_later: Callable[..., DelayedCall] = cast(Any, reactor).callLater
        self._sync_delay = sync_delay
        self._sync_elsewhere = sync_elsewhere
        self._announce = announce
        self._compaction_due = compaction_due
        self._compact = compact
        self.pending: dict[bytes, bytes | None] = {}
        """Writes of this turn, by key (None: a delete)."""
        self.unannounced: list[PaymentRecord] = []
        """Payments written and not yet announced (they are once durable)."""
        self._waiters: list[Durable] = []
        self._scheduled: DelayedCall | None = None
        self._sync_timer: DelayedCall | None = None
        """While records are appended but not fsynced: the call that fsyncs them at the latest."""
        self._appends = 0
        """Commits that appended records to the file so far."""
        self._durable_appends = 0
        """How many of them the last completed fsync covered."""
        self._flight: _Flight | None = None
        """The fsync running elsewhere (`sync_elsewhere`), if any."""
        self._sync_again = False
        """A commit wanted an fsync while one was running: another follows it."""
        self._shared = False
        """The last commit that had waiters had several: flows are busy side by side."""
        self.fsync_times = Histogram(FSYNC_BOUNDS)
        """How long the commits' fsyncs took (perund_store_fsync_seconds)."""
        self.failed: StoreError | None = None
        self._closing = False
        self.closed = False

    def flush(self) -> Deferred[None] | None:
        """None if every write so far is durable; else a Deferred firing (with None) once the
        fsync covering them is done, or failing with `StoreError` if it could not be."""
        d: Deferred[None] = Deferred()
        return d if self.when_durable(partial(_settle, d)) else None

    def when_durable(self, durable: Durable) -> bool:
        """False if every write so far is durable (`durable` is not called); else True, and
        `durable` is called once the fsync covering them is done (with None), or with the
        `StoreError` that keeps them from being durable (at once if the store failed already).
        `flush` without a Deferred: the payment path waits here once per state."""
        if self.failed is not None:
            durable(self.failed)
            return True
        if not self.pending:
            if self._durable_appends == self._appends:
                return False
            if self._scheduled is None:  # appended already: only the fsync is missing
                self._scheduled = self._call_later(0, self._commit)
        self._waiters.append(durable)
        return True

    def close(self) -> None:
        """Append and fsync what is pending (once: later calls do nothing). Deferreds from
        earlier `flush` calls fire before this returns; those that could not be made durable
        fail with `failed`, as does every later write."""
        if self.closed:
            return
        self._closing = True  # from here on, every fsync runs here, at once
        try:
            while (self.pending or self._durable_appends != self._appends) \
                    and self.failed is None:
                self._commit(sync=True)
            flight = self._flight
            if flight is not None and self.failed is None:
                # The fsync above covered what the one still running elsewhere was for.
                self._flight = None
                _tell(flight.waiters, None)
                if flight.made:
                    self._announce(flight.made)
        finally:
            self.closed = True
            for call in (self._scheduled, self._sync_timer):
                if call is not None and call.active():
                    call.cancel()
            self._scheduled = self._sync_timer = None
            if self._flight is not None:
                self._waiters[:0] = self._flight.waiters
                self._flight = None
            self._fail_waiters(self.failed or StoreError(f"store {self.path} closed"))

    def check_open(self) -> None:
        """`StoreError` if the store is closed or a commit failed: no write may wait for a
        commit that will never come."""
        if self.closed:
            raise StoreError(f"store {self.path} is closed")
        if self.failed is not None:
            # A write nobody waits for would never be durable, and its caller could not tell.
            raise self.failed

    def write(self, key: bytes, value: bytes | None) -> None:
        """Buffer a write of `key` (None: delete it) for this turn's commit."""
        self.check_open()
        self.pending[key] = value
        if self._scheduled is None:
            self._scheduled = self._call_later(0, self._commit)

    def _sync_later(self) -> None:
        self._sync_timer = None
        self._commit(sync=True)

    def _all_durable(self) -> None:
        """Everything appended so far is covered by a completed fsync."""
        self._durable_appends = self._appends
        if self._sync_timer is not None:
            if self._sync_timer.active():
                self._sync_timer.cancel()
            self._sync_timer = None

    def _sync_elsewhere_now(self, waiters: list[Durable],
                            made: list[PaymentRecord]) -> None:
        """fsync on `sync_elsewhere` (a thread) what is appended, then fire `waiters`; while one
        runs, the reactor goes on appending, and the waiters of those appends wait for the
        next fsync (`_sync_again`)."""
        if self._flight is not None:
            # Appended after the running fsync began: it may not cover them.
            self._waiters[:0] = waiters
            self.unannounced[:0] = made
            self._sync_again = True
            return
        runner = self._sync_elsewhere
        assert runner is not None
        # A descriptor of its own: closing or compacting the store meanwhile cannot leave the
        # thread fsyncing a number the process has since reused.
        fd = self._file.duplicate_descriptor()

        def fsync() -> float:
            try:
                started = time.perf_counter()
                os.fsync(fd)
                return time.perf_counter() - started
            finally:
                os.close(fd)

        flight = self._flight = _Flight(self._appends, waiters, made)
        runner(fsync).addCallbacks(self._synced_elsewhere, self._sync_failed_elsewhere,
                                   callbackArgs=(flight,), errbackArgs=(flight,))

    def _synced_elsewhere(self, took: float, flight: _Flight) -> None:
        self.fsync_times.add(took)
        if self._flight is not flight:
            return  # the store closed meanwhile, and its own fsync covered these
        self._flight = None
        if flight.appends == self._appends:
            self._all_durable()
        else:
            self._durable_appends = max(self._durable_appends, flight.appends)
        _tell(flight.waiters, None)
        if flight.made:
            self._announce(flight.made)
        if self.closed:
            return
        if self._sync_again or self._waiters:
            self._sync_again = False
            if self._scheduled is None:
                self._scheduled = self._call_later(0, self._commit, True)
        elif self._compaction_due() and self._durable_appends == self._appends:
            self._compact()

    def _sync_failed_elsewhere(self, failure: Failure, flight: _Flight) -> None:
        if self._flight is not flight:
            return
        self._flight = None
        log.failure("store {path}: an fsync failed", failure, path=self.path)
        self.failed = StoreError(f"store {self.path}: writing failed: {failure.value}")
        _tell(flight.waiters, self.failed)
        self._fail_waiters(self.failed)

    def _commit(self, sync: bool = False) -> None:
        """Append every pending write, fsync once (unless nobody waits: `sync_delay`), then
        fire the waiters."""
        self._scheduled = None
        sync = sync or bool(self._waiters)
        unsynced = self._durable_appends != self._appends
        if self.failed is not None:
            return
        if not (self.pending or (sync and unsynced)):
            # Everything appended is durable already (an fsync that ran elsewhere covered what
            # these waiters asked for while it ran).
            waiters, self._waiters = self._waiters, []
            made, self.unannounced = self.unannounced, []
            _tell(waiters, None)
            if made:
                self._announce(made)
            return
        pending, self.pending = self.pending, {}
        waiters, self._waiters = self._waiters, []
        made, self.unannounced = self.unannounced, []
        if pending:
            self._appends += 1
        try:
            if pending:
                # The retired channels' file is fsynced first: its records must be durable
                # before the deletions of their live records reach the data file.
                self._before_append()
                self._file.append(pending)
            # A compaction follows (it copies what the file holds): durable first.
            sync = sync or (not self.closed and self._compaction_due())
            alone = len(waiters) == 1 and self._flight is None and not self._shared
            if sync and waiters:
                self._shared = len(waiters) > 1
            if sync and self._sync_elsewhere is not None and not self._closing and not alone:
                # Several flows wait, or did at the last commit, so more work is at hand: the
                # reactor goes on with it while the disk flushes; none waits (`sync_delay`'s
                # fsync, or the one before a compaction), so no one's latency is at stake. One
                # flow alone waits less for an fsync right here.
                self._sync_elsewhere_now(waiters, made)
                return
            if sync:
                started = time.perf_counter()
                self._file.sync()
                self.fsync_times.add(time.perf_counter() - started)
        except Exception as e:
            # What reached the file is unknown (a torn tail at worst, repaired on the next open);
            # nothing that depended on these writes may go out, now or later.
            log.failure("store {path}: a commit failed", path=self.path)
            self.failed = StoreError(f"store {self.path}: writing failed: {e}")
            _tell(waiters, self.failed)
            return
        if not sync:
            # Appended, not durable yet: its payments are announced once they are.
            self.unannounced[:0] = made
            if self._sync_timer is None:
                self._sync_timer = self._call_later(self._sync_delay, self._sync_later)
            return
        self._all_durable()
        _tell(waiters, None)
        if made:
            self._announce(made)
        if not self.closed and self._compaction_due():
            self._compact()

    def _fail_waiters(self, error: StoreError) -> None:
        waiters, self._waiters = self._waiters, []
        _tell(waiters, error)


class _Flight:
    """An fsync running elsewhere: what it covers (`appends`), whom it answers, and the
    payments to announce once it is done."""

    __slots__ = ("appends", "made", "waiters")

    def __init__(self, appends: int, waiters: list[Durable],
                 made: list[PaymentRecord]) -> None:
        self.appends = appends
        self.waiters = waiters
        self.made = made


def _settle(d: Deferred[None], error: StoreError | None) -> None:
    if error is None:
        d.callback(None)
    else:
        d.errback(error)


def _tell(waiters: list[Durable], error: StoreError | None) -> None:
    """Tell every waiter; one that raises is logged and does not keep the others from hearing."""
    for durable in waiters:
        try:
            durable(error)
        except Exception:
            log.failure("a waiter for a commit failed")
