"""A session store's retired channels (docs/storage.md, "Retired channels"): closed channels
moved out of the data file into a file of their own (`perund/storage/retired_file.py`), so that
neither the open nor a compaction of the data file reads or copies them.

What a retired channel costs in memory is its place here: its ID, an offset, a position in the
retirement order. Its record is read from the file when asked.

The two files never change together, so the order of their writes and one rule at the open
decide where a channel is (the store's data file holds the live channels):

- retiring: the retired record is appended to `retired` and fsynced (`commit`, which the group
  commit runs before it appends its records) before the live record's deletion reaches the data
  file. A channel found in both at an open is retired, unless what follows says otherwise.
- made live again (`revive`, a retired channel put again): the data file gets a revival marker
  (`u` ‖ ID -> the retired record's offset) in the same commit as the live record, and before
  it. A live channel whose marker is at or past its latest retired record's offset is live: its
  revival came after that retirement (a later retirement appends at a higher offset). A marker
  without its live record (a tail torn between the two) changes nothing.

Markers left without use (the channel retired again, or the revival torn) are deleted at the
open (`settle`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from perund.channel.types import ChannelID
from perund.storage.retired_file import RetiredFile, index_entries


class RetiredChannels:
    """The retired channels of the store whose folder is reached as `directory` (shown as
    `shown`): those in the file, those retired since the last commit (`pending`), and the
    revival markers the data file holds (`revived`, filled by the store as it loads them)."""

    def __init__(self, directory: str, shown: str) -> None:
        self._file = RetiredFile(directory, shown)
        self.shown = self._file.shown
        """The file's name in messages."""
        self._order: list[ChannelID] = []  # by position: the order of the file's records
        self._offsets = array("Q")  # by position
        self._position: dict[ChannelID, int] = {}  # a retired channel's latest record
        self.pending: dict[ChannelID, bytes] = {}
        """Retirements not yet committed: channel ID -> its encoded record."""
        self.revived: dict[ChannelID, int] = {}
        """The revival markers in the data file: channel ID -> the offset they name."""
        for channel_id, offset in index_entries(self._file.load()):
            self._add(channel_id, offset)

    def _add(self, channel_id: ChannelID, offset: int) -> None:
        self._position[channel_id] = len(self._order)
        self._order.append(channel_id)
        self._offsets.append(offset)

    def holds(self, channel_id: ChannelID) -> bool:
        """Whether the channel is retired (committed or not)."""
        return channel_id in self._position or channel_id in self.pending

    def count(self) -> int:
        """How many channels are retired (committed or not)."""
        return len(self._position) + len(self.pending)

    def record(self, channel_id: ChannelID) -> bytes | None:
        """The encoded record of a retired channel, or None if it is not retired.
        `StoreCorrupt` if the file does not hold it where its index said."""
        if channel_id in self.pending:
            return self.pending[channel_id]
        position = self._position.get(channel_id)
        if position is None:
            return None
        return self._file.read(self._offsets[position], channel_id)

    def retire(self, channel_id: ChannelID, record: bytes) -> None:
        """Retire a live channel with its encoded record, at the next `commit`."""
        self.pending[channel_id] = record

    def revive(self, channel_id: ChannelID) -> int | None:
        """A retired channel is live again: the offset its revival marker must name, or None
        when it needs none (its retirement was not committed: it is dropped)."""
        if self.pending.pop(channel_id, None) is not None:
            # Retired and put again in one turn: the file never sees it. A marker the data
            # file holds for an earlier record still covers that one.
            return None
        position = self._position.pop(channel_id)
        offset = self._offsets[position]
        self.revived[channel_id] = offset
        return offset

    def commit(self) -> None:
        """Append the pending retirements to the file and fsync it; run before the data file
        is appended the deletions of their live records. OSError if it failed."""
        if not self.pending:
            return
        records = list(self.pending.items())
        offsets = self._file.append(records)
        self.pending.clear()
        for (channel_id, _), offset in zip(records, offsets, strict=True):
            self._add(channel_id, offset)

    def migrate(self, records: list[tuple[ChannelID, bytes]]) -> None:
        """Append the retired records a store of the code before kept in its data file (in
        the order they retired), except those a migration interrupted after its append
        wrote already, and fsync; the caller deletes them from the data file afterwards."""
        self.pending.update((cid, record) for cid, record in records
                            if cid not in self._position)
        self.commit()

    def settle(self, live: Iterable[ChannelID]) -> tuple[list[ChannelID], list[ChannelID]]:
        """Apply the open's rule (see the module) to the live channels loaded: the live ones
        whose retirement stands (their live record goes), and the revival markers no longer
        of use (they go)."""
        stands: list[ChannelID] = []
        alive: set[ChannelID] = set()
        for channel_id in live:
            position = self._position.get(channel_id)
            if position is None:
                continue
            marker = self.revived.get(channel_id)
            if marker is not None and marker >= self._offsets[position]:
                del self._position[channel_id]
                alive.add(channel_id)
            else:
                stands.append(channel_id)
        stale = [cid for cid in self.revived if cid not in alive]
        for channel_id in stale:
            del self.revived[channel_id]
        return stands, stale

    def newest(self, limit: int, before: ChannelID | None = None,
               ) -> tuple[list[ChannelID], int]:
        """At most `limit` committed retired channels' IDs, the last retired first (with
        `before`, those retired before it; none if it is not retired), and how many records'
        places were looked at (the cost of the call)."""
        if before is None:
            at = len(self._order)
        elif before in self._position:
            at = self._position[before]
        else:
            return [], 0
        found: list[ChannelID] = []
        looked = 0
        position, order = self._position, self._order
        while at > 0 and len(found) < limit:
            at -= 1
            looked += 1
            channel_id = order[at]
            if position.get(channel_id) == at:  # else revived, or retired again since
                found.append(channel_id)
        return found, looked
