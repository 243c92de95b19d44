"""The watcher on both chains: what it feeds the core, its cursor across restarts, confirmations,
the end of a challenge period, and a chain that stops answering.

The watched side is a real channel core (`transition`) over a real `SessionStore`; the tests
play the shell's part by sending the transactions the core asks for.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs, formatEvent

from perund.chain.account import Account
from perund.chain.anvil import Anvil, rpc_call
from perund.chain.chain_view import SharedChainView
from perund.chain.results import ChainEvent
from perund.chain.watcher import ChainWatcher
from perund.channel.changes import ChallengeExpired, Change, Concluded, Registered
from perund.channel.events import Conclude, Event, Register
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Channel, SignedState
from perund.channel.types import ETH, ChannelID
from perund.errors import ChainNotReachable, StoreError
from perund.session.onchain import ChainSettlement
from perund.storage.store import SessionStore

from .conftest import ANVIL_CHAIN_ID, ETHER, Chain, make_backend
from .conftest import Channel as OnChain


class Watched:
    """One side of a channel as the watcher sees it: the core and what it asked for."""

    def __init__(self, store: SessionStore, channels: list[Channel]) -> None:
        self.store = store
        self._channels = {c.channel_id: c for c in channels}
        self.fed: list[tuple[ChannelID, Change]] = []
        self.events: list[Event] = []

    @property
    def channels(self) -> Mapping[ChannelID, Channel]:
        return self._channels

    def chain_input(self, channel_id: ChannelID, change: Change) -> None:
        self.fed.append((channel_id, change))
        new, events = transition(self._channels[channel_id], change)
        self._channels[channel_id] = new
        # As the channel client: a broken store stops signing, not the chain's news.
        with contextlib.suppress(StoreError):
            self.store.put(new)
        self.events.extend(events)

    def take(self, kind: type) -> list[Event]:
        taken = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return taken


def open_channel(ch: OnChain, version: int, balances: tuple[int, int]) -> Channel:
    """Participant 0's record of `ch` at a fully signed `version`."""
    state = ch.state(version, balances)
    return Channel(ch.id, ch.params, 0, Phase.OPEN, SignedState(state, ch.sign(state)))


async def funded(chain: Chain, ch: OnChain, balances: tuple[int, int]) -> None:
    for index, amount in enumerate(balances):
        if amount:
            await chain.backend.deposit(ch.accounts[index], ch.id, index, ETH, amount)


def watcher(chain: Chain, store: SessionStore, watched: Watched,
            confirmations: int = 0) -> ChainWatcher:
    return ChainWatcher(reactor, chain.backend, store, watched, poll_interval=3600,
                        confirmations=confirmations, conclude_retry=0)


@pytest_twisted.ensureDeferred
async def test_an_old_state_is_refuted_and_the_dispute_concluded(chain: Chain, new_channel,
                                                                 tmp_path: Path) -> None:
    backend = chain.backend
    ch = new_channel()
    await funded(chain, ch, (2 * ETHER, ETHER))
    store = SessionStore(tmp_path / "db", reactor)
    ours = open_channel(ch, 5, (ETHER, 2 * ETHER))
    watched = Watched(store, [ours])
    w = watcher(chain, store, watched)
    await w.start()
    assert w.polls == 1 and watched.fed == []

    # The peer registers version 2 (it has more there).
    old = ch.state(2, (2 * ETHER - 1, ETHER + 1))
    await backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    await w.poll()
    ((cid, registered),) = watched.fed
    assert cid == ch.id and isinstance(registered, Registered) and registered.version == 2
    assert registered.balances == old.balances
    (refute,) = watched.take(Register)
    assert isinstance(refute, Register) and refute.state == ours.current.state  # type: ignore[union-attr]
    await backend.register(ch.accounts[0], ch.params, refute.state, refute.signatures)
    await w.poll()
    assert watched.channels[ch.id].dispute is not None
    assert watched.channels[ch.id].dispute.version == 5  # type: ignore[union-attr]
    # The refutation did not extend the timeout; nothing concludes before it.
    await w.poll()
    assert watched.take(Conclude) == []

    await backend.advance_time(ch.params.challenge_duration + 1)
    await w.poll()
    (conclude,) = watched.take(Conclude)
    assert isinstance(conclude, Conclude) and conclude.state.version == 5
    await backend.conclude(ch.accounts[0], ch.params, conclude.state)
    await w.poll()
    assert isinstance(watched.fed[-1][1], Concluded)
    assert watched.channels[ch.id].phase is Phase.CLOSED
    store.close()


