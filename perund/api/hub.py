"""Notification hubs: one per session, between the node's notices and WebSocket clients.

A hub delivers each notification to every subscriber whose topic (and channel, if it named
one) matches. When none matches, or only subscribers of read-only credentials do, the
notification is cached until its expiry (a `closed` update, which has none, for `closed_ttl`
seconds) and handed to the next matching subscriber of a session credential, once; a read-only
subscriber gets a copy and leaves it cached (a dashboard must not take a proposal away from
the user who answers it). Expired notifications are dropped, never delivered; the cache is
bounded (oldest first out) so a peer cannot grow it without limit.

What the cache holds that outlasts a restart (`closed`, `disputed` and `chainLost` updates) is
also kept on the session's `NoticeShelf` (its store), rendered, and read back when the hub of
the session is attached again: a user who was not listening when the node stopped still
learns how their channel ended. A channel's end (`closed`, `chainLost`) takes the place of
its cached `disputed` pushes: the next subscriber learns the outcome, not a phase that is
over (the dispute concluded while the node was down, or before anyone listened). Questions
(proposals, `open` and `final` updates) are not kept: they cannot be answered after a restart;
the session tells of them itself (a `gone` proposal or update, which is kept like a `closed`
one).

`ClientSubscriptions` is one client's side: its subscriptions across hubs, pushes held back
until the reply that created a subscription has been sent (so a client always learns the
subscription ID before the first push carrying it), and clean-up when the client goes.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from perund.api.amounts import Currencies
from perund.api.facade import NodeFacade, NoticeShelf
from perund.api.views import (
    Delivered,
    KeptPush,
    Notification,
    PaymentView,
    ProposalGoneView,
    ProposalView,
    SessionClosedView,
    UpdateView,
    Withdrawn,
)
from perund.channel.types import ChannelID
from perund.errors import FailedPrecondition, PerundError, ResourceNotFound

log = Logger(namespace="perund.api.hub")

PROPOSALS: Final = "proposals"
UPDATES: Final = "updates"
PAYMENTS: Final = "payments"
TOPICS: Final = (PROPOSALS, UPDATES, PAYMENTS)

Deliver = Callable[[Delivered], None]

Pushed = ProposalView | ProposalGoneView | UpdateView | PaymentView | KeptPush
"""What a hub caches and pushes."""

QUESTIONS: Final = ("open", "final")
"""Update types that await an answer: they do not outlast a restart."""

SETTLED: Final = ("closed", "chainLost")
"""Update types that end a channel: what was cached of its dispute is no news any more."""
SUPERSEDED: Final = ("disputed",)
"""Cached update types that a channel's end makes stale."""


def _new_id() -> str:
    return "0x" + os.urandom(16).hex()


def topic_of(notification: Pushed) -> str:
    """The topic a notification is published on."""
    if isinstance(notification, KeptPush):
        return notification.topic
    if isinstance(notification, PaymentView):
        return PAYMENTS
    return PROPOSALS if isinstance(notification, ProposalView | ProposalGoneView) else UPDATES


def _channel_of(notification: Pushed) -> bytes | None:
    if isinstance(notification, ProposalView | ProposalGoneView):
        return None
    return notification.channel_id


def _update_of(notification: Pushed) -> bytes | None:
    if isinstance(notification, ProposalView | PaymentView):
        return None
    if isinstance(notification, ProposalGoneView):
        return notification.proposal_id
    return notification.update_id


def _update_type(notification: Pushed) -> str | None:
    """The `type` of an update push (a kept one's as it was rendered); None for the others."""
    if isinstance(notification, UpdateView):
        return notification.type
    if isinstance(notification, KeptPush) and notification.topic == UPDATES:
        kind = notification.push.get("type")
        return kind if isinstance(kind, str) else None
    return None


def _lasting(notification: Pushed) -> bool:
    """Whether a cached notification is worth keeping across a restart."""
    return isinstance(notification, ProposalGoneView) or (
        isinstance(notification, UpdateView) and notification.type not in QUESTIONS)


@dataclass(eq=False)
class Subscription:
    """One subscriber of a hub: a topic, optionally one channel, and where to deliver."""

    id: str
    topic: str
    channel_id: bytes | None
    deliver: Deliver
    read_only: bool = False
    """Made with a read-only credential: those take at most half of a session's."""

    def matches(self, notification: Pushed) -> bool:
        """Whether this subscriber wants `notification`."""
        if topic_of(notification) != self.topic:
            return False
        if self.channel_id is None:
            return True
        return _channel_of(notification) == self.channel_id


