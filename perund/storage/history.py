"""A session's payment history: the recent records (in the store's data file and in memory)
and the archive (older ones, on disk only), listed newest first in pages.

A page holds at most `limit` records matching a `PaymentQuery`, and a cursor to go on from.
A page also ends after `SCAN_BUDGET` records were looked at, matching or not, so that one call
never scans a million records for a rare filter: the caller follows `next_cursor` until it is
None. A cursor is `<id>` or `<id>@<offset>`: "older than payment `id`", with the archive offset
of that payment to resume reading at (checked, never trusted).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Final

from perund.channel.types import Address, ChannelID
from perund.errors import InvalidArgument
from perund.storage.archive import PaymentArchive
from perund.storage.payments import Direction, PaymentRecord

SCAN_BUDGET: Final = 10_000
"""Records one page looks at, at most."""

MAX_LIMIT: Final = 1000

_CURSOR: Final = re.compile(r"([0-9]{1,19})(?:@([0-9]{1,19}))?")  # ASCII digits only


@dataclass(frozen=True, slots=True)
class PaymentQuery:
    """Which payments a listing wants; None means any."""

    channel_id: ChannelID | None = None
    peer: Address | None = None
    direction: Direction | None = None
    asset: Address | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, record: PaymentRecord) -> bool:
        """Whether `record` is one of the wanted payments."""
        return ((self.channel_id is None or record.channel_id == self.channel_id)
                and (self.peer is None or record.peer == self.peer)
                and (self.direction is None or record.direction == self.direction)
                and (self.asset is None or record.asset == self.asset)
                and (self.since is None or record.time >= self.since)
                and (self.until is None or record.time < self.until))


@dataclass(frozen=True, slots=True)
class Page:
    """Payments newest first, and where the next page starts (None: there is no more)."""

    payments: list[PaymentRecord]
    next_cursor: str | None
    scanned: int = 0
    """Records looked at, matching or not (what the page cost)."""


class PaymentHistory:
    """The payments of one session store (see the module)."""

    def __init__(self, archive: PaymentArchive) -> None:
        self.archive = archive
        self.recent: list[PaymentRecord] = []
        """Records not yet archived, by rising ID (changed through the methods below only)."""
        self.next_id = archive.last_id + 1
        """The ID the next record gets (kept, not derived: it is read on every payment)."""

    def add(self, records: list[PaymentRecord]) -> None:
        """Take `records`, numbered from `next_id` up, as the newest."""
        if records:
            self.recent.extend(records)
            self.next_id = records[-1].payment_id + 1

    def restore(self, records: list[PaymentRecord]) -> None:
        """Take `records` (by rising ID, above the archive's) as the recent ones (opening)."""
        self.recent = records
        newest = records[-1].payment_id if records else -1
        self.next_id = max(newest, self.archive.last_id) + 1

    def drop_archived(self) -> None:
        """Forget the recent records the archive now holds."""
        last = self.archive.last_id
        self.recent = [record for record in self.recent if record.payment_id > last]

    def get(self, payment_id: int) -> PaymentRecord | None:
        """Payment `payment_id`, or None."""
        at = bisect.bisect_left(self.recent, payment_id, key=lambda r: r.payment_id)
        if at < len(self.recent) and self.recent[at].payment_id == payment_id:
            return self.recent[at]
        return self.archive.get(payment_id)

    def page(self, query: PaymentQuery, limit: int = 100, cursor: str | None = None,
             budget: int = SCAN_BUDGET) -> Page:
        """Up to `limit` payments matching `query`, newest first, older than `cursor`."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"limit must be from 1 to {MAX_LIMIT}", name="limit",
                                  value=str(limit), requirement=f"1 to {MAX_LIMIT}")
        before, offset = _parse_cursor(cursor)
        found: list[PaymentRecord] = []
        scanned = 0
        end = len(self.recent) if before is None else bisect.bisect_left(
            self.recent, before, key=lambda r: r.payment_id)
        for record in reversed(self.recent[:end]):
            scanned += 1
            if query.matches(record):
                found.append(record)
            if len(found) == limit or scanned >= budget:
                return Page(found, str(record.payment_id), scanned)
        if before is not None and (offset is None or not self._starts_at(offset, before)):
            offset = self.archive.start_of(before)  # found through the sparse index
        for at, record in self.archive.newest_first(offset):
            if before is not None and record.payment_id >= before:
                continue
            scanned += 1
            if query.matches(record):
                found.append(record)
            if len(found) == limit or scanned >= budget:
                return Page(found, f"{record.payment_id}@{at}", scanned)
        return Page(found, None, scanned)

    def _starts_at(self, offset: int, payment_id: int | None) -> bool:
        """Whether archive record `payment_id` starts at `offset` (a cursor from a client)."""
        if payment_id is None:
            return False
        record = self.archive.record_at(offset)
        return record is not None and record.payment_id == payment_id


def _parse_cursor(cursor: str | None) -> tuple[int | None, int | None]:
    if cursor is None:
        return None, None
    match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise InvalidArgument("not a cursor this node returned", name="cursor",
                              requirement="the nextCursor of an earlier page")
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))