@pytest_twisted.ensureDeferred
async def test_the_cursor_survives_a_restart_and_nothing_repeats(chain: Chain, new_channel,
                                                                 tmp_path: Path) -> None:
    backend = chain.backend
    ch = new_channel()
    await funded(chain, ch, (ETHER, ETHER))
    store = SessionStore(tmp_path / "db", reactor)
    watched = Watched(store, [open_channel(ch, 3, (ETHER, ETHER))])
    first = watcher(chain, store, watched)
    await first.start()
    cursor = store.block_cursor()
    assert cursor == await backend.block_number()
    await first.stop()
    store.close()

    # While the node is down the peer registers an old state, and other channels move.
    old = ch.state(1, (ETHER, ETHER))
    await backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    other = new_channel(3, 4)
    await backend.deposit(other.accounts[0], other.id, 0, ETH, ETHER)

    store = SessionStore(tmp_path / "db", reactor)
    assert store.block_cursor() == cursor
    watched = Watched(store, [open_channel(ch, 3, (ETHER, ETHER))])
    second = watcher(chain, store, watched)
    await second.start()  # the first poll runs inside start
    assert [type(change) for _, change in watched.fed] == [Registered]
    assert len(watched.take(Register)) == 1
    await second.poll()
    await second.poll()
    assert len(watched.fed) == 1  # nothing fed twice
    assert store.block_cursor() == await backend.block_number()
    await second.stop()
    store.close()


@pytest_twisted.ensureDeferred
async def test_confirmations_hold_back_the_newest_blocks(chain: Chain, new_channel,
                                                         tmp_path: Path) -> None:
    backend = chain.backend
    ch = new_channel()
    await funded(chain, ch, (ETHER, 0))
    store = SessionStore(tmp_path / "db", reactor)
    watched = Watched(store, [open_channel(ch, 1, (ETHER, 0))])
    w = watcher(chain, store, watched, confirmations=2)
    await w.start()
    old = ch.state(0, (ETHER, 0))
    await backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    await w.poll()
    assert watched.fed == []
    other = new_channel(3, 4)
    await backend.deposit(other.accounts[0], other.id, 0, ETH, 1)
    await w.poll()
    assert watched.fed == []
    await backend.deposit(other.accounts[0], other.id, 0, ETH, 1)
    await w.poll()
    assert [type(change) for _, change in watched.fed] == [Registered]
    await w.stop()
    store.close()


@pytest_twisted.ensureDeferred
async def test_confirmed_deposits_of_watched_channels_are_reported(chain: Chain, new_channel,
                                                                   tmp_path: Path) -> None:
    ch, stranger = new_channel(), new_channel(3, 4)
    store = SessionStore(tmp_path / "db", reactor)
    watched = Watched(store, [open_channel(ch, 0, (ETHER, ETHER))])
    deposits: list[ChannelID] = []
    w = ChainWatcher(reactor, chain.backend, store, watched, poll_interval=3600,
                     confirmations=1, on_deposit=deposits.append)
    await w.start()
    await funded(chain, ch, (ETHER, ETHER))
    await funded(chain, stranger, (ETHER, 0))  # not ours; also buries the second deposit
    await w.poll()
    assert deposits == [ch.id, ch.id] and watched.fed == []
    await w.stop()
    store.close()


async def watching_a_fork(chain: Chain, new_channel, tmp_path: Path,
                          ) -> tuple[OnChain, SessionStore, Watched, ChainWatcher, Any]:
    """A funded channel at version 3, watched from now on, and an anvil snapshot of this
    moment for `evm_revert` to fork the chain from."""
    ch = new_channel()
    await funded(chain, ch, (ETHER, ETHER))
    store = SessionStore(tmp_path / "db", reactor)
    watched = Watched(store, [open_channel(ch, 3, (ETHER, ETHER))])
    w = watcher(chain, store, watched)
    await w.start()
    return ch, store, watched, w, rpc_call(chain.url, "evm_snapshot")


