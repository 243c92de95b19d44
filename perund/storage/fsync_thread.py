"""The thread the stores' fsyncs run on (`SessionStore(sync_elsewhere=...)`), so that the
reactor goes on with other channels' messages while the disk flushes (docs/storage.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from perund.storage.commit import SyncRunner

POOL_NAME: Final = "perund-fsync"

_pools: dict[int, ThreadPool] = {}


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


class _DaemonPool(ThreadPool):
    """A pool whose thread never holds the interpreter open: a process that exits without
    shutting its reactor down loses only fsyncs nobody has been told are done."""

    threadFactory = staticmethod(_daemon_thread)  # type: ignore[assignment]


def fsync_thread(reactor: Any) -> SyncRunner:
    """A runner on one thread shared by every store of `reactor`'s process, started with the
    first fsync and stopped when the reactor shuts down. One thread is enough: a store has one
    fsync running at a time, and fsyncs of one disk do not go faster side by side."""

    def run(work: Callable[[], float]) -> Deferred[float]:
        pool = _pools.get(id(reactor))
        if pool is None:
            pool = _pools[id(reactor)] = _DaemonPool(minthreads=1, maxthreads=1,
                                                     name=POOL_NAME)
            pool.start()
            reactor.addSystemEventTrigger("after", "shutdown", _stop, reactor)
        return deferToThreadPool(reactor, pool, work)

    return run


def _stop(reactor: Any) -> None:
    pool = _pools.pop(id(reactor), None)
    if pool is not None:
        pool.stop()
