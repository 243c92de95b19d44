"""Notification hubs: delivery, caching until expiry, several subscribers, withdrawal,
client clean-up, what the shelf keeps across restarts; on a task.Clock."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from perund.api.amounts import Currencies
from perund.api.credentials import OPERATOR
from perund.api.hub import PAYMENTS, PROPOSALS, UPDATES, ClientSubscriptions, SessionHub
from perund.api.method_spec import CallContext
from perund.api.views import (
    AssetBalance,
    ChannelView,
    KeptPush,
    Notification,
    ProposalGoneView,
    ProposalView,
    UpdateView,
    Withdrawn,
)
from perund.channel.types import ETH, Address
from perund.errors import ResourceNotFound, StoreError
from tests.api.helpers import Api
from tests.api.memfacade import MemoryShelf

PEER = Address(b"\x0b" * 20)


def proposal(expiry: float) -> ProposalView:
    return ProposalView(os.urandom(32), "bob", PEER, (AssetBalance(ETH, 1, 1),), 60, expiry)


def update(channel_id: bytes, expiry: float | None, kind: str = "open") -> UpdateView:
    view = ChannelView(channel_id, "bob", PEER, "open", 1, (AssetBalance(ETH, 1, 1),), 60)
    return UpdateView(None if kind == "closed" else os.urandom(32), channel_id, kind, view,
                      expiry)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1000)
    return clock


def test_delivers_to_every_matching_subscriber_and_caches_nothing(clock: Clock) -> None:
    hub = SessionHub(clock)
    first: list[Notification] = []
    second: list[Notification] = []
    updates: list[Notification] = []
    hub.subscribe(PROPOSALS, None, first.append)
    hub.subscribe(PROPOSALS, None, second.append)
    hub.subscribe(UPDATES, None, updates.append)
    note = proposal(clock.seconds() + 60)
    hub.publish(note)
    assert first == [note] and second == [note] and updates == []
    assert hub.cached() == []


def test_read_only_subscriptions_leave_half_of_the_sessions_to_its_owner(clock: Clock) -> None:
    from perund.errors import FailedPrecondition

    hub = SessionHub(clock, max_subscribers=4)
    ignored: list[Notification] = []
    for _ in range(2):
        hub.subscribe(PAYMENTS, None, ignored.append, read_only=True)
    with pytest.raises(FailedPrecondition, match="read-only credentials of this session have 2"):
        hub.subscribe(PAYMENTS, None, ignored.append, read_only=True)
    owner: list[Notification] = []
    hub.subscribe(PROPOSALS, None, owner.append)
    hub.subscribe(UPDATES, None, owner.append)
    with pytest.raises(FailedPrecondition, match="this session has 4 subscriptions"):
        hub.subscribe(UPDATES, None, owner.append)


def test_caches_while_nobody_listens_and_delivers_once_in_order(clock: Clock) -> None:
    hub = SessionHub(clock)
    one, two = proposal(clock.seconds() + 60), proposal(clock.seconds() + 60)
    hub.publish(one)
    hub.publish(two)
    got: list[Notification] = []
    hub.subscribe(PROPOSALS, None, got.append)
    assert got == [one, two]
    later: list[Notification] = []
    hub.subscribe(PROPOSALS, None, later.append)
    assert later == []  # handed out once


def test_expired_notifications_are_dropped_not_delivered(clock: Clock) -> None:
    hub = SessionHub(clock, closed_ttl=100)
    short = proposal(clock.seconds() + 10)
    long = proposal(clock.seconds() + 60)
    closed = update(b"\x01" * 32, None, "closed")
    hub.publish(short)
    hub.publish(long)
    hub.publish(closed)
    hub.publish(proposal(clock.seconds()))  # already expired: never kept
    assert len(hub.cached()) == 3
    clock.advance(10)
    assert hub.cached() == [long, closed]
    clock.advance(50)
    assert hub.cached() == [closed]
    got: list[Notification] = []
    clock.advance(39)
    subscription = hub.subscribe(UPDATES, None, got.append)
    assert got == [closed]
    hub.publish(update(b"\x02" * 32, None, "closed"))
    assert hub.unsubscribe(subscription.id)
    hub.publish(update(b"\x03" * 32, None, "closed"))
    clock.advance(100)
    assert hub.cached() == []


def test_channel_filters(clock: Clock) -> None:
    hub = SessionHub(clock)
    a, b = b"\x0a" * 32, b"\x0b" * 32
    only_a: list[Notification] = []
    hub.subscribe(UPDATES, a, only_a.append)
    for_a, for_b = update(a, clock.seconds() + 5), update(b, clock.seconds() + 5)
    hub.publish(for_a)
    hub.publish(for_b)
    assert only_a == [for_a]
    assert hub.cached() == [for_b]  # nobody wanted b's: kept for a later subscriber
    everything: list[Notification] = []
    hub.subscribe(UPDATES, None, everything.append)
    assert everything == [for_b]


def test_updated_views_are_wanted_only_with_a_subscriber_to_the_channels_updates(
        clock: Clock) -> None:
    hub = SessionHub(clock)
    a, b = b"\x0a" * 32, b"\x0b" * 32
    hub.subscribe(PROPOSALS, None, lambda n: None)
    assert not hub.wants_updated(a)
    only_a = hub.subscribe(UPDATES, a, lambda n: None)
    assert hub.wants_updated(a) and not hub.wants_updated(b)
    hub.subscribe(UPDATES, None, lambda n: None)
    assert hub.wants_updated(b)
    hub.unsubscribe(only_a.id)
    hub.close()
    assert not hub.wants_updated(a)


def test_withdrawn_updates_leave_the_cache(clock: Clock) -> None:
    hub = SessionHub(clock)
    kept, gone = update(b"\x01" * 32, clock.seconds() + 5), update(b"\x01" * 32,
                                                                   clock.seconds() + 5)
    hub.publish(kept)
    hub.publish(gone)
    hub.publish(Withdrawn(gone.update_id or b"", gone.channel_id, "the peer synced"))
    assert hub.cached() == [kept]


def test_the_cache_is_bounded_oldest_out(clock: Clock) -> None:
    hub = SessionHub(clock, max_cached=3)
    notes = [proposal(clock.seconds() + 60) for _ in range(5)]
    for note in notes:
        hub.publish(note)
    assert hub.cached() == notes[2:]


def test_a_failing_subscriber_does_not_stop_the_others(clock: Clock) -> None:
    hub = SessionHub(clock)

    def broken(note: Notification) -> None:
        raise RuntimeError("client bug")

    got: list[Notification] = []
    hub.subscribe(PROPOSALS, None, broken)
    hub.subscribe(PROPOSALS, None, got.append)
    note = proposal(clock.seconds() + 60)
    hub.publish(note)
    assert got == [note]


def test_closed_hubs_forget_everything(clock: Clock) -> None:
    hub = SessionHub(clock)
    hub.publish(proposal(clock.seconds() + 60))
    hub.close()
    hub.publish(proposal(clock.seconds() + 60))
    assert hub.cached() == [] and hub.subscribers == 0


def test_a_closed_session_tells_each_subscriber_once_and_frees_their_room() -> None:
    """Another client closes the session: every subscription of it, on every connection, gets
    one `sessionClosed` push and ends; the connection's room for subscriptions is free again
    (an audit: a shell whose session was closed elsewhere heard nothing, then misleading
    errors)."""
    api = Api()
    session, _ = api.session_with_peer()
    pushed: list[tuple[str, Any]] = []
    client = ClientSubscriptions(lambda sid, note: pushed.append((sid, note)),
                                 max_subscriptions=2)
    context = CallContext("ws", client, OPERATOR)
    subs = [api.call("subscribe", {"sessionId": session, "topic": topic}, context)
            for topic in ("proposals", "updates")]
    client.release()
    api.call("session_close", {"sessionId": session, "force": True})
    told = {"type": "sessionClosed", "sessionId": session}
    assert [(sid, note.to_json(Currencies())) for sid, note in pushed] == [
        (sub, told) for sub in subs]
    # Both ended: a new session's subscriptions fit on this connection again.
    other, _ = api.session_with_peer()
    for topic in ("proposals", "updates"):
        api.call("subscribe", {"sessionId": other, "topic": topic}, context)


def test_a_client_gets_pushes_only_after_its_subscribe_reply(clock: Clock) -> None:
    hub = SessionHub(clock)
    pushed: list[tuple[str, Notification]] = []
    client = ClientSubscriptions(lambda sid, note: pushed.append((sid, note)))
    cached = proposal(clock.seconds() + 60)
    hub.publish(cached)
    sub = client.subscribe(hub, PROPOSALS, None)
    fresh = proposal(clock.seconds() + 60)
    hub.publish(fresh)
    assert pushed == []  # the reply carrying `sub` has not gone out yet
    client.release()
    assert pushed == [(sub, cached), (sub, fresh)]
    newest = proposal(clock.seconds() + 60)
    hub.publish(newest)
    assert pushed[-1] == (sub, newest)


def test_a_client_unsubscribes_and_is_cleaned_up(clock: Clock) -> None:
    hub = SessionHub(clock)
    pushed: list[Any] = []
    client = ClientSubscriptions(lambda sid, note: pushed.append(note))
    first = client.subscribe(hub, PROPOSALS, None)
    client.subscribe(hub, UPDATES, None)
    client.release()
    client.unsubscribe(first)
    with pytest.raises(ResourceNotFound):
        client.unsubscribe(first)
    assert hub.subscribers == 1
    client.close()
    assert hub.subscribers == 0 and len(client) == 0
    note = proposal(clock.seconds() + 60)
    hub.publish(note)
    assert pushed == [] and hub.cached() == [note]  # back to caching


def test_subscribe_through_the_api_gets_what_arrived_before() -> None:
    api = Api()
    session, channel_id = api.session_with_peer()
    raw = bytes.fromhex(session[2:])
    earlier = api.node.propose(raw, "bob", {ETH: (1, 2)})  # hub attached at session_open
    pushed: list[tuple[str, Notification]] = []
    client = ClientSubscriptions(lambda sid, note: pushed.append((sid, note)))
    context = CallContext("ws", client, OPERATOR)
    sub = api.call("subscribe", {"sessionId": session, "topic": "proposals"}, context)
    client.release()
    assert pushed == [(sub, earlier)]
    error = api.error("subscribe", {"sessionId": session, "topic": "proposals",
                                    "channelId": channel_id}, context)
    assert error["code"] == -32602 and error["data"]["field"] == "channelId"
    updates = api.call("subscribe", {"sessionId": session, "topic": "updates",
                                     "channelId": channel_id}, context)
    client.release()
    api.call("channel_close", [session, channel_id])
    assert pushed[-1][0] == updates
    closed = pushed[-1][1]
    assert isinstance(closed, UpdateView) and closed.type == "closed"
    assert api.call("unsubscribe", {"subscriptionId": updates}, context) is True
    assert api.error("unsubscribe", [updates], context)["code"] == 201
    # closing the session ends its hub; new notices of a closed session go nowhere
    api.call("session_close", {"sessionId": session})
    assert raw not in api.hubs


# -- what outlasts a restart ------------------------------------------------------------------

def _restart(clock: Clock, shelf: MemoryShelf, **kwargs: Any) -> tuple[SessionHub, list[Any]]:
    """A new hub on the same shelf (the node started again), with one updates subscriber."""
    hub = SessionHub(clock, shelf=shelf, **kwargs)
    got: list[Any] = []
    hub.subscribe(UPDATES, None, got.append)
    return hub, got


def test_lasting_pushes_nobody_took_outlast_a_restart_questions_do_not(clock: Clock) -> None:
    shelf = MemoryShelf()
    hub = SessionHub(clock, shelf=shelf)
    channel = os.urandom(32)
    # Two channels: one channel's end would take the place of its own dispute (below).
    closed, disputed = update(channel, None, "closed"), update(os.urandom(32), None, "disputed")
    hub.publish(proposal(clock.seconds() + 60))
    hub.publish(update(channel, clock.seconds() + 60, "open"))
    hub.publish(disputed)
    hub.publish(closed)
    assert len(shelf.records) == 2  # the proposal and the open update are questions
    currencies = Currencies()
    _, got = _restart(clock, shelf)
    assert [(type(n), n.to_json(currencies)) for n in got] == [
        (KeptPush, disputed.to_json(currencies)), (KeptPush, closed.to_json(currencies))]
    assert shelf.records == {}  # delivered: handed out once, across restarts too
    _, again = _restart(clock, shelf)
    assert again == []


def test_a_channels_end_takes_the_place_of_its_cached_dispute(clock: Clock) -> None:
    """A session reopened after its channel's dispute concluded (the node was down) tells the
    next subscriber how the channel ended, once: the `disputed` cached or kept from before is
    a phase that is over (an audit: it was replayed as news before the `closed`)."""
    shelf = MemoryShelf()
    channel, other = os.urandom(32), os.urandom(32)
    before = SessionHub(clock, shelf=shelf)
    before.publish(update(channel, None, "disputed"))
    before.publish(update(other, None, "disputed"))
    # The node restarts; the watcher's first poll finds the conclusion.
    after = SessionHub(clock, shelf=shelf)
    closed = update(channel, None, "closed")
    after.publish(closed)
    got: list[Any] = []
    after.subscribe(UPDATES, channel, got.append)
    assert [n.to_json(Currencies())["type"] for n in got] == ["closed"]
    # The other channel's dispute still runs: it is still news, and still kept.
    assert len(shelf.records) == 1
    rest: list[Any] = []
    SessionHub(clock, shelf=shelf).subscribe(UPDATES, None, rest.append)
    assert [(n.channel_id, n.to_json(Currencies())["type"]) for n in rest] == [
        (other, "disputed")]
    # Within one run too (a dispute and its end in the first poll, before anyone listened),
    # and for a channel given up because the chain lost its deposits.
    hub = SessionHub(clock)
    hub.publish(update(channel, None, "disputed"))
    hub.publish(update(channel, None, "chainLost"))
    assert [n.type for n in hub.cached() if isinstance(n, UpdateView)] == ["chainLost"]


def test_gone_questions_are_kept_like_closed_channels(clock: Clock) -> None:
    shelf = MemoryShelf()
    hub = SessionHub(clock, shelf=shelf, closed_ttl=100)
    channel = os.urandom(32)
    gone_proposal = ProposalGoneView(os.urandom(32), "bob", PEER, "the node stopped")
    gone_update = update(channel, None, "gone")
    hub.publish(gone_proposal)
    hub.publish(gone_update)
    assert len(shelf.records) == 2
    restarted = SessionHub(clock, shelf=shelf, closed_ttl=100)
    proposals: list[Any] = []
    updates: list[Any] = []
    restarted.subscribe(UPDATES, channel, updates.append)
    restarted.subscribe(PROPOSALS, None, proposals.append)
    currencies = Currencies()
    assert [n.to_json(currencies) for n in proposals] == [gone_proposal.to_json(currencies)]
    assert proposals[0].to_json(currencies)["type"] == "gone"
    assert [n.to_json(currencies) for n in updates] == [gone_update.to_json(currencies)]
    assert shelf.records == {}


def test_kept_pushes_keep_their_channel_filter_and_order_across_restarts(clock: Clock) -> None:
    shelf = MemoryShelf()
    one, two = os.urandom(32), os.urandom(32)
    first = SessionHub(clock, shelf=shelf)
    first.publish(update(one, None, "closed"))
    second = SessionHub(clock, shelf=shelf)  # restarted before anyone listened
    second.publish(update(two, None, "closed"))
    second.publish(update(one, None, "chainLost"))
    third = SessionHub(clock, shelf=shelf)
    mine: list[Any] = []
    third.subscribe(UPDATES, one, mine.append)
    assert [n.to_json(Currencies())["type"] for n in mine] == ["closed", "chainLost"]
    assert all(n.channel_id == one for n in mine)
    rest: list[Any] = []
    third.subscribe(UPDATES, None, rest.append)
    assert [n.channel_id for n in rest] == [two]


def test_kept_pushes_expire_and_damaged_records_are_dropped(
        clock: Clock, logs: list[dict[str, Any]]) -> None:
    shelf = MemoryShelf()
    hub = SessionHub(clock, shelf=shelf, closed_ttl=100)
    hub.publish(update(os.urandom(32), None, "closed"))
    shelf.records[7] = b"not json"
    shelf.records[8] = b'{"topic": "elsewhere", "expires": 1e12, "channelId": null, ' \
                       b'"updateId": null, "push": {}}'
    clock.advance(101)
    _, got = _restart(clock, shelf)
    assert got == [] and shelf.records == {}
    warned = [formatEvent(e) for e in logs if "kept notification" in formatEvent(e)]
    assert warned == ["dropped kept notification 7: not a notification record",
                      "dropped kept notification 8: not a notification record"]
    assert not any("not json" in formatEvent(e) for e in logs)  # contents never quoted


def test_the_bounded_cache_drops_from_the_shelf_too(clock: Clock) -> None:
    shelf = MemoryShelf()
    hub = SessionHub(clock, shelf=shelf, max_cached=2)
    channels = [os.urandom(32) for _ in range(3)]
    for channel in channels:
        hub.publish(update(channel, None, "closed"))
    assert len(shelf.records) == 2
    _, got = _restart(clock, shelf, max_cached=2)
    assert [n.channel_id for n in got] == channels[1:]


class _BrokenShelf(MemoryShelf):
    def keep(self, key: int, record: bytes) -> None:
        raise StoreError("store /x: writing failed: disk full")


def test_a_failing_shelf_still_caches_and_warns(clock: Clock, logs: list[dict[str, Any]]) -> None:
    hub = SessionHub(clock, shelf=_BrokenShelf())
    closed = update(os.urandom(32), None, "closed")
    hub.publish(closed)
    assert hub.cached() == [closed]
    assert any("could not be written" in formatEvent(e) for e in logs)


def test_a_read_only_subscriber_cannot_take_a_question_away_from_the_user(clock: Clock) -> None:
    """A dashboard's read credential sees proposals and closes, but the session's user still
    gets them when she subscribes later, cached or published meanwhile (found by an audit)."""
    hub = SessionHub(clock)
    cached = proposal(clock.seconds() + 60)
    hub.publish(cached)  # nobody listens yet
    dashboard: list[Notification] = []
    hub.subscribe(PROPOSALS, None, dashboard.append, read_only=True)
    assert dashboard == [cached] and hub.cached() == [cached]
    published = proposal(clock.seconds() + 60)
    hub.publish(published)  # only the dashboard listens
    assert dashboard == [cached, published] and hub.cached() == [cached, published]
    user: list[Notification] = []
    hub.subscribe(PROPOSALS, None, user.append)
    assert user == [cached, published] and hub.cached() == []
    later = proposal(clock.seconds() + 60)
    hub.publish(later)  # both listen: the user has it, nothing is kept
    assert user[-1] is later and dashboard[-1] is later and hub.cached() == []
