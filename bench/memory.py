"""What a channel costs in memory and on disk: one session with many channels.

Run: `.venv/bin/python bench/memory.py [--channels N] [--payments K]`. Like bench/offchain.py,
this process is alice's channel client and bob's runs in a second process; both keep their
channels in the durable session store. Alice opens --channels channels (default 10,000) to bob,
then makes --payments payments on each. Prints JSON: alice's resident memory per channel (the
growth of her process's RSS over the opening, divided by the channels; the goal is ≤ 20 KB),
and her store's size per channel and per state written, before and after compaction would
apply (live bytes).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from typing import Any

from offchain import ETHER, run_pair  # bench/ is on sys.path when this file is run
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults

from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH
from perund.session.client import ChannelClient

BATCH = 250
"""Channels proposed at once: enough to keep both processes busy, few enough to bound the
messages in flight."""


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


async def measure(client: ChannelClient, request: OpenRequest, channels: int,
                  payments: int) -> dict[str, Any]:
    # A small request: the deposits do not matter here (no chain), the channel count does.
    request = OpenRequest(request.peer, (ETH,), ((ETHER, ETHER),), 3600)
    warm = await client.open_channel(request)  # imports, connection and caches are warm
    await client.send(warm.channel_id, ((ETH, 1),))
    before = settled_rss()
    start = time.perf_counter()
    opened: list[Any] = []
    while len(opened) < channels:
        count = min(BATCH, channels - len(opened))
        opened += await gatherResults([client.open_channel(request) for _ in range(count)])
    opening = time.perf_counter() - start
    after_open = settled_rss()
    start = time.perf_counter()
    for _ in range(payments):
        for first in range(0, len(opened), BATCH):
            await gatherResults([client.send(c.channel_id, ((ETH, 1),))
                                 for c in opened[first:first + BATCH]])
    paying = time.perf_counter() - start
    after_pay = settled_rss()
    store: Any = client.store
    flushed = store.flush()
    if flushed is not None:
        await flushed
    states = channels * (1 + payments)
    return {
        "channels": channels,
        "payments_per_channel": payments,
        "open_channels_per_s": round(channels / opening, 1),
        "payments_per_s": round(channels * payments / paying, 1) if payments else None,
        "rss_bytes_per_channel_opened": round((after_open - before) / channels),
        "rss_bytes_per_channel_after_payments": round((after_pay - before) / channels),
        "rss_total_mb": round(after_pay / 2**20, 1),
        "store_file_bytes_per_channel": round(store.file_bytes / (channels + 1)),
        "store_file_bytes_per_state_written": round(store.file_bytes / (states + 2)),
        "store_live_bytes_per_channel": round(store.live_bytes / (channels + 1)),
        "compactions": getattr(store, "compactions", None),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="perund-bench-memory-") as directory:
        return await run_pair(args, directory, lambda client, request, _: Deferred.fromCoroutine(
            measure(client, request, args.channels, args.payments)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--payments", type=int, default=1, help="payments on each channel")
    args = parser.parse_args()

    def report(results: dict[str, Any]) -> None:
        json.dump(results, sys.stdout, indent=1)
        print()

    task.react(lambda _: Deferred.fromCoroutine(run(args)).addCallback(report))


if __name__ == "__main__":
    main()
