"""`SessionStore`: one session's durable store, with group commit, repair on open and compaction
(docs/storage.md; docs/specification.md §5). Its data file (semidbm's format, repaired on open,
appended and compacted) is a `DataLog` (perund/storage/datalog.py).

Writes are buffered in memory by `put` and the other setters and committed together once per
reactor turn, one fsync for all (group commit: `GroupCommit`, perund/storage/commit.py); `flush`
hands out a Deferred that fires once every write so far is durable.

Reads never touch the file: the store keeps the decoded value of every record in memory (a few
hundred bytes per channel), loaded and checked once on open. Retired channels have a file of
their own, read when asked (`RetiredChannels`, perund/storage/retired.py).

The store also keeps the session's payment history (`history`): `put` derives the payments a
new channel value made and writes them in the same commit, before the channel's record, so a
payment is in the history exactly when its state is in the store, whatever tears the tail.
Compaction moves them to the append-only archive (`perund/storage/archive.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from perund.channel.memo import Memo, NotedMemos
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import StoreCorrupt, StoreError, StoreLocked
from perund.locks import LockHeld, hold
from perund.metrics import Histogram
from perund.storage import codec, datafile
from perund.storage.archive import PaymentArchive, archive_files
from perund.storage.commit import GroupCommit, SyncRunner
from perund.storage.datalog import DataLog
from perund.storage.history import PaymentHistory
from perund.storage.payments import (
    PaymentRecord,
    decode_payment,
    encode_payment,
    payments_between,
)
from perund.storage.retired import RetiredChannels
from perund.storage.retired_file import retired_files
from perund.storage.store_folder import (
    check_entries,
    check_folder_entry,
    open_store_folder,
    through,
)

log = Logger()

LOCK_NAME: Final = "lock"
"""The file in the store directory that one process at a time holds an exclusive flock on."""
STORE_FILES: Final = frozenset({LOCK_NAME, datafile.DATA_NAME})
"""Files every store folder holds once opened: a folder with neither is not a store."""
_FILES: Final = (LOCK_NAME, datafile.DATA_NAME, *archive_files(), *retired_files())
"""The plain files a store's folder may hold (`store_folder.check_entries`)."""

# Key namespaces: the first byte of every key. Never reuse one.
_CHANNEL: Final = b"c"  # + 32-byte channel ID -> codec.encode_channel
_CONTACT: Final = b"a"  # + UTF-8 alias -> codec.encode_contact
_CURSOR: Final = b"b"  # the watcher's block cursor -> codec.encode_cursor
_META: Final = b"m"  # + UTF-8 name -> raw bytes
_PAYMENT: Final = b"p"  # + 8-byte big-endian payment ID -> payments.encode_payment
_RETIRED: Final = b"r"  # + 32-byte channel ID -> a retired channel (the code before: migrated)
_REVIVED: Final = b"u"  # + 32-byte channel ID -> its revived retired record's offset (8 BE)

CLOSED_AT_META: Final = "closedat:"
"""+ the channel ID in hex: when the store first held the channel closed (8-byte BE seconds)."""

DEFAULT_COMPACT_RATIO: Final = 4.0
DEFAULT_COMPACT_MIN_BYTES: Final = 1 << 20
DEFAULT_SYNC_DELAY: Final = 0.1
"""Seconds at most between a commit nobody waited for and its fsync."""


