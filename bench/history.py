"""The payment history at scale: listing from a million stored payments, and what recording
costs the durable payment path.

Run: `.venv/bin/python bench/history.py [--payments N] [--seconds S] [--rounds R]`.

1. Listing: a session store whose history holds --payments records (default 1,000,000) over
   100 channels, archived the way compaction archives them (the data file keeps the recent
   ones). Times opening the store, the latest 100 (the goal: at most 50 ms), the latest 100 of
   one channel, a page deep in the history by cursor, and `payment_get` of an old payment (the
   first one builds the archive's sparse index).
2. Recording: sequential durable payments between two processes (bench/offchain.py's pair),
   with the history and without it, in alternating rounds so that drift hits both alike. The
   goal: recording costs at most 5 % of the durable payments/s.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from offchain import Payee, measure, run_pair  # bench/ is on sys.path when this file is run
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH, Address, ChannelID
from perund.session.client import ChannelClient
from perund.storage.archive import PaymentArchive
from perund.storage.history import PaymentQuery
from perund.storage.payments import PaymentRecord
from perund.storage.store import SessionStore

CHANNELS = 100
BATCH = 50_000


def fill(directory: Path, count: int) -> None:
    """An archive of `count` payments over CHANNELS channels, one a second."""
    archive = PaymentArchive(str(directory))
    channels = [ChannelID(os.urandom(32)) for _ in range(CHANNELS)]
    peers = [Address(os.urandom(20)) for _ in range(CHANNELS)]
    start = 1_700_000_000.0
    for first in range(0, count, BATCH):
        archive.append(PaymentRecord(
            i, channels[i % CHANNELS], peers[i % CHANNELS],
            "sent" if i % 3 else "received", ETH, 10**15 + i, i // CHANNELS + 1, start + i,
            i % 7 == 0) for i in range(first, min(first + BATCH, count)))


def timed(call: Any, repeat: int = 20) -> tuple[float, Any]:
    """The median milliseconds of `call()` over `repeat` runs, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3), result


def listing(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="perund-history-") as directory:
        store_dir = Path(directory) / "store"
        store_dir.mkdir()
        start = time.perf_counter()
        fill(store_dir, count)
        filled = time.perf_counter() - start
        start = time.perf_counter()
        store = SessionStore(store_dir, Clock())
        opened_ms = (time.perf_counter() - start) * 1000
        history = store.history
        latest_ms, page = timed(lambda: history.page(PaymentQuery(), 100))
        assert len(page.payments) == 100 and page.payments[0].payment_id == count - 1
        one = page.payments[0].channel_id
        channel_ms, of_channel = timed(lambda: history.page(PaymentQuery(channel_id=one), 100))
        assert len(of_channel.payments) == 100
        first_get = time.perf_counter()
        old = history.get(count // 3)  # the first use builds the sparse index (and its file)
        first_get_ms = (time.perf_counter() - first_get) * 1000
        get_ms, _ = timed(lambda: history.get(count // 3 + 1))
        assert old is not None and old.payment_id == count // 3
        cursor = f"{count // 2}"
        deep_ms, deep = timed(lambda: history.page(PaymentQuery(), 100, cursor))
        assert deep.payments[0].payment_id == count // 2 - 1
        store.close()
        return {
            "stored_payments": count,
            "archive_bytes_per_payment": round(os.path.getsize(store_dir / "payments") / count,
                                               1),
            "fill_seconds": round(filled, 1),
            "open_store_ms": round(opened_ms, 3),
            "latest_100_ms": latest_ms,
            "latest_100_of_one_channel_ms": channel_ms,
            "page_of_100_at_half_depth_by_cursor_ms": deep_ms,
            "get_old_payment_first_ms_builds_index": round(first_get_ms, 3),
            "get_old_payment_ms": get_ms,
        }


async def recording(args: argparse.Namespace) -> dict[str, Any]:
    rates: dict[bool, list[float]] = {True: [], False: []}

    async def sequential(client: ChannelClient, request: OpenRequest,
                         payee: Payee) -> dict[str, Any]:
        channel = (await client.open_channel(request)).channel_id
        await measure(client, [channel], min(1.0, args.seconds / 5))
        result: dict[str, Any] = await measure(client, [channel], args.seconds)
        return result

    for _ in range(args.rounds):
        for history in (True, False):
            args.no_history = not history
            with tempfile.TemporaryDirectory(prefix="perund-history-") as directory:
                result = await run_pair(args, directory, sequential)
            rates[history].append(result["payments_per_s"])
    with_history, without = statistics.median(rates[True]), statistics.median(rates[False])
    return {
        "durable_sequential_with_history_per_s": with_history,
        "durable_sequential_without_history_per_s": without,
        "rounds": {"with": rates[True], "without": rates[False]},
        "recording_cost_percent": round(100 * (without - with_history) / without, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=1_000_000,
                        help="payments in the listed history")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of each recording measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the with/without comparison")
    args = parser.parse_args()
    results: dict[str, Any] = {"listing": listing(args.payments)}

    async def run() -> None:
        results["recording"] = await recording(args)
        print(json.dumps(results))

    task.react(lambda _: Deferred.fromCoroutine(run()))


if __name__ == "__main__":
    main()
