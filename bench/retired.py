"""What a closed channel costs a session before and after it retires (docs/storage.md,
"Retired channels").

Run: `.venv/bin/python bench/retired.py [--channels N]`. Writes a store holding N closed
one-asset channels (default 10,000; each record as a real final state's, with signatures of the
right length), then opens it in a fresh process twice: with the channels closed and live (as
every session held them before retirement), and after all of them retired (the data file
then compacted, as a running node's is from time to time). Prints JSON: for
each, the seconds the open took and the process's resident memory growth over it, in all and
per channel; the sizes of the data file and of the retired channels' file and its index
afterwards; and the seconds the first open of a store of the code before took to move its N
retired records (under `r` keys in its data file) to their own file (`migrate_s`), then the
open after it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import semidbm
from memory import rss_bytes  # bench/ is on sys.path when this file is run
from twisted.internet.task import Clock

from perund.channel.phases import Phase
from perund.channel.records import Channel, SignedState
from perund.channel.types import ETH, Address, ChannelID, Params, State
from perund.storage import codec
from perund.storage.store import SessionStore

ETHER = 10**18


def closed_channel(n: int) -> Channel:
    """Closed channel number `n`: a final state at version 120 between two fixed parties."""
    cid = ChannelID(hashlib.sha3_256(n.to_bytes(8, "big")).digest())
    params = Params(3600, n, (Address(b"\x01" * 20), Address(b"\x02" * 20)),
                    (Address(b"\x03" * 20), Address(b"\x04" * 20)))
    state = State(cid, 120, (ETH,), ((3 * ETHER + n, 2 * ETHER - n),), True)
    signatures = (b"\x11" * 64 + b"\x1b", b"\x22" * 64 + b"\x1c")
    return Channel(cid, params, 0, Phase.CLOSED, SignedState(state, signatures),
                   signed_up_to=120, reserved=1000)


def open_once(path: str) -> dict[str, Any]:
    """Open the store at `path` in this (fresh) process: seconds, RSS growth, what it holds."""
    before = rss_bytes()
    started = time.perf_counter()
    store = SessionStore(path, Clock())
    took = time.perf_counter() - started
    grown = rss_bytes() - before
    held = {"live": len(list(store.channels())), "retired": store.retired_count()}
    store.close()
    return {"open_s": round(took, 3), "rss_growth_bytes": grown, **held}


def measured_open(path: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--open", path], check=True,
                          capture_output=True, text=True)
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def run(channels: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="perund-bench-") as directory:
        path = os.path.join(directory, "store")
        clock = Clock()
        store = SessionStore(path, clock)
        for n in range(channels):
            store.put(closed_channel(n))
        store.close()
        live = measured_open(path)
        clock.advance(1)
        store = SessionStore(path, clock)
        for channel in list(store.channels()):
            store.retire(channel.channel_id)
        store.close()
        # As a running node's file is, retirements and compactions coming and going: compacted.
        SessionStore(path, clock, compact_ratio=1.0001, compact_min_bytes=1).close()
        retired = measured_open(path)
        sizes = {f"{key}_bytes": Path(path, name).stat().st_size for key, name in
                 (("data", "data"), ("retired", "retired"), ("retired_index", "retired.idx"))}
        old = os.path.join(directory, "old")
        migrate_s = migrated(old, channels)
        after_migration = measured_open(old)
    result: dict[str, Any] = {"channels": channels, **sizes, "migrate_s": migrate_s}
    for name, figures in (("closed_live", live), ("retired", retired),
                          ("after_migration", after_migration)):
        figures["rss_per_channel_bytes"] = round(figures["rss_growth_bytes"] / channels)
        figures["open_us_per_channel"] = round(figures["open_s"] / channels * 1e6, 1)
        result[name] = figures
    return result


def migrated(path: str, channels: int) -> float:
    """Write at `path` a store as the code before left its retired channels (under `r` keys in
    the data file), and time the open that moves them to their own file."""
    SessionStore(path, Clock()).close()
    db: Any = semidbm.open(path, "w")
    for n in range(channels):
        channel = closed_channel(n)
        db[b"r" + channel.channel_id] = codec.encode_channel(channel)
    db.close()
    started = time.perf_counter()
    SessionStore(path, Clock()).close()
    return round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--open", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open:
        print(json.dumps(open_once(args.open)))
        return
    json.dump(run(args.channels), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
