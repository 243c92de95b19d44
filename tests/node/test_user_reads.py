"""Chain reads that users' calls ask for queue in the node, not in the chain's pool."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred

from perund.node_api import NodeAPI


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
