"""SessionStore: group commit, flush semantics, the other record kinds, close, the lock,
compaction (also interrupted), and a kill -9 in the middle of a stream of writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import StoreError, StoreLocked
from perund.storage import ChannelStore, datafile, datalog
from perund.storage.store import DEFAULT_COMPACT_MIN_BYTES, DEFAULT_SYNC_DELAY, SessionStore
from tests.channel.factories import make_pair
from tests.storage.helpers import durable, persisted_payments, renamed

ROOT = str(Path(__file__).resolve().parents[2])


def at_version(channel: Channel, version: int) -> Channel:
    assert channel.current is not None
    state = replace(channel.current.state, version=version)
    return replace(channel, current=replace(channel.current, state=state))


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fsyncs (still done: the counting wrapper calls the real one)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SessionStore]:
    s = SessionStore(tmp_path / "store", clock)
    yield s
    s.close()


def _fired(d: Deferred[None] | None) -> list[object]:
    assert d is not None
    results: list[object] = []
    d.addBoth(results.append)
    return results


def test_puts_of_one_turn_share_one_fsync(
    store: SessionStore, clock: Clock, fsyncs: list[int]
) -> None:
    alice, _ = make_pair()
    results = []
    for n in range(100):
        store.put(renamed(alice, n))
        results.append(_fired(store.flush()))
    store.set_block_cursor(12)
    assert not any(results) and fsyncs == []
    clock.advance(0)
    assert all(r == [None] for r in results)
    assert len(fsyncs) == 1
    assert store.flush() is None
    store.close()
    reopened = SessionStore(store.path, clock)
    assert len(list(reopened.channels())) == 100
    assert reopened.block_cursor() == 12 and reopened.block_cursor_hash() is None
    reopened.set_block_cursor(13, b"\x13" * 32)
    reopened.close()
    again = SessionStore(store.path, clock)
    assert (again.block_cursor(), again.block_cursor_hash()) == (13, b"\x13" * 32)
    again.close()


def test_a_commit_nobody_waits_for_appends_now_and_fsyncs_later(
    store: SessionStore, clock: Clock, fsyncs: list[int]
) -> None:
    """Writes nobody waits for are in the file at once (a killed process loses none of them)
    and fsynced by the next waited commit or `sync_delay` later, whichever comes first."""
    alice, bob = make_pair()
    size = store.file_bytes
    store.put(alice)
    clock.advance(0)
    assert fsyncs == [] and store.file_bytes > size
    held = Path(store.data_path).read_bytes()
    # The records end where the store says; after them only the zeros it keeps ahead.
    assert len(held) >= store.file_bytes and not held[store.file_bytes:].strip(b"\0")
    assert held[store.file_bytes - 4:store.file_bytes] != bytes(4)  # the record's CRC
    # Nothing is pending, but the fsync is: a flush asks for it at once.
    synced = _fired(store.flush())
    assert synced == []
    clock.advance(0)
    assert synced == [None] and len(fsyncs) == 1 and store.flush() is None
    # Left alone, the fsync comes after sync_delay (0.1 s).
    store.put(renamed(alice, 1))
    clock.advance(0)
    clock.advance(0.09)
    assert len(fsyncs) == 1
    clock.advance(0.02)
    assert len(fsyncs) == 2 and store.flush() is None
    # A waited commit takes the earlier unsynced ones along; close fsyncs what is left.
    store.put(renamed(alice, 2))
    clock.advance(0)
    store.put(renamed(bob, 3))
    waited = _fired(store.flush())
    clock.advance(0)
    assert waited == [None] and len(fsyncs) == 3
    clock.advance(1)
    assert len(fsyncs) == 3  # the deferred fsync was not needed any more
    store.put(renamed(alice, 4))
    clock.advance(0)
    store.close()
    assert len(fsyncs) >= 4
    reopened = SessionStore(store.path, clock)
    assert len(list(reopened.channels())) == 5
    reopened.close()


def test_flush_is_none_only_when_everything_is_durable(store: SessionStore, clock: Clock) -> None:
    assert store.flush() is None
    alice, bob = make_pair()
    store.put(alice)
    first = _fired(store.flush())
    store.put(bob)  # same channel, the other side's value: the later put wins
    second = _fired(store.flush())
    clock.advance(0)
    assert first == second == [None]
    assert store.flush() is None
    assert list(store.channels()) == [bob]


def test_writes_made_while_a_commit_fires_its_waiters_go_into_the_next_one(
    store: SessionStore, clock: Clock, fsyncs: list[int]
) -> None:
    alice, bob = make_pair()
    later: list[list[object]] = []

    def write_again(_: object) -> None:
        store.put(renamed(bob, 1))
        later.append(_fired(store.flush()))

    store.put(alice)
    d = store.flush()
    assert d is not None
    d.addCallback(write_again)
    clock.advance(0)  # (Clock.advance also runs the callLater(0) made meanwhile)
    assert len(fsyncs) == 2 and later == [[None]]


@pytest_twisted.ensureDeferred
async def test_flush_on_the_real_reactor(tmp_path: Path) -> None:
    s = SessionStore(tmp_path / "store", reactor)
    alice, _ = make_pair()
    s.put(alice)
    d = s.flush()
    assert d is not None
    assert await d is None
    assert s.flush() is None
    s.close()
    s = SessionStore(tmp_path / "store", reactor)
    assert list(s.channels()) == [alice]
    s.close()


def test_it_is_a_channel_store(store: SessionStore, clock: Clock) -> None:
    as_protocol: ChannelStore = store
    values = list(persisted_payments(2))
    for value in values:
        as_protocol.put(value)
    as_protocol.put(renamed(values[-1], 5))
    as_protocol.forget(renamed(values[-1], 5).channel_id)
    as_protocol.forget(ChannelID(b"\x99" * 32))  # never stored: nothing to write
    clock.advance(0)
    assert list(as_protocol.channels()) == [values[-1]]
    assert store.channel(values[-1].channel_id) == values[-1]
    store.close()
    reopened = SessionStore(store.path, clock)
    assert list(reopened.channels()) == [durable(values[-1])]
    reopened.close()


def test_a_noted_value_is_the_stores_view_but_never_written(
        store: SessionStore, clock: Clock, fsyncs: list[int]) -> None:
    values = list(persisted_payments(2))
    store.put(values[0])
    assert _fired(store.flush()) == [] and clock.advance(0) is None
    assert store.flush() is None
    written, synced = store.file_bytes, len(fsyncs)
    noted = replace(values[0], signed_up_to=values[0].signed_up_to + 1)
    store.note(noted)
    assert store.channel(noted.channel_id) == noted
    assert store.flush() is None
    clock.advance(1)
    assert store.file_bytes == written and len(fsyncs) == synced
    store.close()
    reopened = SessionStore(store.path, clock)
    assert list(reopened.channels()) == [durable(values[0])]
    with pytest.raises(StoreError, match="closed"):
        store.note(noted)
    reopened.close()


def test_contacts_cursor_and_meta_survive_a_reopen(store: SessionStore, clock: Clock) -> None:
    bob = {"off_chain_address": "0x" + "b0" * 20, "comm_address": "127.0.0.1:1",
           "comm_type": "tcp"}
    carol = {**bob, "comm_address": "127.0.0.1:2"}
    store.put_contact("bob", bob)
    store.put_contact("carol", carol)
    store.put_contact("dave", carol)
    store.delete_contact("dave")
    store.delete_contact("nobody")
    store.set_block_cursor(10)
    store.set_block_cursor(11)
    store.set_meta("schema", b"\x01")
    store.set_meta("ünïcode", b"")
    store.set_meta("push:1", b"one")
    store.set_meta("push:2", b"two")
    store.delete_meta("push:1")
    store.delete_meta("push:9")  # nothing to forget
    assert store.contacts() == {"bob": bob, "carol": carol}
    clock.advance(0)
    store.close()
    s = SessionStore(store.path, clock)
    assert s.contacts() == {"bob": bob, "carol": carol}
    assert s.contact("bob") == bob and s.contact("dave") is None
    assert s.block_cursor() == 11
    assert s.meta("schema") == b"\x01" and s.meta("ünïcode") == b"" and s.meta("x") is None
    assert s.metas("push:") == {"push:2": b"two"}
    s.close()


def test_close_makes_pending_writes_durable_and_ends_the_store(
    store: SessionStore, clock: Clock
) -> None:
    alice, _ = make_pair()
    store.put(alice)
    waiting = _fired(store.flush())
    store.close()
    assert waiting == [None]
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.put(alice)
    clock.advance(0)
    reopened = SessionStore(store.path, clock)
    assert list(reopened.channels()) == [alice]
    reopened.close()


def test_when_durable_tells_each_waiter_once_even_after_one_that_raises(
        store: SessionStore, clock: Clock, fsyncs: list[int]) -> None:
    told: list[object] = []

    def raising(error: StoreError | None) -> None:
        told.append(("raising", error))
        raise RuntimeError("a waiter's bug")

    assert store.when_durable(told.append) is False  # nothing written: nothing to wait for
    alice, _ = make_pair()
    store.put(alice)
    assert store.when_durable(raising) and store.when_durable(told.append)
    assert told == [] and fsyncs == []
    with capturedLogs() as events:
        clock.advance(0)
    assert told == [("raising", None), None] and len(fsyncs) == 1
    assert any("a waiter for a commit failed" in formatEvent(e) for e in events)
    assert store.when_durable(told.append) is False


def test_when_durable_of_a_failed_store_tells_the_error_at_once(
        store: SessionStore, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _ = make_pair()
    store.put(alice)
    told: list[StoreError | None] = []
    store.when_durable(told.append)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    clock.advance(0)
    assert len(told) == 1 and isinstance(told[0], StoreError)
    assert store.when_durable(told.append) is True and told[1] is told[0]
    with pytest.raises(StoreError):
        store.close()


def test_a_failed_fsync_fails_the_flush_and_every_later_one(
    store: SessionStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _ = make_pair()
    store.put(alice)
    waiting = _fired(store.flush())

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    clock.advance(0)
    assert len(waiting) == 1 and waiting[0].check(StoreError)  # type: ignore[attr-defined]
    # A later write is refused at once: nobody might wait for it, and it could never be durable.
    with pytest.raises(StoreError, match="writing failed"):
        store.put(alice)
    later = _fired(store.flush())
    assert later[0].check(StoreError)  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="writing failed"):
        store.close()
    monkeypatch.undo()
    reopened = SessionStore(store.path, clock)  # the lock was released
    reopened.close()


_OPEN_IN_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from twisted.internet.task import Clock
    from perund.storage.store import SessionStore
    SessionStore(sys.argv[2], Clock()).close()
""")