@dataclass
class _Cached:
    notification: Pushed
    expires: float
    shelved: bool = False


class SessionHub:
    """Routes one session's notifications to its subscribers, caching what nobody takes.

    With a `shelf`, the lasting part of the cache is kept there too (rendered with
    `currencies`), and what the shelf holds is loaded first."""

    def __init__(self, clock: IReactorTime, *, closed_ttl: float = 3600.0,
                 max_cached: int = 512, max_subscribers: int = 256,
                 shelf: NoticeShelf | None = None,
                 currencies: Currencies | None = None) -> None:
        # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
        self._clock: Any = clock
        self.closed_ttl = closed_ttl
        self.max_cached = max_cached
        self.max_subscribers = max_subscribers
        self._subscribers: dict[str, Subscription] = {}
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._next = 0
        self.closed = False
        self._shelf = shelf
        self._currencies = currencies or Currencies()
        if shelf is not None:
            self._load(shelf)

    @property
    def subscribers(self) -> int:
        """How many subscriptions are active."""
        return len(self._subscribers)

    def cached(self) -> list[Pushed]:
        """The notifications waiting for a subscriber (expired ones dropped first)."""
        self._prune()
        return [entry.notification for entry in self._cache.values()]

    def publish(self, notification: Notification) -> None:
        """Deliver `notification` to its subscribers, or cache it until it expires."""
        if self.closed:
            return
        self._prune()
        if isinstance(notification, Withdrawn):
            self._withdraw(notification)
            return
        if isinstance(notification, UpdateView) and notification.type in SETTLED:
            self._supersede(notification.channel_id)
        now = self._clock.seconds()
        expires = notification.expiry if notification.expiry is not None \
            else now + self.closed_ttl
        if expires <= now:
            return
        targets = [s for s in self._subscribers.values() if s.matches(notification)]
        for subscription in targets:
            self._deliver(subscription, notification)
        if any(not s.read_only for s in targets):
            return
        # Nobody who may act on it has it yet (a read-only credential only watches): kept for
        # the next one. News of every incoming payment would crowd proposals out of the
        # bounded cache; whoever subscribes later reads the channel's state (or the history).
        if not ((isinstance(notification, UpdateView) and notification.type == "updated")
                or isinstance(notification, PaymentView)):
            self._store(notification, expires)

    def wants_updated(self, channel_id: bytes) -> bool:
        """Whether an `updated` notification of `channel_id` would reach anyone: it is never
        cached, so without a subscriber to the channel's updates it need not be built."""
        return not self.closed and any(
            s.topic == UPDATES and (s.channel_id is None or s.channel_id == channel_id)
            for s in self._subscribers.values())

    def wants_payments(self, channel_id: bytes) -> bool:
        """Whether a `payments` notification of `channel_id` would reach anyone (they are
        never cached: `payment_list` has them)."""
        return not self.closed and any(
            s.topic == PAYMENTS and (s.channel_id is None or s.channel_id == channel_id)
            for s in self._subscribers.values())

    def subscribe(self, topic: str, channel_id: bytes | None, deliver: Deliver,
                  read_only: bool = False) -> Subscription:
        """Add a subscriber and hand it, in order, the cached notifications it matches.
        Read-only ones (`read_only`) take at most half of the session's: a dashboard's
        credential must not leave the user without the pushes that ask for answers."""
        if topic not in TOPICS:
            raise ValueError(f"unknown topic {topic!r}")
        if len(self._subscribers) >= self.max_subscribers:
            raise FailedPrecondition(
                f"this session has {self.max_subscribers} subscriptions already "
                "(limits.session_subscriptions): unsubscribe first", limit=self.max_subscribers)
        if read_only:
            share = self.max_subscribers // 2
            if sum(s.read_only for s in self._subscribers.values()) >= share:
                raise FailedPrecondition(
                    f"read-only credentials of this session have {share} subscriptions "
                    "already (half of limits.session_subscriptions): unsubscribe first",
                    limit=share)
        subscription = Subscription(_new_id(), topic, channel_id, deliver, read_only)
        self._subscribers[subscription.id] = subscription
        self._prune()
        for key, entry in list(self._cache.items()):
            if subscription.matches(entry.notification):
                if not read_only:
                    # Taken by one who may act on it; a read-only one gets a copy, so that a
                    # dashboard cannot take a question away from the session's user.
                    self._remove(key)
                self._deliver(subscription, entry.notification)
        return subscription

    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove a subscriber; whether it was there."""
        return self._subscribers.pop(subscription_id, None) is not None

    def close(self, session_id: bytes | None = None) -> None:
        """The session is gone: forget every subscriber and cached notification (what the
        shelf keeps stays there, for the session's next hub). With `session_id`, each
        subscriber is told first (`sessionClosed`): a client whose session another client
        closed learns why its pushes end, instead of taking the silence for a quiet channel or
        its refused calls for a node that is down (an audit)."""
        self.closed = True
        if session_id is not None:
            farewell = SessionClosedView(session_id)
            for subscription in list(self._subscribers.values()):
                self._deliver(subscription, farewell)
        self._subscribers.clear()
        self._cache.clear()

    def _store(self, notification: ProposalView | ProposalGoneView | UpdateView | PaymentView,
               expires: float) -> None:
        if len(self._cache) >= self.max_cached:
            oldest = next(iter(self._cache))
            dropped = self._cache[oldest]
            self._remove(oldest)
            log.warn("notification cache full ({size}): dropped the oldest {topic} "
                     "notification", size=self.max_cached, topic=topic_of(dropped.notification))
        key = self._next
        self._next += 1
        entry = self._cache[key] = _Cached(notification, expires)
        if self._shelf is not None and _lasting(notification):
            channel_id, update_id = _channel_of(notification), _update_of(notification)
            record = {"topic": topic_of(notification), "expires": expires,
                      "channelId": None if channel_id is None else channel_id.hex(),
                      "updateId": None if update_id is None else update_id.hex(),
                      "push": notification.to_json(self._currencies)}
            entry.shelved = self._on_shelf(self._shelf.keep, key,
                                           json.dumps(record).encode())

    def _remove(self, key: int) -> None:
        entry = self._cache.pop(key)
        if entry.shelved and self._shelf is not None:
            self._on_shelf(self._shelf.drop, key)

    def _on_shelf(self, action: Callable[..., None], *args: Any) -> bool:
        # A store that failed was reported where it failed; the pushes still go out now.
        try:
            action(*args)
        except PerundError as e:
            log.warn("the notification shelf could not be written: {error}", error=e)
            return False
        return True

    def _load(self, shelf: NoticeShelf) -> None:
        now = self._clock.seconds()
        kept = shelf.kept()
        for key in sorted(kept):
            entry = _read_kept(kept[key])
            if entry is None or entry.expires <= now:
                if entry is None:
                    log.warn("dropped kept notification {key}: not a notification record",
                             key=key)
                self._on_shelf(shelf.drop, key)
                continue
            self._cache[key] = entry
        self._next = max(kept, default=-1) + 1

    def _withdraw(self, withdrawn: Withdrawn) -> None:
        for key, entry in list(self._cache.items()):
            note = entry.notification
            if isinstance(note, UpdateView) and note.update_id == withdrawn.update_id:
                self._remove(key)

    def _supersede(self, channel_id: ChannelID) -> None:
        """The channel is settled: a cached `disputed` push of it is a phase that is over, and
        whoever subscribes next gets the outcome instead (a session reopened after its
        channel's dispute concluded replayed a stale `disputed` before the `closed`; an
        audit)."""
        for key, entry in list(self._cache.items()):
            note = entry.notification
            if _channel_of(note) == channel_id and _update_type(note) in SUPERSEDED:
                self._remove(key)

    def _prune(self) -> None:
        now = self._clock.seconds()
        for key, entry in list(self._cache.items()):
            if entry.expires <= now:
                self._remove(key)

    def _deliver(self, subscription: Subscription, notification: Delivered) -> None:
        try:
            subscription.deliver(notification)
        except Exception:
            log.failure("delivering a notification to subscription {subscription} failed",
                        subscription=subscription.id)


def _read_kept(raw: bytes) -> _Cached | None:
    """A kept record as a cache entry, or None if it is not one (a record written by a later
    version, or damaged)."""
    try:
        record = json.loads(raw)
        topic, expires, push = record["topic"], record["expires"], record["push"]
        channel_id, update_id = record["channelId"], record["updateId"]
        if topic not in TOPICS or not isinstance(push, dict) \
                or not isinstance(expires, (int, float)):
            return None
        notification = KeptPush(topic, None if channel_id is None
                                else ChannelID(bytes.fromhex(channel_id)),
                                None if update_id is None else bytes.fromhex(update_id), push)
    except (ValueError, KeyError, TypeError):
        return None
    return _Cached(notification, float(expires), shelved=True)


class Hubs:
    """The hubs of all sessions, each fed by `facade.subscribe_notices` and keeping what
    outlasts a restart on `facade.notice_shelf`."""

    def __init__(self, facade: NodeFacade, clock: IReactorTime, *, closed_ttl: float = 3600.0,
                 max_cached: int = 512, max_subscribers: int = 256,
                 currencies: Currencies | None = None) -> None:
        self._facade = facade
        self._currencies = currencies
        self._clock = clock
        self.clock = clock
        """The API's clock (for the methods' own rate limits)."""
        self._closed_ttl = closed_ttl
        self._max_cached = max_cached
        self._max_subscribers = max_subscribers
        self._hubs: dict[bytes, tuple[SessionHub, Callable[[], None]]] = {}

    def attach(self, session_id: bytes) -> SessionHub:
        """The hub of `session_id`, subscribing to the session's notices if not yet done
        (ResourceNotFound from the facade for an unknown session)."""
        known = self._hubs.get(session_id)
        if known is not None:
            return known[0]
        hub = SessionHub(self._clock, closed_ttl=self._closed_ttl, max_cached=self._max_cached,
                         max_subscribers=self._max_subscribers,
                         shelf=self._facade.notice_shelf(session_id),
                         currencies=self._currencies)
        stop = self._facade.subscribe_notices(session_id, hub.publish, hub.wants_updated,
                                              hub.wants_payments)
        self._hubs[session_id] = (hub, stop)
        return hub

    def detach(self, session_id: bytes) -> None:
        """The session closed: stop listening and drop its hub and subscriptions."""
        known = self._hubs.pop(session_id, None)
        if known is not None:
            hub, stop = known
            hub.close(session_id)
            stop()

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._hubs


@dataclass
class _Outlet:
    hub: SessionHub
    held: list[Delivered] | None = field(default_factory=list)
    """Pushes waiting for the subscribe reply; None once released."""


class ClientSubscriptions:
    """One client's subscriptions (a WebSocket connection's).

    `push(subscription_id, notification)` sends a notification to the client. New
    subscriptions hold their pushes until `release` (called after the reply that created
    them went out).
    """

    def __init__(self, push: Callable[[str, Delivered], None],
                 max_subscriptions: int = 64) -> None:
        self._push = push
        self.max_subscriptions = max_subscriptions
        self._outlets: dict[str, _Outlet] = {}

    def subscribe(self, hub: SessionHub, topic: str, channel_id: bytes | None,
                  read_only: bool = False) -> str:
        """Subscribe to `hub`; the subscription ID. FailedPrecondition past the connection's
        or the session's number of subscriptions (`read_only`: see `SessionHub.subscribe`)."""
        # Subscriptions to a closed session ended with it (they were told): they take no
        # room from the connection's new ones.
        self._outlets = {key: outlet for key, outlet in self._outlets.items()
                         if not outlet.hub.closed}
        if len(self._outlets) >= self.max_subscriptions:
            raise FailedPrecondition(
                f"this connection has {self.max_subscriptions} subscriptions already "
                "(limits.ws_subscriptions): unsubscribe first", limit=self.max_subscriptions)
        outlet: _Outlet | None = None
        held: list[Delivered] = []

        def deliver(notification: Delivered) -> None:
            if outlet is None or outlet.held is not None:
                held.append(notification)
            else:
                self._push(subscription.id, notification)

        subscription = hub.subscribe(topic, channel_id, deliver, read_only)
        outlet = _Outlet(hub, held)
        self._outlets[subscription.id] = outlet
        return subscription.id

    def release(self) -> None:
        """Send what new subscriptions held back; later pushes go out at once."""
        for subscription_id, outlet in list(self._outlets.items()):
            held, outlet.held = outlet.held, None
            for notification in held or ():
                if subscription_id in self._outlets:
                    self._push(subscription_id, notification)

    def unsubscribe(self, subscription_id: str) -> None:
        """End one of this client's subscriptions; ResourceNotFound if it has no such one."""
        outlet = self._outlets.pop(subscription_id, None)
        if outlet is None:
            raise ResourceNotFound("no such subscription", type="subscription",
                                   id=subscription_id)
        outlet.hub.unsubscribe(subscription_id)

    def close(self) -> None:
        """The client went away: end all its subscriptions."""
        for subscription_id, outlet in self._outlets.items():
            outlet.hub.unsubscribe(subscription_id)
        self._outlets.clear()

    def __len__(self) -> int:
        return len(self._outlets)
