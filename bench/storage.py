"""Cost of the session store on this machine: durable writes, group commit, open, compaction.

Run: `.venv/bin/python bench/storage.py [--dir D] [--rounds N]`. Prints one JSON object:

    {"fsync_us": raw write+fsync of one record-sized append,
     "put_flush_us": {"p50", "p99", "mean"}: one channel put, flush, commit (one fsync), on a
                     task.Clock (no reactor overhead),
     "put_flush_reactor_us": the same sequentially on the real reactor (each flush's Deferred
                     starts the next put: what a sequential payment stream sees),
     "group_commit": {"channels": 100, "batch_us", "puts_per_s"}: 100 channels put in one turn,
                     one fsync,
     "thread_handoff_us": a deferToThread round trip on the real reactor (what moving the
                     fsync to a thread would add per commit),
     "encode_us", "decode_us": one channel record,
     "open_ms": {"channels_100", "file_1mib"}, "compact_ms": 100 live channels}

The directory defaults to a fresh one under the current directory (not /tmp, which may be a
RAM disk where fsync costs nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_hash.auto import keccak
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.storage.codec import decode_channel, encode_channel
from perund.storage.store import SessionStore
from tests.channel.factories import make_pair

reactor: Any = global_reactor


def at_version(channel: Channel, version: int, n: int = 0) -> Channel:
    """`channel` at `version`, under channel ID number `n` (signatures do not matter here)."""
    assert channel.current is not None
    cid = ChannelID(keccak(n.to_bytes(8, "big"))) if n else channel.channel_id
    state = replace(channel.current.state, channel_id=cid, version=version)
    return replace(channel, channel_id=cid, current=replace(channel.current, state=state))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(ordered[len(ordered) // 2], 1),
        "p99": round(ordered[int(len(ordered) * 0.99)], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def raw_fsync(directory: Path, rounds: int) -> float:
    fd = os.open(directory / "raw", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    start = time.perf_counter()
    for _ in range(rounds):
        os.write(fd, b"\x00" * 400)
        os.fsync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return elapsed / rounds * 1e6


def put_flush_clock(directory: Path, channel: Channel, rounds: int) -> list[float]:
    clock = Clock()
    store = SessionStore(directory / "clock", clock)
    samples = []
    for version in range(1, rounds + 1):
        value = at_version(channel, version)
        start = time.perf_counter()
        store.put(value)
        store.flush()
        clock.advance(0)
        samples.append((time.perf_counter() - start) * 1e6)
    store.close()
    return samples


async def put_flush_reactor(directory: Path, channel: Channel, rounds: int) -> list[float]:
    store = SessionStore(directory / "reactor", reactor)
    samples = []
    for version in range(1, rounds + 1):
        start = time.perf_counter()
        store.put(at_version(channel, version))
        d = store.flush()
        assert d is not None
        await d
        samples.append((time.perf_counter() - start) * 1e6)
    store.close()
    return samples


def group_commit(directory: Path, channel: Channel, rounds: int) -> float:
    clock = Clock()
    store = SessionStore(directory / "group", clock)
    batch = [at_version(channel, 1, n) for n in range(1, 101)]
    start = time.perf_counter()
    for version in range(rounds):
        for value in batch:
            store.put(replace(value, confirm_updates=bool(version % 2)))
        store.flush()
        clock.advance(0)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / rounds * 1e6


async def thread_handoff(rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        await deferToThread(lambda: None)
    return (time.perf_counter() - start) / rounds * 1e6


def codec_costs(channel: Channel, rounds: int) -> tuple[float, float]:
    encoded = encode_channel(channel)
    start = time.perf_counter()
    for _ in range(rounds):
        encode_channel(channel)
    middle = time.perf_counter()
    for _ in range(rounds):
        decode_channel(encoded)
    end = time.perf_counter()
    return (middle - start) / rounds * 1e6, (end - middle) / rounds * 1e6


def open_and_compact(directory: Path, channel: Channel) -> dict[str, float]:
    clock = Clock()
    path = directory / "open"
    store = SessionStore(path, clock)
    for n in range(1, 101):
        store.put(at_version(channel, 1, n))
    clock.advance(0)
    store.close()
    start = time.perf_counter()
    SessionStore(path, clock).close()
    open_100 = time.perf_counter() - start

    big = directory / "big"
    store = SessionStore(big, clock, compact_min_bytes=1 << 30)
    version = 0
    while store.file_bytes < 1 << 20:
        version += 1
        for n in range(1, 101):
            store.put(at_version(channel, version, n))
        clock.advance(0)
    store.close()
    start = time.perf_counter()
    store = SessionStore(big, clock, compact_min_bytes=1 << 30)
    open_big = time.perf_counter() - start
    start = time.perf_counter()
    store._compact()  # the same call a commit makes once the file is over the threshold
    compact = time.perf_counter() - start
    store.close()
    return {"open_100": open_100 * 1e3, "open_1mib": open_big * 1e3, "compact": compact * 1e3}


async def main(directory: Path, rounds: int) -> dict[str, Any]:
    alice, _ = make_pair()
    reactor_samples = await put_flush_reactor(directory, alice, rounds)
    handoff = await thread_handoff(rounds)
    clock_samples = put_flush_clock(directory, alice, rounds)
    batch_us = group_commit(directory, alice, max(rounds // 10, 10))
    encode_us, decode_us = codec_costs(alice, 20_000)
    other = open_and_compact(directory, alice)
    return {
        "fsync_us": round(raw_fsync(directory, rounds), 1),
        "put_flush_us": percentiles(clock_samples),
        "put_flush_reactor_us": percentiles(reactor_samples),
        "group_commit": {
            "channels": 100,
            "batch_us": round(batch_us, 1),
            "puts_per_s": round(100 / batch_us * 1e6),
        },
        "thread_handoff_us": round(handoff, 1),
        "encode_us": round(encode_us, 2),
        "decode_us": round(decode_us, 2),
        "record_bytes": len(encode_channel(alice)),
        "open_ms": {"channels_100": round(other["open_100"], 2),
                    "file_1mib": round(other["open_1mib"], 2)},
        "compact_ms": round(other["compact"], 2),
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="where to put the stores (default: ./)")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix=".bench-storage-", dir=args.dir or "."))
    result: dict[str, Any] = {}

    def go() -> Deferred[None]:
        async def body() -> None:
            result.update(await main(directory, args.rounds))

        d = ensureDeferred(body())
        d.addErrback(lambda f: (result.update(error=f.getTraceback()), None)[1])
        d.addBoth(lambda _: reactor.stop())
        return d

    reactor.callWhenRunning(go)
    reactor.run()
    shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result))
    if "error" in result:
        sys.exit(1)


if __name__ == "__main__":
    run()