def test_a_second_open_fails_clearly_while_the_store_is_open(
    store: SessionStore, clock: Clock
) -> None:
    with pytest.raises(StoreLocked, match=f"already open.*pid {os.getpid()}"):
        SessionStore(store.path, clock)
    child = subprocess.run([sys.executable, "-c", _OPEN_IN_CHILD, ROOT, store.path],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode != 0
    assert "StoreLocked" in child.stderr and "would corrupt it" in child.stderr
    store.close()
    child = subprocess.run([sys.executable, "-c", _OPEN_IN_CHILD, ROOT, store.path],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr


@pytest.mark.parametrize(("puts", "min_bytes"),
                         [(10_000, DEFAULT_COMPACT_MIN_BYTES), (2_000, 16 * 1024)])
def test_many_puts_of_one_channel_stay_small(
    tmp_path: Path, clock: Clock, puts: int, min_bytes: int
) -> None:
    s = SessionStore(tmp_path / "store", clock, compact_min_bytes=min_bytes)
    alice, _ = make_pair()
    s.set_block_cursor(3)
    for version in range(1, puts + 1):
        s.put(at_version(alice, version))
        clock.advance(0)
        assert s.file_bytes <= max(min_bytes, 4 * s.live_bytes)
    assert s.compactions >= puts * 350 // min_bytes - 1
    assert not os.path.exists(os.path.join(s.path, datafile.COMPACT_DIR))
    s.close()
    assert os.path.getsize(s.data_path) == s.file_bytes  # closed: no zeros kept ahead
    s = SessionStore(tmp_path / "store", clock, compact_min_bytes=min_bytes)
    assert list(s.channels()) == [at_version(alice, puts)]
    assert s.block_cursor() == 3
    s.close()


def test_a_half_written_compaction_is_discarded_on_open(tmp_path: Path, clock: Clock) -> None:
    s = SessionStore(tmp_path / "store", clock)
    alice, _ = make_pair()
    for version in range(1, 50):
        s.put(at_version(alice, version))
        clock.advance(0)
    s.close()
    data = (tmp_path / "store" / "data").read_bytes()
    leftover = tmp_path / "store" / datafile.COMPACT_DIR
    leftover.mkdir()
    (leftover / "data").write_bytes(data[: len(data) // 3])  # killed while writing it
    s = SessionStore(tmp_path / "store", clock)
    assert list(s.channels()) == [at_version(alice, 49)]
    assert not leftover.exists()
    s.close()
    leftover.mkdir()  # killed after the rename, before removing the directory
    s = SessionStore(tmp_path / "store", clock)
    assert list(s.channels()) == [at_version(alice, 49)]
    assert not leftover.exists()
    s.close()


def test_a_failing_compaction_keeps_the_old_file_and_the_store_working(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = SessionStore(tmp_path / "store", clock, compact_min_bytes=8 * 1024)

    def no_rename(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datafile.os, "replace", no_rename)
    alice, _ = make_pair()
    for version in range(1, 200):
        s.put(at_version(alice, version))
        d = s.flush()
        clock.advance(0)
        assert _fired(d) == [None]
    assert s.compactions == 0
    monkeypatch.undo()
    for version in range(200, 400):
        s.put(at_version(alice, version))
        clock.advance(0)
    assert s.compactions >= 1
    s.close()
    s = SessionStore(tmp_path / "store", clock)
    assert list(s.channels()) == [at_version(alice, 399)]
    s.close()


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from twisted.internet.task import Clock
    from perund.storage.store import SessionStore
    from tests.storage.helpers import persisted_payments

    clock = Clock()
    store = SessionStore(sys.argv[2], clock, compact_min_bytes=8 * 1024)
    for i, value in enumerate(persisted_payments(100_000)):
        store.put(value)
        done = []
        store.flush().addCallback(done.append)
        clock.advance(0)
        assert done == [None]
        print(i, flush=True)  # the write is acknowledged
""")


def _kill_9_after(writer: str, path: str, writes: int) -> tuple[int, list[Channel]]:
    """Run `writer` on the store at `path`, SIGKILL it once it acknowledged `writes` writes;
    the last write it acknowledged and the values it may have written from the first on."""
    child = subprocess.Popen([sys.executable, "-c", writer, ROOT, path],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = -1
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= writes:
            break
    assert acknowledged >= writes, "the writer died on its own"
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=60)
    acknowledged = max([acknowledged, *(int(x) for x in rest.split())])
    values = []
    for value in persisted_payments(100_000):
        values.append(durable(value))
        if len(values) > acknowledged + 100:
            break
    return acknowledged, values


def test_kill_9_in_a_stream_of_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    acknowledged, values = _kill_9_after(_WRITER, path, 400)
    s = SessionStore(path, Clock())
    (stored,) = s.channels()
    s.close()
    assert stored in values[acknowledged:]


class ThreadByHand:
    """A `sync_elsewhere` runner that runs each job only when the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Deferred[float]]] = []

    def __call__(self, work: Any) -> Deferred[float]:
        done: Deferred[float] = Deferred()
        self.jobs.append((work, done))
        return done

    def finish(self) -> None:
        work, done = self.jobs.pop(0)
        done.callback(work())

    def break_down(self) -> None:
        _, done = self.jobs.pop(0)
        done.errback(OSError(5, "Input/output error"))


@pytest.fixture
def thread() -> ThreadByHand:
    return ThreadByHand()


@pytest.fixture
def elsewhere(tmp_path: Path, clock: Clock, thread: ThreadByHand) -> Iterator[SessionStore]:
    s = SessionStore(tmp_path / "store", clock, sync_elsewhere=thread)
    yield s
    s.close()


def _waiting_puts(store: SessionStore, first: int, count: int) -> list[list[object]]:
    alice, _ = make_pair()
    results = []
    for n in range(first, first + count):
        store.put(renamed(alice, n))
        results.append(_fired(store.flush()))
    return results


def test_an_fsync_elsewhere_answers_its_waiters_once_it_is_done(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand, fsyncs: list[int]) -> None:
    results = _waiting_puts(elsewhere, 0, 3)
    clock.advance(0)
    assert len(thread.jobs) == 1 and fsyncs == [] and not any(results)
    assert elsewhere.flush() is not None  # appended, not yet durable
    thread.finish()
    assert len(fsyncs) == 1 and all(r == [None] for r in results)
    assert elsewhere.flush() is None


def test_each_commit_fsync_is_timed_here_and_elsewhere(
        store: SessionStore, tmp_path: Path, clock: Clock, thread: ThreadByHand,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """perund_store_fsync_seconds: the fsyncs of commits, inline or on the thread, and not the
    appends of commits nobody waits for (their fsync comes later and is timed then)."""
    real = os.fsync

    def slow(fd: int) -> None:
        real(fd)
        time.sleep(0.002)

    monkeypatch.setattr(os, "fsync", slow)
    alice, _ = make_pair()
    store.put(renamed(alice, 0))
    clock.advance(0)  # appended, nobody waits: not fsynced yet
    assert store.fsync_times.count == 0
    assert _fired(store.flush()) == []
    clock.advance(0)
    assert store.fsync_times.count == 1 and store.fsync_times.total >= 0.002
    assert store.fsync_times.counts[:4] == [0, 0, 0, 0]  # none under 1 ms

    elsewhere = SessionStore(tmp_path / "elsewhere", clock, sync_elsewhere=thread)
    _waiting_puts(elsewhere, 0, 2)  # two waiters: the fsync runs on the thread
    clock.advance(0)
    assert elsewhere.fsync_times.count == 0
    thread.finish()
    assert elsewhere.fsync_times.count == 1 and elsewhere.fsync_times.total >= 0.002
    elsewhere.close()


def test_writes_made_while_an_fsync_runs_elsewhere_wait_for_the_next_one(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand) -> None:
    first = _waiting_puts(elsewhere, 0, 2)
    clock.advance(0)
    second = _waiting_puts(elsewhere, 2, 1)
    clock.advance(0)  # appended while the first fsync runs: it may not cover them
    assert len(thread.jobs) == 1
    thread.finish()
    assert all(r == [None] for r in first) and second == [[]]
    clock.advance(0)  # the next fsync: one waiter alone, so on the reactor
    assert thread.jobs == [] and second == [[None]] and elsewhere.flush() is None


def test_a_flush_with_nothing_new_while_an_fsync_runs_elsewhere_fires_when_it_is_done(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand) -> None:
    results = _waiting_puts(elsewhere, 0, 2)
    clock.advance(0)
    everything = _fired(elsewhere.flush())  # nothing new: it waits for the running fsync
    clock.advance(0)
    assert everything == [] and len(thread.jobs) == 1
    thread.finish()
    clock.advance(0)
    assert all(r == [None] for r in results) and everything == [None]
    assert thread.jobs == [] and elsewhere.flush() is None


def test_one_waiter_alone_fsyncs_at_once_on_the_reactor(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand, fsyncs: list[int]) -> None:
    (only,) = _waiting_puts(elsewhere, 0, 1)
    clock.advance(0)
    assert thread.jobs == [] and len(fsyncs) == 1 and only == [None]


def test_the_late_fsync_nobody_waits_for_runs_elsewhere(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand, fsyncs: list[int]) -> None:
    """A payer's own states wait for `sync_delay`'s fsync, which nobody waits for: the reactor
    goes on meanwhile instead of stalling for 0.1 s of appends."""
    alice, _ = make_pair()
    elsewhere.put(renamed(alice, 0))
    clock.advance(0)
    assert thread.jobs == [] and fsyncs == []  # appended; the fsync comes later
    clock.advance(DEFAULT_SYNC_DELAY)
    assert len(thread.jobs) == 1 and fsyncs == []
    assert elsewhere.flush() is not None
    thread.finish()
    assert len(fsyncs) == 1 and elsewhere.flush() is None


def test_a_compaction_nobody_waits_for_follows_its_fsync_elsewhere(
        tmp_path: Path, clock: Clock, thread: ThreadByHand) -> None:
    store = SessionStore(tmp_path / "store", clock, compact_min_bytes=8 * 1024,
                         sync_elsewhere=thread)
    values = iter(persisted_payments(400))
    while not thread.jobs:
        store.put(next(values))
        clock.advance(0)
    assert store.compactions == 0 and len(thread.jobs) == 1
    thread.finish()  # durable: the compaction may copy what the file holds
    assert store.compactions == 1 and store.flush() is None
    store.close()


def test_one_waiter_right_after_several_fsyncs_elsewhere_then_alone_on_the_reactor(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand, fsyncs: list[int]) -> None:
    """Busy flows side by side come and go: a commit with one waiter just after one with
    several hands its fsync over too, and the reactor goes on with the others' messages."""
    first = _waiting_puts(elsewhere, 0, 2)
    clock.advance(0)
    thread.finish()
    assert all(r == [None] for r in first) and len(fsyncs) == 1
    (single,) = _waiting_puts(elsewhere, 2, 1)
    clock.advance(0)
    assert len(thread.jobs) == 1 and single == []  # after several: elsewhere
    thread.finish()
    assert single == [None] and len(fsyncs) == 2
    (alone,) = _waiting_puts(elsewhere, 3, 1)
    clock.advance(0)
    assert thread.jobs == [] and alone == [None] and len(fsyncs) == 3  # alone: here


def test_closing_while_an_fsync_runs_elsewhere_answers_its_waiters(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand) -> None:
    results = _waiting_puts(elsewhere, 0, 2)
    clock.advance(0)
    late = _waiting_puts(elsewhere, 2, 2)
    elsewhere.close()
    assert all(r == [None] for r in results + late)
    thread.finish()  # its answer comes after the close: nothing more happens
    reopened = SessionStore(elsewhere.path, clock)
    assert len(list(reopened.channels())) == 4
    reopened.close()


def test_a_failed_fsync_elsewhere_fails_its_waiters_and_the_store(
        elsewhere: SessionStore, clock: Clock, thread: ThreadByHand) -> None:
    results = _waiting_puts(elsewhere, 0, 2)
    clock.advance(0)
    later = _waiting_puts(elsewhere, 2, 1)
    thread.break_down()
    assert all(r[0].check(StoreError) for r in results + later)  # type: ignore[attr-defined]
    alice, _ = make_pair()
    with pytest.raises(StoreError, match="writing failed"):
        elsewhere.put(alice)
    with pytest.raises(StoreError, match="writing failed"):
        elsewhere.close()


_THREADED_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from twisted.internet import task
    from twisted.internet.defer import Deferred, gatherResults
    from perund.storage.fsync_thread import fsync_thread
    from perund.storage.store import SessionStore
    from tests.storage.helpers import persisted_payments
    from tests.storage.test_store import renamed

    async def write(reactor):
        store = SessionStore(sys.argv[2], reactor, compact_min_bytes=8 * 1024,
                             sync_elsewhere=fsync_thread(reactor))
        for i, value in enumerate(persisted_payments(100_000)):
            store.put(value)
            if value.current is not None:  # the first value has no state to rename yet
                store.put(renamed(value, 1))
            # Two waiters in one commit: its fsync runs on the thread.
            await gatherResults([store.flush(), store.flush()])
            print(i, flush=True)  # both writes are acknowledged

    task.react(lambda reactor: Deferred.fromCoroutine(write(reactor)))
""")


def test_kill_9_with_fsyncs_on_their_thread_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    acknowledged, values = _kill_9_after(_THREADED_WRITER, path, 300)
    s = SessionStore(path, Clock())
    stored = {channel.channel_id: channel for channel in s.channels()}
    s.close()
    assert len(stored) == 2
    first = values[0].channel_id
    assert stored.pop(first) in values[acknowledged:]
    (other,) = stored.values()
    assert other in [renamed(v, 1) for v in values[acknowledged:] if v.current is not None]


def _holding_version_1(tmp_path: Path, clock: Clock) -> tuple[SessionStore, Channel]:
    """A store holding version 1 of a channel durably, and the channel (at version 0)."""
    s = SessionStore(tmp_path / "store", clock)
    alice, _ = make_pair()
    s.put(at_version(alice, 1))
    d = s.flush()
    clock.advance(0)
    assert _fired(d) == [None]
    return s, alice


def test_a_disk_too_full_for_the_room_ahead_fails_the_commit_before_its_records(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making room (zeros ahead of the records) is the write a full disk refuses: the commit
    fails before any record of it is written, as a refused append did, and the next open has
    everything before it."""
    monkeypatch.setattr(datalog, "ROOM", 64)
    s, alice = _holding_version_1(tmp_path, clock)
    real_write, writes = os.pwrite, []

    def full(fd: int, data: Any, at: int) -> int:
        writes.append(bytes(data))
        if not bytes(data).strip(b"\0"):
            raise OSError(28, "No space left on device")
        return real_write(fd, data, at)

    monkeypatch.setattr(os, "pwrite", full)
    s.put(at_version(alice, 2))
    failed = _fired(s.flush())
    clock.advance(0)
    monkeypatch.undo()
    assert len(writes) == 1  # the zeros, refused; no record written
    assert "No space left" in str(failed[0].value)  # type: ignore[attr-defined]
    with pytest.raises(StoreError):
        s.close()
    reopened = SessionStore(tmp_path / "store", clock)
    assert list(reopened.channels()) == [at_version(alice, 1)]
    reopened.close()


@pytest.mark.parametrize("landed", ["inside the first record", "inside the second record"])
def test_a_disk_that_fills_inside_a_commits_write_fails_it_and_the_next_open_repairs(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, landed: str
) -> None:
    """The commit's one write lands in part (a short write), then the disk is full: the commit
    fails, its waiter and every later write with it, and the next open cuts the torn record and
    keeps every whole one before it (never acknowledged, but signed by both: harmless)."""
    s, alice = _holding_version_1(tmp_path, clock)
    real_write, writes = os.pwrite, []

    def filling(fd: int, data: Any, at: int) -> int:
        writes.append(len(data))
        if len(writes) == 1:
            cut = 10 if landed == "inside the first record" else len(data) - 10
            return real_write(fd, bytes(data)[:cut], at)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", filling)
    s.put(at_version(alice, 2))
    s.put(at_version(replace(alice, channel_id=ChannelID(b"\x42" * 32)), 2))
    failed = _fired(s.flush())
    clock.advance(0)
    monkeypatch.undo()
    assert len(writes) == 2  # the rest of the short write was tried, and refused
    assert isinstance(failed[0].value, StoreError)  # type: ignore[attr-defined]
    assert "No space left" in str(failed[0].value)  # type: ignore[attr-defined]
    with pytest.raises(StoreError):
        s.put(at_version(alice, 3))
    with pytest.raises(StoreError):
        s.close()
    reopened = SessionStore(tmp_path / "store", clock)
    kept = 1 if landed == "inside the first record" else 2
    assert list(reopened.channels()) == [at_version(alice, kept)]
    reopened.close()