class SessionStore:
    """One session's store in directory `path` (created if missing): channels (the
    `ChannelStore` protocol), contacts added at run time, the watcher's block cursor and small
    meta values.

    Opening takes an exclusive lock (`StoreLocked` if another process, or another open in this
    one, holds it), repairs a torn tail, and decodes every record (`StoreCorrupt`, naming the file
    and the key, for anything but a torn tail). Every setter is buffered; `flush` makes them
    durable. The data file is compacted right after a commit once it exceeds both
    `compact_min_bytes` and `compact_ratio` times the live data. The payment archive keeps at
    most `history_limit` bytes (None: no limit).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        reactor: IReactorTime,
        *,
        compact_ratio: float = DEFAULT_COMPACT_RATIO,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        record_payments: bool = True,
        sync_delay: float = DEFAULT_SYNC_DELAY,
        sync_elsewhere: SyncRunner | None = None,
        history_limit: int | None = None,
    ) -> None:
        if compact_ratio <= 1:
            raise ValueError("compact_ratio must exceed 1")
        if not sync_delay >= 0:
            raise ValueError("sync_delay must be at least 0")
        self.path = os.fspath(path)
        self.data_path = os.path.join(self.path, datafile.DATA_NAME)
        # zope interfaces do not type-check as protocols (their methods have no `self`).
        self._seconds: Callable[[], float] = cast(Any, reactor).seconds
        self._record_payments = record_payments
        self._compact_ratio = compact_ratio
        self._compact_min_bytes = compact_min_bytes

        self._channels: dict[ChannelID, Channel] = {}
        self._contacts: dict[str, dict[str, str]] = {}
        self._cursor: int | None = None
        self._cursor_hash: bytes | None = None
        self._meta: dict[str, bytes] = {}
        self._loaded_payments: list[PaymentRecord] = []
        self.payment_listeners: list[Callable[[list[PaymentRecord]], object]] = []
        """Called with the payments of each commit, once that commit is durable."""
        self._memos = NotedMemos()
        self.compactions = 0
        """How many times this store compacted its file (for tests and benchmarks)."""

        # Every file is reached through the folder held open, never by its path again
        # (perund/storage/store_folder.py): a user who may edit the folder around the store
        # cannot swap in links to another user's files.
        self._folder_fd = open_store_folder(self.path)
        self._lock_fd = -1
        file = None
        try:
            check_entries(self._folder_fd, _FILES, self.path)
            check_folder_entry(self._folder_fd, datafile.COMPACT_DIR, self.path)
            inside = through(self._folder_fd, self.path)
            self._lock_fd = _lock(inside, self.path)
            self.history = PaymentHistory(PaymentArchive(inside, history_limit, self.path))
            """The session's payments (recent ones in memory, older ones archived)."""
            self._retired = RetiredChannels(inside, self.path)
            file = self._file = DataLog(inside, _PAYMENT, self.path)
            self._commits = GroupCommit(
                file, reactor, self.path, sync_delay=sync_delay, sync_elsewhere=sync_elsewhere,
                announce=self._announce, compaction_due=self._over_threshold,
                compact=self._compact, before_append=self._retired.commit)
            self._load()
        except BaseException:
            if file is not None:
                file.close()
            self._release()
            raise

    # ----------------------------------------------------------------------------------------
    # Opening

    def _load(self) -> None:
        old_retired: list[tuple[ChannelID, bytes]] = []
        for key in self._file.live_keys():
            value = self._file.value(key)
            if key[:1] == _RETIRED and len(key) == 33 and value is not None:
                old_retired.append((ChannelID(key[1:]), value))  # in the order they retired
                continue
            try:
                if value is None:
                    raise StoreCorrupt("the record is in the index but not in the file")
                self._load_record(key, value)
            except StoreCorrupt as e:
                raise StoreCorrupt(
                    f"store {self.data_path}: record {key!r}: {e.message}",
                    file=self.data_path,
                    key=key.hex(),
                ) from None
        self._migrate(old_retired)
        self._settle_loaded_retirements()
        self._settle_loaded_payments()
        if self._over_threshold():
            self._compact()

    def _load_record(self, key: bytes, value: bytes) -> None:
        kind, rest = key[:1], key[1:]
        if kind == _CHANNEL:
            channel = codec.decode_channel(value)
            if channel.channel_id != rest:
                raise StoreCorrupt("the channel ID differs from the record's key")
            self._channels[channel.channel_id] = channel
        elif kind == _CONTACT:
            self._contacts[_text(rest)] = codec.decode_contact(value)
        elif kind == _CURSOR and not rest:
            self._cursor, self._cursor_hash = codec.decode_cursor(value)
        elif kind == _META:
            self._meta[_text(rest)] = value
        elif kind == _REVIVED and len(rest) == 32 and len(value) == 8:
            self._retired.revived[ChannelID(rest)] = int.from_bytes(value, "big")
        elif kind == _PAYMENT and len(rest) == 8:
            record = decode_payment(value)
            if record.payment_id != int.from_bytes(rest, "big"):
                raise StoreCorrupt("the payment ID differs from the record's key")
            self._loaded_payments.append(record)
        else:
            raise StoreCorrupt("unknown kind of record")

    def _migrate(self, old_retired: list[tuple[ChannelID, bytes]]) -> None:
        """Move the retired records a store of the code before kept in its data file to the
        retired channels' file: appended there and fsynced first, then deleted here (and
        fsynced, so a compaction no longer copies them). Interrupted anywhere, the next open
        finds them in both, appends none again and deletes them."""
        if not old_retired:
            return
        try:
            self._retired.migrate(old_retired)
            self._file.append({_RETIRED + cid: None for cid, _ in old_retired})
            self._file.sync()
        except OSError as e:
            raise StoreError(f"store {self.path}: moving retired channels: {e}") from None
        log.info("store {path}: moved {count} retired channels to their own file",
                 path=self.path, count=len(old_retired))

    def _settle_loaded_retirements(self) -> None:
        """Where a channel found in both files is (`RetiredChannels.settle`): a retirement
        stands unless the channel's revival came after it; unused revival markers go. Closed
        channels without a closing time (closed before the store kept them) count as closed
        now."""
        now = self._seconds()
        stands, stale = self._retired.settle(list(self._channels))
        for channel_id in stands:
            self._write(_CHANNEL + channel_id, None)
            del self._channels[channel_id]
            self.delete_meta(_closed_at_name(channel_id))
        for channel_id in stale:
            self._write(_REVIVED + channel_id, None)
        for channel in self._channels.values():
            if channel.phase is Phase.CLOSED \
                    and _closed_at_name(channel.channel_id) not in self._meta:
                self._set_closed_at(channel.channel_id, now)

    def _settle_loaded_payments(self) -> None:
        """The payments found in the data file become the recent history, less those archived
        already (a compaction died after appending them) and those whose state is not in the
        store (a commit torn between a payment and its channel record): both are deleted."""
        loaded = sorted(self._loaded_payments, key=lambda r: r.payment_id)
        self._loaded_payments = []
        archived, recent = self.history.archive.last_id, []
        for record in loaded:
            channel = self._channels.get(record.channel_id)
            stored = None if channel is None or channel.current is None \
                else channel.current.state.version
            if channel is None and self._retired.holds(record.channel_id):
                stored = record.version  # retired closed: every state it made was put before
            if record.payment_id <= archived:
                self._write(_payment_key(record.payment_id), None)
            elif record.version is not None and (stored is None or record.version > stored):
                log.warn("store {path}: dropped payment {id}: its state (version {version}) "
                         "is not in the store", path=self.path, id=record.payment_id,
                         version=record.version)
                self._write(_payment_key(record.payment_id), None)
            else:
                recent.append(record)
        self.history.restore(recent)

    # ----------------------------------------------------------------------------------------
    # Channels (the ChannelStore protocol)

    def put(self, channel: Channel, by_us: bool = False) -> None:
        """Record `channel`, replacing its previous value (durable after the next flush), and
        the payments it made since its previous value (`payments_between`; `by_us`: we
        proposed the state it makes current)."""
        key = _CHANNEL + channel.channel_id
        if self._retired.holds(channel.channel_id):
            # Back in use (settled again): its marker goes before its live record, so the
            # open takes the live record over the retired one only when both are there.
            offset = self._retired.revive(channel.channel_id)
            if offset is not None:
                self._write(_REVIVED + channel.channel_id, offset.to_bytes(8, "big"))
            self._commits.pending.pop(key, None)
        if self._record_payments:
            memo = self._memos.pop((channel.channel_id, channel.current.state.version)) \
                if channel.current is not None and self._memos else ()
            made = payments_between(self._channels.get(channel.channel_id), channel,
                                    self._seconds(), self.history.next_id, memo, by_us)
            if made:
                self._add_payments(made)
                # The channel's record goes after its payments in the commit: a tail torn
                # between them leaves payments without their state, which the next open drops.
                self._commits.pending.pop(key, None)
        self._write(key, codec.encode_channel(channel))
        if channel.phase is Phase.CLOSED:
            before = self._channels.get(channel.channel_id)
            if before is None or before.phase is not Phase.CLOSED:
                self._set_closed_at(channel.channel_id, self._seconds())
        self._channels[channel.channel_id] = channel

    def note(self, channel: Channel) -> None:
        """Take `channel` as the channel's latest value without writing it (our staged update
        within our reservation): the next `put` derives its payments from it, and a restart
        finds the value last put. Refused like `put` once the store is closed or failed."""
        self._commits.check_open()
        self._channels[channel.channel_id] = channel

    def annotate(self, channel_id: ChannelID, version: int, memo: Memo) -> None:
        """What the update to `version` of the channel says about its payments (the parts and
        references it carries), for the history when that state is put. At most
        `NotedMemos` are held (oldest dropped: the history then has the net payment); an
        empty `memo` forgets what was said for that version."""
        self._memos.put((channel_id, version), memo)

    def add_payments(self, records: list[PaymentRecord]) -> list[PaymentRecord]:
        """Record payments that made no state (requests rejected or expired), numbered anew;
        the records as kept (durable after the next flush)."""
        first = self.history.next_id
        numbered = [PaymentRecord(first + i, r.channel_id, r.peer, r.direction, r.asset,
                                  r.amount, r.version, r.time, r.request, r.status, r.reference)
                    for i, r in enumerate(records)]
        self._add_payments(numbered)
        return numbered

    def _add_payments(self, records: list[PaymentRecord]) -> None:
        for record in records:
            self._write(_payment_key(record.payment_id), encode_payment(record))
        self.history.add(records)
        self._commits.unannounced.extend(records)

    def forget(self, channel_id: ChannelID) -> None:
        """Drop a channel that never came to exist on-chain (durable after the next flush)."""
        self._write(_CHANNEL + channel_id, None)
        self._channels.pop(channel_id, None)
        self.delete_meta(_closed_at_name(channel_id))

    def closed_at(self, channel_id: ChannelID) -> float | None:
        """When the store first held the channel closed (its reactor's seconds), or None if it
        does not hold it closed."""
        raw = self._meta.get(_closed_at_name(channel_id))
        return None if raw is None or len(raw) != 8 else float(int.from_bytes(raw, "big"))

    def retire(self, channel_id: ChannelID) -> None:
        """Move a closed channel out of `channels` (and out of memory and the data file): its
        record goes to the retired channels' file, read by `retired_channel` (durable after
        the next flush). ValueError unless the store holds it closed."""
        channel = self._channels.get(channel_id)
        if channel is None or channel.phase is not Phase.CLOSED:
            raise ValueError("only a closed channel the store holds can retire")
        # The commit fsyncs the retired record before it appends the live one's deletion.
        self._retired.retire(channel_id, codec.encode_channel(channel))
        self._write(_CHANNEL + channel_id, None)
        self.delete_meta(_closed_at_name(channel_id))
        del self._channels[channel_id]

    def retired_channel(self, channel_id: ChannelID) -> Channel | None:
        """A retired channel, read from the retired channels' file, or None if it is not
        retired. StoreCorrupt if its record cannot be read or decoded."""
        value = self._retired.record(channel_id)
        if value is None:
            return None
        shown = self._retired.shown
        try:
            channel = codec.decode_channel(value)
        except StoreCorrupt as e:
            raise StoreCorrupt(f"{shown}: channel {channel_id.hex()}: {e.message}",
                               file=shown, key=channel_id.hex()) from None
        if channel.channel_id != channel_id:
            raise StoreCorrupt(f"{shown}: channel {channel_id.hex()}: the channel ID differs "
                               "from the record's", file=shown, key=channel_id.hex())
        return channel

    def retired_ids(self, limit: int, before: ChannelID | None = None,
                    ) -> tuple[list[ChannelID], int]:
        """At most `limit` retired channels' IDs, the last retired first (with `before`, those
        retired before it; none if `before` is not retired), and how many places of the
        retirement order were looked at to find them (the cost of the call). Retirements not
        yet committed are not among them."""
        return self._retired.newest(limit, before)

    def retired_count(self) -> int:
        """How many channels retired."""
        return self._retired.count()

    def _set_closed_at(self, channel_id: ChannelID, seconds: float) -> None:
        self.set_meta(_closed_at_name(channel_id), int(max(0.0, seconds)).to_bytes(8, "big"))

    def channels(self) -> Iterable[Channel]:
        """Every channel recorded, as last put."""
        return list(self._channels.values())

    def channel(self, channel_id: ChannelID) -> Channel | None:
        """The channel `channel_id` as last put, or None."""
        return self._channels.get(channel_id)

    # ----------------------------------------------------------------------------------------
    # The watcher's cursor, contacts, meta

    def block_cursor(self) -> int | None:
        """The last block the watcher processed, or None before the first."""
        return self._cursor

    def block_cursor_hash(self) -> bytes | None:
        """The hash the cursor's block had when the cursor was set, if recorded."""
        return self._cursor_hash

    def set_block_cursor(self, block: int, block_hash: bytes | None = None) -> None:
        """Record the watcher's cursor and its block's hash (durable after the next flush)."""
        self._write(_CURSOR, codec.encode_cursor(block, block_hash))
        self._cursor, self._cursor_hash = block, block_hash

    def contact(self, alias: str) -> dict[str, str] | None:
        """The contact added at run time under `alias`, or None."""
        record = self._contacts.get(alias)
        return None if record is None else dict(record)

    def contacts(self) -> dict[str, dict[str, str]]:
        """Every contact added at run time, by alias."""
        return {alias: dict(record) for alias, record in self._contacts.items()}

    def put_contact(self, alias: str, record: Mapping[str, str]) -> None:
        """Record contact `alias` (durable after the next flush)."""
        self._write(_CONTACT + _key_text(alias), codec.encode_contact(record))
        self._contacts[alias] = dict(record)

    def delete_contact(self, alias: str) -> None:
        """Forget contact `alias`, if recorded (durable after the next flush)."""
        self._write(_CONTACT + _key_text(alias), None)
        self._contacts.pop(alias, None)

    def meta(self, name: str) -> bytes | None:
        """The small value stored under `name`, or None."""
        return self._meta.get(name)

    def set_meta(self, name: str, value: bytes) -> None:
        """Store a small value under `name` (durable after the next flush)."""
        if type(value) is not bytes or len(value) > datafile.MAX_VALUE:
            raise StoreError("meta values are bytes of at most 16 MiB")
        self._write(_META + _key_text(name), value)
        self._meta[name] = value

    def delete_meta(self, name: str) -> None:
        """Forget the value under `name`, if any (durable after the next flush)."""
        if name in self._meta:
            self._write(_META + _key_text(name), None)
            del self._meta[name]

    def metas(self, prefix: str) -> dict[str, bytes]:
        """Every value whose name starts with `prefix`, by name."""
        return {name: value for name, value in self._meta.items() if name.startswith(prefix)}

    # ----------------------------------------------------------------------------------------
    # Durability

    def flush(self) -> Deferred[None] | None:
        """None if every write so far is durable; else a Deferred firing (with None) once the
        fsync covering them is done, or failing with `StoreError` if it could not be."""
        return self._commits.flush()

    def when_durable(self, durable: Callable[[StoreError | None], object]) -> bool:
        """`flush` without a Deferred (`GroupCommit.when_durable`)."""
        return self._commits.when_durable(durable)

    def close(self) -> None:
        """Write and fsync what is pending, close the file and release the lock (idempotent).

        Deferreds from earlier `flush` calls fire before this returns; `StoreError` if the
        store could not make every write durable (the Deferreds fail with it too).
        """
        commits = self._commits
        if commits.closed:
            return
        try:
            commits.close()
        finally:
            try:
                self._file.close()  # fsyncs again: cheap, nothing new to write
            except OSError as e:
                commits.failed = commits.failed or StoreError(f"store {self.path}: closing: {e}")
            finally:
                self._release()
        if commits.failed is not None:
            raise commits.failed

    @property
    def fsync_times(self) -> Histogram:
        """How long the commits' fsyncs took (perund_store_fsync_seconds)."""
        return self._commits.fsync_times

    @property
    def file_bytes(self) -> int:
        """The data file's size."""
        return self._file.file_bytes

    @property
    def live_bytes(self) -> int:
        """What the data file would hold if compacted now."""
        return self._file.live_bytes

    def _write(self, key: bytes, value: bytes | None) -> None:
        self._commits.write(key, value)

    def _announce(self, made: list[PaymentRecord]) -> None:
        for listener in list(self.payment_listeners):
            try:
                listener(made)
            except Exception:
                log.failure("store {path}: a payment listener failed", path=self.path)

    # ----------------------------------------------------------------------------------------
    # Compaction

    def _over_threshold(self) -> bool:
        return self._file.over(self._compact_ratio, self._compact_min_bytes)

    def _compact(self) -> None:
        """Rewrite the data file with the live records only (exactly what the last fsync
        covered: pending writes stay in memory until the next commit), moving the payment
        records to the archive."""
        archived = self._archive_payments()
        try:
            compacted = self._file.compact(drop_payments=archived)
        except StoreError as e:
            self._commits.failed = e
            return
        if not compacted:
            return
        if archived:
            self.history.drop_archived()
        self.compactions += 1

    def _archive_payments(self) -> bool:
        """Append the durable payment records to the archive (fsynced); whether that worked.
        Only what the last commit covered (the oldest ones): pending payments stay."""
        recent, pending = self.history.recent, self._commits.pending
        end = len(recent)
        # Payments are written in rising ID order, so the pending ones are the newest.
        while end and _payment_key(recent[end - 1].payment_id) in pending:
            end -= 1
        durable = recent[:end]
        if not durable:
            return False
        try:
            self.history.archive.append(durable)
        except OSError:
            log.failure("store {path}: archiving payments failed", path=self.path)
            return False
        return True

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = -1
        if self._folder_fd >= 0:
            os.close(self._folder_fd)
            self._folder_fd = -1


def _closed_at_name(channel_id: ChannelID) -> str:
    return CLOSED_AT_META + channel_id.hex()


def _payment_key(payment_id: int) -> bytes:
    return _PAYMENT + payment_id.to_bytes(8, "big")


def _lock(inside: str, path: str) -> int:
    """An exclusive, non-blocking flock on the lock file of the store in `path` (reached as
    `inside`); its descriptor."""
    try:
        return hold(os.path.join(inside, LOCK_NAME))
    except LockHeld as held:
        raise StoreLocked(
            f"store {path} is already open (lock held by pid {held.holder}); "
            "two nodes writing one store would corrupt it",
            path=path, holder=held.holder,
        ) from None


def _key_text(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 0 < len(raw) < datafile.MAX_KEY:
        raise StoreError("names must be 1..1023 bytes of UTF-8")
    return raw


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreCorrupt("a name in a key is not UTF-8") from None