async def until_height(chain: Chain, height: int) -> None:
    while await chain.backend.block_number() < height:
        await chain.backend.mine()


@pytest.mark.parametrize("chain_kind", ["anvil"])  # evm_snapshot / evm_revert
@pytest_twisted.ensureDeferred
async def test_a_registration_a_deep_reorganisation_slips_under_the_cursor_is_found(
        chain: Chain, new_channel, tmp_path: Path) -> None:
    """A reorganisation deeper than the confirmations replaces blocks the watcher has passed,
    and one of the new blocks holds the peer's registration of an old state: the watcher sees
    its cursor block's hash change, reads the events again, and the core refutes."""
    backend = chain.backend
    ch, store, watched, w, fork = await watching_a_fork(chain, new_channel, tmp_path)
    for _ in range(3):
        await backend.mine()
    await w.poll()
    passed = w.cursor
    assert passed is not None and w.cursor_hash == await backend.block_hash(passed)
    # The other branch wins: the same height, with the peer's registration in its first block.
    assert rpc_call(chain.url, "evm_revert", [fork]) is True
    old = ch.state(1, (2 * ETHER, 0))
    registered = await backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    await until_height(chain, passed)
    assert registered.block_number <= passed and w.cursor_hash != await backend.block_hash(passed)
    await w.poll()
    assert w.reorgs == 1
    assert [(type(change), change.version) for _, change in watched.fed] == [(Registered, 1)]
    (refute,) = watched.take(Register)
    assert refute.state.version == 3
    assert w.cursor == passed and w.cursor_hash == await backend.block_hash(passed)
    await w.poll()
    assert w.reorgs == 1  # the new branch is remembered: no second alarm
    await w.stop()
    store.close()


@pytest.mark.parametrize("chain_kind", ["anvil"])  # evm_snapshot / evm_revert
@pytest_twisted.ensureDeferred
async def test_a_chain_that_lost_its_newest_blocks_is_read_again_below_the_cursor(
        chain: Chain, new_channel, tmp_path: Path) -> None:
    """A dev chain restarted from an older state save: the block the watcher passed is gone,
    and the peer's registration of an old state lands below the cursor. An idle dev chain
    might never grow past the cursor again: the watcher reads from below the new head.
    Before that it asks the session to re-examine what no event tells (a conclusion in the
    lost blocks), at each poll until that succeeds, and then no more."""
    backend = chain.backend
    ch, store, watched, w, fork = await watching_a_fork(chain, new_channel, tmp_path)
    rechecks: list[int | None] = []

    async def recheck() -> None:
        rechecks.append(w.cursor)
        if len(rechecks) == 1:
            raise ChainNotReachable("the chain went away meanwhile")

    w.on_rewind = recheck
    for _ in range(3):
        await backend.mine()
    await w.poll()
    passed = w.cursor
    assert passed is not None and rechecks == []
    assert rpc_call(chain.url, "evm_revert", [fork]) is True
    old = ch.state(1, (2 * ETHER, 0))
    registered = await backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    assert registered.block_number < passed == w.cursor
    assert await backend.block_number() < passed
    with pytest.raises(ChainNotReachable):
        await w.poll()
    assert watched.fed == [] and len(rechecks) == 1 and rechecks[0] < passed
    await w.poll()
    assert len(rechecks) == 2
    assert w.reorgs == 1
    assert [(type(change), change.version) for _, change in watched.fed] == [(Registered, 1)]
    (refute,) = watched.take(Register)
    assert refute.state.version == 3
    await w.poll()
    assert len(rechecks) == 2
    await w.stop()
    store.close()


