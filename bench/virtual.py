"""Payments in a virtual channel against payments in a ledger channel, between the same two
processes (bench/offchain.py style).

Run: `.venv/bin/python bench/virtual.py [--seconds S]`. This process is alice; it starts ingrid
(an intermediary) and carol as two more processes, all three over loopback TCP through the real
PeerManager, codec and channel client. alice and carol each open a ledger channel with ingrid,
then alice opens a ledger channel with carol and a virtual channel with carol through ingrid
(locked in both ledgers), and pays 1 wei at a time on each in turn. Prints one JSON object:

    {"ledger": {"payments_per_s", "p50_ms", "p99_ms", "payments"}, "virtual": {...},
     "durable_ledger": {...}, "durable_virtual": {...}, "virtual_open_ms": ...,
     "durable_virtual_open_ms": ...}

A payment in a virtual channel is an ordinary update between alice and carol (ingrid takes no
part), so the two should match; `virtual_open_ms` is the time from `channel_open` with `via` to
the channel open for alice (proposal, version 0, both locks matched by ingrid). Channels are
funded by the benchmark itself (no chain). The durable runs keep every side's states in the
session store, fsynced before the message that depends on them leaves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, cast

from offchain import (  # bench/ is on sys.path when this file is run
    DEPLOYMENT,
    ETHER,
    CallerFunding,
    NoSettlement,
    _StdinClosed,
    measure,
    store_for,
)
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from perund.channel.encoding import Signer
from perund.channel.proposal import OpenRequest
from perund.channel.types import ETH, Address
from perund.channel.virtual_opening import VirtualOpenRequest
from perund.peer.manager import PeerManager
from perund.session.client import ChannelClient
from perund.session.config import IntermediaryConfig
from perund.session.notices import Notice, ProposalNotice
from perund.storage import ChannelStore


def make_client(signer: Signer, resolve: Callable[[Address], str | None], store: ChannelStore,
                intermediary: bool) -> ChannelClient:
    peers = PeerManager(reactor, signer, resolve, "tcp:0:interface=127.0.0.1",
                        keepalive_interval=None)
    return ChannelClient(
        reactor, signer=signer, receiver=signer.address, peers=peers, deployment=DEPLOYMENT,
        store=store, funder=CallerFunding(), settler=NoSettlement(),
        is_contact=lambda address: True, response_timeout=30.0, request_timeout=30.0,
        intermediary=IntermediaryConfig(intermediary, 10.0))


def ledger_request(peer: Address) -> OpenRequest:
    return OpenRequest(peer, (ETH,), ((1000 * ETHER, 1000 * ETHER),), 3600)


# -- ingrid and carol: the serving processes ---------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    """ingrid (the intermediary) or carol: accept every proposal; carol opens her ledger
    channel with ingrid first."""
    endpoints: dict[Address, str] = {}
    for peer in args.peer or ():
        address, endpoint = peer.split("=", 1)
        endpoints[Address(bytes.fromhex(address))] = endpoint
    signer = Signer(os.urandom(32))
    client = make_client(signer, endpoints.get, store_for(args.durable, args.serve),
                         args.serve == "ingrid")

    def accept(notice: Notice) -> None:
        if isinstance(notice, ProposalNotice):
            client.respond_proposal(notice.proposal.proposal_id, True)

    client.observers.append(accept)
    port = await client.peers.listen()
    for address in endpoints:
        await client.open_channel(ledger_request(address))
    print(json.dumps({"address": signer.address.hex(), "port": port}), flush=True)
    done: Deferred[None] = Deferred()
    cast(Any, reactor).addReader(_StdinClosed(done))
    await done


def spawn(name: str, durable: str, peers: dict[str, str]) -> tuple[subprocess.Popen[str],
                                                                     dict[str, Any]]:
    command = [sys.executable, __file__, "--serve", name]
    if durable:
        command += ["--durable", durable]
    for address, endpoint in peers.items():
        command += ["--peer", f"{address}={endpoint}"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    return process, json.loads(process.stdout.readline())


# -- alice: the paying process -----------------------------------------------------------------


async def run_hub(args: argparse.Namespace, durable: str, prefix: str) -> dict[str, Any]:
    processes = []
    try:
        ingrid, ingrid_hello = spawn("ingrid", durable, {})
        processes.append(ingrid)
        ingrid_endpoint = f"tcp:host=127.0.0.1:port={ingrid_hello['port']}"
        carol, carol_hello = spawn("carol", durable, {ingrid_hello["address"]: ingrid_endpoint})
        processes.append(carol)
        ingrid_address = Address(bytes.fromhex(ingrid_hello["address"]))
        carol_address = Address(bytes.fromhex(carol_hello["address"]))
        endpoints = {ingrid_address: ingrid_endpoint,
                     carol_address: f"tcp:host=127.0.0.1:port={carol_hello['port']}"}
        store = store_for(durable, "alice")
        client = make_client(Signer(os.urandom(32)), endpoints.get, store, False)
        await client.open_channel(ledger_request(ingrid_address))
        ledger = await client.open_channel(ledger_request(carol_address))
        started = time.perf_counter()
        virtual = await client.open_channel(VirtualOpenRequest(
            carol_address, ingrid_address, (ETH,), ((100 * ETHER, 100 * ETHER),), 3600))
        opened_ms = round((time.perf_counter() - started) * 1000, 3)
        results: dict[str, Any] = {f"{prefix}virtual_open_ms": opened_ms}
        kinds = (("ledger", ledger.channel_id), ("virtual", virtual.channel_id))
        for _, channel_id in kinds:
            await measure(client, [channel_id], min(1.0, args.seconds / 5))  # warm-up
        for name, channel_id in kinds:
            results[f"{prefix}{name}"] = await measure(client, [channel_id], args.seconds)
        await client.peers.stop()
        close = getattr(store, "close", None)
        if close is not None:
            close()
        return results
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results = await run_hub(args, "", "")
    with tempfile.TemporaryDirectory(prefix="perund-bench-") as directory:
        results.update(await run_hub(args, directory, "durable_"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--serve", choices=("ingrid", "carol"), help=argparse.SUPPRESS)
    parser.add_argument("--peer", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--durable", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        task.react(lambda _: Deferred.fromCoroutine(serve(args)))
        return
    task.react(lambda _: Deferred.fromCoroutine(run(args)).addCallback(
        lambda results: print(json.dumps(results))))


if __name__ == "__main__":
    main()
