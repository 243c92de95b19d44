"""Notification hubs: one per session, between the node's notices and WebSocket clients.

A hub delivers each notification to every subscriber whose topic (and channel, if it named
one) matches. When none matches, the notification is cached until its expiry (a `closed`
update, which has none, for `closed_ttl` seconds) and handed to the next matching subscriber,
once. Expired notifications are dropped, never delivered; the cache is bounded (oldest first
out) so a peer cannot grow it without limit.

`ClientSubscriptions` is one client's side: its subscriptions across hubs, pushes held back
until the reply that created a subscription has been sent (so a client always learns the
subscription ID before the first push carrying it), and clean-up when the client goes.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from perund.api.views import Notification, ProposalView, UpdateView, Withdrawn
from perund.errors import FailedPrecondition, ResourceNotFound

if TYPE_CHECKING:
    from perund.api.facade import NodeFacade

log = Logger(namespace="perund.api.hub")

PROPOSALS: Final = "proposals"
UPDATES: Final = "updates"
TOPICS: Final = (PROPOSALS, UPDATES)

Deliver = Callable[[Notification], None]


def _new_id() -> str:
    return "0x" + os.urandom(16).hex()


def topic_of(notification: ProposalView | UpdateView) -> str:
    """The topic a notification is published on."""
    return PROPOSALS if isinstance(notification, ProposalView) else UPDATES


@dataclass(eq=False)
class Subscription:
    """One subscriber of a hub: a topic, optionally one channel, and where to deliver."""

    id: str
    topic: str
    channel_id: bytes | None
    deliver: Deliver

    def matches(self, notification: ProposalView | UpdateView) -> bool:
        """Whether this subscriber wants `notification`."""
        if topic_of(notification) != self.topic:
            return False
        if self.channel_id is None:
            return True
        return isinstance(notification, UpdateView) and notification.channel_id == self.channel_id


@dataclass
class _Cached:
    notification: ProposalView | UpdateView
    expires: float


class SessionHub:
    """Routes one session's notifications to its subscribers, caching what nobody takes."""

    def __init__(self, clock: IReactorTime, *, closed_ttl: float = 3600.0,
                 max_cached: int = 512, max_subscribers: int = 256) -> None:
        # Any: zope interfaces do not type-check as protocols without the mypy-zope plugin.
        self._clock: Any = clock
        self.closed_ttl = closed_ttl
        self.max_cached = max_cached
        self.max_subscribers = max_subscribers
        self._subscribers: dict[str, Subscription] = {}
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._next = 0
        self.closed = False

    @property
    def subscribers(self) -> int:
        """How many subscriptions are active."""
        return len(self._subscribers)

    def cached(self) -> list[ProposalView | UpdateView]:
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
        now = self._clock.seconds()
        expires = notification.expiry if notification.expiry is not None \
            else now + self.closed_ttl
        if expires <= now:
            return
        targets = [s for s in self._subscribers.values() if s.matches(notification)]
        if not targets:
            # News of every incoming payment would crowd proposals out of the bounded cache;
            # whoever subscribes later reads the channel's state instead.
            if not (isinstance(notification, UpdateView) and notification.type == "updated"):
                self._store(notification, expires)
            return
        for subscription in targets:
            self._deliver(subscription, notification)

    def wants_updated(self, channel_id: bytes) -> bool:
        """Whether an `updated` notification of `channel_id` would reach anyone: it is never
        cached, so without a subscriber to the channel's updates it need not be built."""
        return not self.closed and any(
            s.topic == UPDATES and (s.channel_id is None or s.channel_id == channel_id)
            for s in self._subscribers.values())

    def subscribe(self, topic: str, channel_id: bytes | None, deliver: Deliver) -> Subscription:
        """Add a subscriber and hand it, in order, the cached notifications it matches."""
        if topic not in TOPICS:
            raise ValueError(f"unknown topic {topic!r}")
        if len(self._subscribers) >= self.max_subscribers:
            raise FailedPrecondition(
                f"this session has {self.max_subscribers} subscriptions already "
                "(limits.session_subscriptions): unsubscribe first", limit=self.max_subscribers)
        subscription = Subscription(_new_id(), topic, channel_id, deliver)
        self._subscribers[subscription.id] = subscription
        self._prune()
        for key, entry in list(self._cache.items()):
            if subscription.matches(entry.notification):
                del self._cache[key]
                self._deliver(subscription, entry.notification)
        return subscription

    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove a subscriber; whether it was there."""
        return self._subscribers.pop(subscription_id, None) is not None

    def close(self) -> None:
        """The session is gone: forget every subscriber and cached notification."""
        self.closed = True
        self._subscribers.clear()
        self._cache.clear()

    def _store(self, notification: ProposalView | UpdateView, expires: float) -> None:
        if len(self._cache) >= self.max_cached:
            _, dropped = self._cache.popitem(last=False)
            log.warn("notification cache full ({size}): dropped the oldest {topic} "
                     "notification", size=self.max_cached, topic=topic_of(dropped.notification))
        self._cache[self._next] = _Cached(notification, expires)
        self._next += 1

    def _withdraw(self, withdrawn: Withdrawn) -> None:
        for key, entry in list(self._cache.items()):
            note = entry.notification
            if isinstance(note, UpdateView) and note.update_id == withdrawn.update_id:
                del self._cache[key]

    def _prune(self) -> None:
        now = self._clock.seconds()
        for key, entry in list(self._cache.items()):
            if entry.expires <= now:
                del self._cache[key]

    def _deliver(self, subscription: Subscription, notification: Notification) -> None:
        try:
            subscription.deliver(notification)
        except Exception:
            log.failure("delivering a notification to subscription {subscription} failed",
                        subscription=subscription.id)


class Hubs:
    """The hubs of all sessions, each fed by `facade.subscribe_notices`."""

    def __init__(self, facade: NodeFacade, clock: IReactorTime, *, closed_ttl: float = 3600.0,
                 max_cached: int = 512, max_subscribers: int = 256) -> None:
        self._facade = facade
        self._clock = clock
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
                         max_subscribers=self._max_subscribers)
        stop = self._facade.subscribe_notices(session_id, hub.publish, hub.wants_updated)
        self._hubs[session_id] = (hub, stop)
        return hub

    def detach(self, session_id: bytes) -> None:
        """The session closed: stop listening and drop its hub and subscriptions."""
        known = self._hubs.pop(session_id, None)
        if known is not None:
            hub, stop = known
            hub.close()
            stop()

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._hubs


@dataclass
class _Outlet:
    hub: SessionHub
    held: list[Notification] | None = field(default_factory=list)
    """Pushes waiting for the subscribe reply; None once released."""


class ClientSubscriptions:
    """One client's subscriptions (a WebSocket connection's).

    `push(subscription_id, notification)` sends a notification to the client. New
    subscriptions hold their pushes until `release` (called after the reply that created
    them went out).
    """

    def __init__(self, push: Callable[[str, Notification], None],
                 max_subscriptions: int = 64) -> None:
        self._push = push
        self.max_subscriptions = max_subscriptions
        self._outlets: dict[str, _Outlet] = {}

    def subscribe(self, hub: SessionHub, topic: str, channel_id: bytes | None) -> str:
        """Subscribe to `hub`; the subscription ID. FailedPrecondition past the connection's
        or the session's number of subscriptions."""
        if len(self._outlets) >= self.max_subscriptions:
            raise FailedPrecondition(
                f"this connection has {self.max_subscriptions} subscriptions already "
                "(limits.ws_subscriptions): unsubscribe first", limit=self.max_subscriptions)
        outlet: _Outlet | None = None
        held: list[Notification] = []

        def deliver(notification: Notification) -> None:
            if outlet is None or outlet.held is not None:
                held.append(notification)
            else:
                self._push(subscription.id, notification)

        subscription = hub.subscribe(topic, channel_id, deliver)
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