@pytest.mark.parametrize("chain_kind", ["anvil"])  # evm_snapshot / evm_revert
@pytest_twisted.ensureDeferred
async def test_a_refutation_a_deep_reorganisation_drops_is_sent_again(
        chain: Chain, new_channel, tmp_path: Path) -> None:
    backend = chain.backend
    ch, store, watched, w, fork = await watching_a_fork(chain, new_channel, tmp_path)
    ours = ChainSettlement(reactor, backend, ch.accounts[0])
    old = ch.state(1, (2 * ETHER, 0))
    await backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    await w.poll()
    (refute,) = watched.take(Register)
    await ours.register(refute)
    await backend.mine()
    await w.poll()
    assert watched.channels[ch.id].dispute.version == 3  # type: ignore[union-attr]
    passed = w.cursor
    # The other branch: the peer's registration is in it, our refutation is not.
    assert rpc_call(chain.url, "evm_revert", [fork]) is True
    backend.forget()  # the peer's script shares this backend: its nonce went back too
    await backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    assert passed is not None
    await until_height(chain, passed)
    await w.poll()
    assert w.reorgs == 1
    assert watched.channels[ch.id].dispute.version == 1  # type: ignore[union-attr]
    again = watched.take(Register)
    assert again and all(r.state.version == 3 for r in again)
    sent = len(ours.receipts)
    for register in again:  # the first is sent; the others find it registered
        await ours.register(register)
    assert len(ours.receipts) == sent + 1
    await backend.mine()
    await w.poll()
    assert watched.channels[ch.id].dispute.version == 3  # type: ignore[union-attr]
    await w.stop()
    store.close()


class _Later:
    """The reactor, its clock `offset` seconds ahead (the wall clock past a timeout that no
    block of an idle chain shows yet)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def seconds(self) -> float:
        return reactor.seconds() + self.offset

    def __getattr__(self, name: str) -> object:
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_an_idle_dev_chain_is_mined_once_a_challenge_period_is_over(
        chain: Chain, new_channel, tmp_path: Path) -> None:
    """The embedded dev chain mines only per transaction: a challenge period over by the clock
    shows in no block, and the conclusion's pre-flight (against the newest block) would fail
    with ChallengeNotOver until some other transaction came. The watcher mines one first."""
    backend = chain.backend
    ch = new_channel()
    await funded(chain, ch, (ETHER, ETHER))
    store = SessionStore(tmp_path / "db", reactor)
    watched = Watched(store, [open_channel(ch, 1, (ETHER, ETHER))])
    mined: list[int] = []

    async def mine() -> None:
        await backend.mine()
        mined.append(await backend.block_number())

    clock = _Later(0)
    w = ChainWatcher(clock, backend, store, watched, poll_interval=3600, conclude_retry=0,
                     mine=lambda: Deferred.fromCoroutine(mine()))
    await w.start()
    latest = watched.channels[ch.id].current
    assert latest is not None
    await backend.register(ch.accounts[1], ch.params, latest.state, latest.signatures)
    await w.poll()
    assert mined == [] and [type(c) for _, c in watched.fed] == [Registered]
    head = await backend.block_number()
    clock.offset = ch.params.challenge_duration + 1
    await w.poll()
    assert mined == [head + 1]
    assert [type(c) for _, c in watched.fed] == [Registered, ChallengeExpired]
    await w.stop()
    store.close()


@pytest_twisted.ensureDeferred
async def test_a_broken_store_does_not_stop_the_watcher(chain: Chain, new_channel, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the cursor cannot be recorded, yet disputes are followed and concluded."""
    backend = chain.backend
    ch = new_channel()
    await funded(chain, ch, (ETHER, ETHER))
    store = SessionStore(tmp_path / "db", reactor)
    watched = Watched(store, [open_channel(ch, 1, (ETHER, ETHER))])
    w = watcher(chain, store, watched)
    await w.start()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    latest = watched.channels[ch.id].current
    assert latest is not None
    await backend.register(ch.accounts[1], ch.params, latest.state, latest.signatures)
    await w.poll()
    assert [type(change) for _, change in watched.fed] == [Registered]
    assert w.cursor == await backend.block_number()  # moved on, in memory
    await backend.advance_time(ch.params.challenge_duration + 1)
    await w.poll()
    assert [type(change) for _, change in watched.fed] == [Registered, ChallengeExpired]
    await w.stop()
    with pytest.raises(StoreError):
        store.close()


