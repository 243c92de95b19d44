"""What one user's calls may take of the node: chain reads queue in the node, not in the
chain's pool; listings are rendered at a bounded rate."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.errors import FailedPrecondition
from perund.node_api import NodeAPI, _listing
from perund.ratelimit import WorkAllowance
from perund.session.session import LISTING_BURST, LISTING_RATE


def test_users_chain_reads_leave_a_pool_thread_to_the_node() -> None:
    """NodeAPI._read: a user's pile of chain reads (session_balance, say) holds at most all but
    one of the chain pool's threads; the rest wait in the node, not in the pool's queue, where
    the watcher's polls would queue behind them."""
    started: list[Deferred[int]] = []

    def read() -> Deferred[int]:
        d: Deferred[int] = Deferred()
        started.append(d)
        return d

    api = NodeAPI(SimpleNamespace(chain=SimpleNamespace(pool=SimpleNamespace(max=4))))
    answers = [api._read(read) for _ in range(10)]
    assert len(started) == 3
    started[0].callback(7)
    assert answers[0].result == 7 and len(started) == 4
    for d in started[1:]:
        d.callback(1)
    assert len(started) == 7
    one = NodeAPI(SimpleNamespace(chain=SimpleNamespace(pool=SimpleNamespace(max=1))))
    started.clear()
    for _ in range(3):
        one._read(read)
    assert len(started) == 1  # a one-thread pool: one user read at a time


def test_listings_are_bounded_per_session_and_a_large_one_passes_when_the_allowance_is_full(
        ) -> None:
    """`channel_list` and `session_listPeers` run on the reactor: a read-only credential's
    batches of a 10,000-contact listing froze the node for minutes (the isolation review's
    finding). Each session may render LISTING_RATE units a second."""
    clock = Clock()
    session = SimpleNamespace(listings=WorkAllowance(clock, LISTING_RATE, LISTING_BURST))
    _listing(session, "contacts", 10_000)  # type: ignore[arg-type]
    _listing(session, "contacts", 10_000)  # type: ignore[arg-type]
    try:
        _listing(session, "contacts", 10_000)  # type: ignore[arg-type]
    except FailedPrecondition as exc:
        assert exc.code == 204 and exc.data["retryAfter"] == 2.0
        assert "listings of contacts are over their rate" in exc.message
    else:
        raise AssertionError("a third listing in the same instant passed")
    clock.advance(2.0)
    _listing(session, "contacts", 10_000)  # type: ignore[arg-type]
    # Larger than the whole allowance: once it is full again.
    clock.advance(LISTING_BURST / LISTING_RATE)
    _listing(session, "channels", 3 * LISTING_BURST)  # type: ignore[arg-type]
    assert session.listings.available() == 0
