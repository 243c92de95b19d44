"""The payment archive within `limits.payment_history_size`: two files, the older dropped when
the newer reaches half the limit; lookups, listing and cursors across both; a rotation cut
short at each step; a store whose compactions archive through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from perund.channel.types import ETH
from perund.storage.archive import PaymentArchive
from perund.storage.history import PaymentHistory, PaymentQuery
from perund.storage.payments import PaymentRecord, encode_payment
from perund.storage.store import SessionStore
from tests.storage.test_history import Pay

RECORD_BYTES = len(encode_payment(PaymentRecord(
    0, b"\x01" * 32, b"\x02" * 20, "sent", ETH, 1, 0, 0.0))) + 8  # type: ignore[arg-type]


def record(i: int) -> PaymentRecord:
    return PaymentRecord(i, b"\x01" * 32, b"\x02" * 20, "sent", ETH, 1, i,  # type: ignore[arg-type]
                         float(i))


def size_of(ids: list[int]) -> int:
    return sum(len(encode_payment(record(i))) + 8 for i in ids)


def fill(archive: PaymentArchive, count: int, batch: int = 10) -> None:
    for first in range(0, count, batch):
        archive.append(record(i) for i in range(first, min(first + batch, count)))


def kept_ids(archive: PaymentArchive) -> list[int]:
    return [r.payment_id for _, r in archive.newest_first()]


def test_the_archive_keeps_the_newest_payments_within_its_limit(tmp_path: Path) -> None:
    limit = 100 * RECORD_BYTES
    archive = PaymentArchive(str(tmp_path), limit)
    fill(archive, 1000)
    ids = kept_ids(archive)
    # Rotated at every 50 records: the last append filled `payments` to half the limit, so
    # it became `payments.1` (records 950 to 999) and the next append starts a new one.
    assert ids == list(range(999, 949, -1))
    assert archive.size == size_of(ids) and archive.last_id == 999
    assert archive.dropped == 19
    assert sorted(os.listdir(tmp_path)) == ["payments.1", "payments.1.idx"]
    fill(archive, 1005)  # the first 1000 are archived already: only 5 are new
    ids = kept_ids(archive)
    assert ids == list(range(1004, 949, -1)) and archive.size == size_of(ids)
    oldest = ids[-1]
    assert archive.get(oldest - 1) is None and archive.get(0) is None
    for i in (oldest, oldest + 1, 998, 999, 1000, 1004):
        assert archive.get(i) == record(i)
        at = archive.start_of(i)
        assert at is not None and archive.record_at(at) == record(i)
    assert archive.start_of(1005) == archive.size
    assert archive.start_of(0) == 0  # dropped: where the oldest kept one starts
    # Opened again, it holds the same.
    again = PaymentArchive(str(tmp_path), limit)
    assert kept_ids(again) == ids and again.last_id == 1004


def test_a_rotation_says_which_payments_it_dropped(tmp_path: Path) -> None:
    archive = PaymentArchive(str(tmp_path), 100 * RECORD_BYTES)
    with capturedLogs() as events:
        fill(archive, 150)  # rotated at 50 (nothing dropped), at 100 (0 to 49), at 150
    assert [formatEvent(e) for e in events] == [
        f"payment archive {tmp_path}: dropped payments {first} to {last}, the oldest, to stay "
        f"within limits.payment_history_size ({100 * RECORD_BYTES} bytes)"
        for first, last in ((0, 49), (50, 99))]


def test_without_a_limit_nothing_is_dropped(tmp_path: Path) -> None:
    archive = PaymentArchive(str(tmp_path))
    fill(archive, 500)
    assert kept_ids(archive) == list(range(499, -1, -1))
    assert sorted(os.listdir(tmp_path)) == ["payments", "payments.idx"]


def test_pages_and_cursors_cross_the_two_files_and_outlive_a_rotation(tmp_path: Path) -> None:
    limit = 100 * RECORD_BYTES
    archive = PaymentArchive(str(tmp_path), limit)
    fill(archive, 230)
    history = PaymentHistory(archive)
    ids = kept_ids(archive)
    listed, cursor = [], None
    while True:
        page = history.page(PaymentQuery(), limit=7, cursor=cursor)
        listed += [r.payment_id for r in page.payments]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert listed == ids
    # A cursor from before a rotation: its offset no longer points at its payment, so the
    # history finds the payment again by its ID and goes on from there.
    first = history.page(PaymentQuery(), limit=5)
    assert first.next_cursor is not None and "@" in first.next_cursor
    newest_before = first.payments[-1].payment_id
    rotations = archive.dropped
    next_id = 230
    while archive.dropped == rotations:
        archive.append([record(next_id)])
        next_id += 1
    # Records 150 to 199 went with that rotation; 224 to 220 are in `payments.1` now.
    assert newest_before == 225 and archive.get(199) is None and archive.get(200) is not None
    after = history.page(PaymentQuery(), limit=5, cursor=first.next_cursor)
    assert [r.payment_id for r in after.payments] == [224, 223, 222, 221, 220]


def test_payments_archived_before_a_rotation_are_not_archived_again(tmp_path: Path) -> None:
    """A compaction that crashed after archiving hands the same records over again; after a
    rotation `payments` is new and empty, and the archive still knows them."""
    archive = PaymentArchive(str(tmp_path), 30 * RECORD_BYTES)
    archive.append(record(i) for i in range(15))  # half the limit: rotated
    assert "payments" not in os.listdir(tmp_path) and archive.last_id == 14
    archive.append(record(i) for i in range(5, 17))
    assert kept_ids(archive) == list(range(16, -1, -1))


@pytest.mark.parametrize("failing", ["unlink", "replace data", "replace index", "fsync dir"])
def test_a_rotation_cut_short_leaves_the_archive_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    limit = 40 * RECORD_BYTES
    archive = PaymentArchive(str(tmp_path), limit)
    fill(archive, 30)  # rotated at 20: payments.1 (0 to 19, and its index), payments 20 to 29
    assert {"payments.1", "payments.1.idx", "payments"} <= set(os.listdir(tmp_path))
    real_replace, real_unlink = os.replace, os.unlink
    replaced: list[str] = []

    def replace(src: str, dst: str) -> None:
        replaced.append(src)
        if (failing == "replace data" and len(replaced) == 1) or \
                (failing == "replace index" and len(replaced) == 2):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    def unlink(path: str) -> None:
        if failing == "unlink":
            raise OSError(5, "Input/output error")
        real_unlink(path)

    def fsync_dir(path: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    if failing == "fsync dir":
        monkeypatch.setattr("perund.storage.datafile.fsync_dir", fsync_dir)
    archive.append(record(i) for i in range(30, 50))  # reaches half: rotates, cut short
    monkeypatch.undo()
    now = kept_ids(archive)
    if failing in ("unlink", "replace data"):
        assert now == list(range(49, -1, -1))  # not rotated: nothing dropped yet
    else:
        assert now == list(range(49, 19, -1))  # rotated: 0 to 19 dropped
    assert kept_ids(PaymentArchive(str(tmp_path), limit)) == now
    # The next archiving rotates if the last could not: the same files either way.
    archive.append(record(i) for i in range(50, 60))
    assert kept_ids(archive) == list(range(59, 19, -1))
    assert kept_ids(PaymentArchive(str(tmp_path), limit)) == list(range(59, 19, -1))


def test_a_store_s_compactions_archive_within_the_limit(tmp_path: Path) -> None:
    clock = Clock()
    limit = 60 * RECORD_BYTES
    alice = SessionStore(tmp_path / "alice", clock, compact_min_bytes=4096,
                         history_limit=limit)
    bob = SessionStore(tmp_path / "bob", clock)
    pay = Pay(alice, bob, clock)
    for _ in range(400):
        pay.pay("alice", 1)
    assert alice.compactions > 2 and alice.history.archive.dropped > 0
    listed = [r.payment_id for r in alice.history.page(PaymentQuery(), limit=1000).payments]
    assert listed == list(range(listed[0], listed[0] - len(listed), -1))
    assert listed[0] == 399 and len(listed) < 400
    assert alice.history.archive.size <= limit + 400 * RECORD_BYTES
    alice.close()
    bob.close()
    again = SessionStore(tmp_path / "alice", clock, history_limit=limit)
    assert [r.payment_id for r in again.history.page(PaymentQuery(), limit=1000).payments] \
        == listed
    again.close()