@pytest_twisted.ensureDeferred
async def test_a_chain_that_stops_answering_is_retried_from_the_same_cursor(
        tmp_path: Path) -> None:
    """Its own anvil, stopped under the watcher: the poll fails with a warning and the cursor
    stays where it was, so nothing is skipped once the chain is back."""
    node = Anvil(ANVIL_CHAIN_ID).start()
    backend = make_backend(node.url, ANVIL_CHAIN_ID, connect_timeout=2.0)
    try:
        await backend.connect()
        await backend.deploy_adjudicator(Account(node.private_keys[0]))
        store = SessionStore(tmp_path / "db", reactor)
        watched = Watched(store, [])
        w = ChainWatcher(reactor, backend, store, watched, poll_interval=3600)
        await w.start()
        cursor = w.cursor
        node.stop()
        with pytest.raises(ChainNotReachable):
            await w.poll()
        await w._poll_logged()  # what the loop runs: logged, not raised
        assert w.cursor == cursor and store.block_cursor() == cursor
        await w.stop()
        store.close()
    finally:
        node.stop()
        backend.stopService()


class _DownChain:
    """A chain that answers nothing until `up`, then is an empty chain at block 0."""

    def __init__(self) -> None:
        self.up = False

    def block_number(self) -> Deferred[int]:
        return succeed(0) if self.up else fail(ChainNotReachable("connection refused"))

    def __getattr__(self, name: str) -> object:
        answer = [] if name == "events" else bytes(32) if "hash" in name else 0
        return lambda *args: succeed(answer)


@pytest_twisted.ensureDeferred
async def test_a_chain_that_keeps_failing_is_logged_once_a_minute(tmp_path: Path) -> None:
    """A dead chain fails every poll (four a second): one line when it starts, one a minute
    while it lasts, one when it is over."""
    clock = Clock()
    chain = _DownChain()
    store = SessionStore(tmp_path / "db", reactor)
    w = ChainWatcher(clock, chain, store, Watched(store, []), poll_interval=3600)
    chain.up = True
    await w.start()
    chain.up = False
    with capturedLogs() as events:
        for _ in range(480):  # two minutes of polls, from 0 to 119.75 s
            await w._poll_logged()
            clock.advance(0.25)
        chain.up = True
        await w._poll_logged()
    lines = [formatEvent(e) for e in events if "watcher" in formatEvent(e)]
    await w.stop()
    assert lines == [
        "watcher: polling the chain failed: connection refused",
        "watcher: polling the chain still fails (241 polls in 60 s): connection refused",
        "watcher: polling the chain works again after 480 failed polls",
    ]
    store.close()


@pytest_twisted.ensureDeferred
async def test_sessions_share_the_chain_reads(chain: Chain, new_channel, tmp_path: Path) -> None:
    """Five sessions' watchers on one SharedChainView: concurrent polls make one request for
    the head, one for each block hash (the cursor's, the new cursor's), one for the logs and
    one for the time, not five of each."""
    ch = new_channel()
    await funded(chain, ch, (ETHER, ETHER))
    view = SharedChainView(reactor, chain.backend, max_age=0.3)
    sessions = []
    for i in range(5):
        store = SessionStore(tmp_path / f"db{i}", reactor)
        watched = Watched(store, [open_channel(ch, 3, (ETHER, ETHER))])
        sessions.append((store, watched, watcher_on(view, store, watched)))
    await gatherResults([w.start() for _, _, w in sessions])
    old = ch.state(1, (ETHER, ETHER))
    await chain.backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    await deferLater(reactor, 0.35)  # the head the view knows is older than max_age
    before = view.requests
    await gatherResults([Deferred.fromCoroutine(w.poll()) for _, _, w in sessions])
    assert view.requests - before <= 5
    for _, watched, _ in sessions:
        assert [type(change) for _, change in watched.fed] == [Registered]
    for store, _, w in sessions:
        await w.stop()
        store.close()


def watcher_on(view: SharedChainView, store: SessionStore, watched: Watched) -> ChainWatcher:
    return ChainWatcher(reactor, view, store, watched, poll_interval=3600, conclude_retry=0)


@pytest_twisted.ensureDeferred
async def test_a_chain_shorter_than_the_cursor_is_reported_once(
        chain: Chain, tmp_path: Path, logs: list[dict[str, object]]) -> None:
    store = SessionStore(tmp_path / "db", reactor)
    store.set_block_cursor(10**6)  # from a chain that was reset since
    watched = Watched(store, [])
    w = watcher(chain, store, watched)
    await w.start()
    await w.poll()
    seen = [formatEvent(e) for e in logs if e.get("log_namespace") == "perund.watcher"
            and e.get("log_level") is LogLevel.error]
    assert len(seen) == 1 and "below the block cursor 1000000" in seen[0]
    assert store.block_cursor() == 10**6
    await w.stop()
    store.close()


class _Lagging(SharedChainView):
    """A view whose logs come from a backend that has not indexed registrations yet (a
    load-balanced node): its first answers leave every `Registered` out."""

    def events(self, from_block: int, to_block: int) -> Deferred[list[ChainEvent]]:
        return super().events(from_block, to_block).addCallback(
            lambda events: [e for e in events if e.name != "Registered"])


@pytest_twisted.ensureDeferred
async def test_a_registration_the_chains_first_answer_left_out_is_found_again(
        chain: Chain, new_channel, tmp_path: Path, logs: list[dict[str, object]]) -> None:
    """The chain review's load balancer: eth_getLogs left the peer's registration out, the
    channel stayed open, and the stale state won. Every RECHECK_POLLS polls the watcher reads
    the recent blocks again, and the registration is refuted then."""
    from perund.chain import watcher as watcher_module

    ch = new_channel()
    await funded(chain, ch, (ETHER, ETHER))
    store = SessionStore(tmp_path / "db", reactor)
    watched = Watched(store, [open_channel(ch, 3, (ETHER, ETHER))])
    w = watcher_on(_Lagging(reactor, chain.backend, max_age=0), store, watched)
    await w.start()
    old = ch.state(1, (ETHER + 1, ETHER - 1))
    await chain.backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    while w.polls % watcher_module.RECHECK_POLLS:
        await w.poll()
        if w.polls % watcher_module.RECHECK_POLLS:
            assert watched.fed == []  # the first answers have nothing of it
    ((cid, registered),) = watched.fed
    assert cid == ch.id and isinstance(registered, Registered) and registered.version == 1
    (refute,) = watched.take(Register)
    assert refute.state.version == 3  # type: ignore[attr-defined]
    assert any("left out 1 event of blocks" in formatEvent(e) for e in logs)
    await w.poll()  # read again next time: nothing twice
    assert len(watched.fed) == 1
    await w.stop()
    store.close()


@pytest_twisted.ensureDeferred
async def test_rewinds_are_logged_as_errors_once_a_minute(chain: Chain, new_channel,
                                                           tmp_path: Path) -> None:
    """A node whose block hashes flap made the watcher rewind, and write an error line, at
    every poll (the chain review): the rest of a minute's rewinds go to debug."""
    ch = new_channel()
    store = SessionStore(tmp_path / "db", reactor)
    clock = Clock()
    watched = Watched(store, [open_channel(ch, 1, (0, 0))])
    w = ChainWatcher(clock, chain.backend, store, watched, poll_interval=3600)
    w.cursor = 10
    with capturedLogs() as logs:
        for _ in range(3):
            w._rewind(10)
        clock.advance(61)
        w._rewind(10)
    rewinds = [e for e in logs if "is not the block it was" in e["log_format"]]
    assert [e["log_level"] for e in rewinds] == [
        LogLevel.error, LogLevel.debug, LogLevel.debug, LogLevel.error]
    assert "(2 more since the last such line)" in formatEvent(rewinds[-1])
    store.close()


@pytest_twisted.ensureDeferred
async def test_a_restarted_watchers_recheck_leaves_what_came_before_its_cursor(
        chain: Chain, new_channel, tmp_path: Path, logs: list[dict[str, object]]) -> None:
    """Events up to the cursor a watcher starts from were handled by the run before: its
    rechecks do not hand them on again (nor call them left out)."""
    from perund.chain import watcher as watcher_module

    ch = new_channel()
    await funded(chain, ch, (ETHER, ETHER))
    old = ch.state(1, (ETHER + 1, ETHER - 1))
    await chain.backend.register(ch.accounts[1], ch.params, old, ch.sign(old))
    store = SessionStore(tmp_path / "db", reactor)
    store.set_block_cursor(await chain.backend.block_number())  # handled before the restart
    watched = Watched(store, [open_channel(ch, 3, (ETHER, ETHER))])
    w = watcher_on(SharedChainView(reactor, chain.backend, max_age=0), store, watched)
    await w.start()
    while w.polls < watcher_module.RECHECK_POLLS:
        await w.poll()
    assert watched.fed == []
    assert not any("left out" in formatEvent(e) for e in logs)
    await w.stop()
    store.close()
