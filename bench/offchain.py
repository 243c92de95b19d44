"""Off-chain payment throughput and latency: two channel clients in separate processes.

Run: `.venv/bin/python bench/offchain.py [--seconds S] [--channels N]`. This process is the
paying client (alice); it starts the receiving client (bob) as a second process, and the two talk
over loopback TCP through the real PeerManager, codec and channel client. Prints one JSON object:

    {"sequential": {"payments_per_s", "p50_ms", "p99_ms", "payments", "payer_cpu_us",
                    "payee_cpu_us"},
     "concurrent_100": {...}, "durable": {...}, "durable_16_callers_one_channel": {...},
     "durable_concurrent_100": {...},
     "offered_R_per_s_100_channels": {...}, "durable_offered_R_per_s_100_channels": {...},
     "limits": {"before": {"no_fsync_per_s", "one_fsync_per_s", "fsync_us"}, "after": {...}},
     "sequential_share_of_no_fsync_ceiling", "durable_share_of_no_fsync_ceiling",
     "durable_concurrent_100_multiple_of_no_fsync_ceiling",
     "durable_payee_fsync_ceiling_per_s", "durable_share_of_payee_fsync_ceiling"}

Every run says how much CPU each process used per payment (`payer_cpu_us`: this process,
callers included; `payee_cpu_us`: bob's, his fsync thread included): in a run over many
channels the busier of the two is the limit.

"durable" also says how long bob's fsyncs took on average during it (`payee_fsync_mean_us`,
from his store's own timing); `durable_payee_fsync_ceiling_per_s` is payment-limit's ceiling
with that fsync on the path. payment-limit times its fsyncs back to back, and a disk may
answer an fsync that follows a pause (here, each payment's round trip) much later: on the
Firecracker VMs this was measured on, 50 µs back to back and 200 to 900 µs after 0.3 ms idle.

`limits` are the ceilings the workplace's `payment-limit.py` prints (named by the environment's
PERUND_PAYMENT_LIMIT), run before and after the measurements (issue #16 states its goal as a
share of the no-fsync one); the shares are of the higher of the two. Without the tool they say
what is missing.

Latency of one payment: from `ChannelClient.send` until the peer's countersignature is verified
and the state is current. Channels are funded by the benchmark itself (no chain: the funding
step is the caller's in this mode). The first two runs keep states in memory (`MemoryStore`);
"durable" runs sequential payments again with both sides on the session store, each write as
durable as docs/specification.md §5 asks (durability by interest, docs/protocol.md: the payee's
fully signed state is fsynced before its UpdateAccept leaves, the payer's own writes are not
waited for); then 16
callers paying on that one channel at once (their waiting payments share updates), then 100
channels with one caller each.

The runs above are closed loops: their latency is mostly queueing (callers in flight /
throughput), and with one caller per channel no two payments ever share an update, so
"concurrent_100" is the rate of one-at-a-time payments (every payment signed, verified and
written on its own). The "offered" runs are open loops, a user's view of a node under a given
load: payments start at a fixed rate (`--rates`) round-robin over the 100 channels whether or
not earlier ones are done, and a payment's latency counts from when it was due. Payments that
find their channel busy wait and go out merged with the others waiting there, so a rate above
what one-at-a-time payments reach (the default's 10,000/s) shows the node's capacity: the rate
it still pays everything at, and the latency it takes.

To profile the receiving process, set BENCH_BOB_PREFIX, e.g. `-m cProfile -o /tmp/bob.prof`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults, succeed

from perund.channel import events as ev
from perund.channel.encoding import Signer
from perund.channel.proposal import Deployment, OpenRequest
from perund.channel.types import ETH, Address, ChannelID
from perund.errors import FailedPrecondition
from perund.peer.manager import PeerManager
from perund.session.client import ChannelClient
from perund.session.notices import Notice, ProposalNotice
from perund.storage import ChannelStore, MemoryStore

CHAIN_ID = 1337
ADJUDICATOR = Address(bytes.fromhex("0161f5d592b2e5e64141144b1674acfc22f1c82d"))
DEPLOYMENT = Deployment(CHAIN_ID, ADJUDICATOR, min_challenge_duration=1)
ETHER = 10**18


class CallerFunding:
    """The benchmark's funding step: it reports every channel funded at once (no chain)."""

    def fund(self, event: ev.Fund) -> Deferred[None]:
        return succeed(None)


class NoSettlement:
    """The benchmark never closes a channel; any attempt is an error."""

    def _refuse(self, event: object) -> Deferred[int | None]:
        raise FailedPrecondition("the off-chain benchmark does not settle channels")

    conclude_final = register = conclude = _refuse


def make_client(signer: Signer, resolve: Callable[[Address], str | None], listen: str | None,
                store: ChannelStore) -> ChannelClient:
    peers = PeerManager(reactor, signer, resolve, listen, keepalive_interval=None)
    return ChannelClient(
        reactor, signer=signer, receiver=signer.address, peers=peers, deployment=DEPLOYMENT,
        store=store, funder=CallerFunding(), settler=NoSettlement(),
        is_contact=lambda address: True, response_timeout=30.0, request_timeout=30.0,
    )


# -- bob: the receiving process -----------------------------------------------------------------


def store_for(durable: str, name: str, history: bool = True) -> ChannelStore:
    """The channel store of one side: in memory, or durable (every write fsynced) under DIR,
    keeping the payment history unless `history` is False (bench/history.py's baseline)."""
    if not durable:
        return MemoryStore()
    from perund.storage.fsync_thread import fsync_thread
    from perund.storage.store import SessionStore

    # As a node's sessions do: fsyncs that answer several flows run on their own thread.
    return SessionStore(Path(durable) / name, reactor, record_payments=history,
                        sync_elsewhere=fsync_thread(reactor))


async def serve(args: argparse.Namespace) -> None:
    signer = Signer(os.urandom(32))
    client = make_client(signer, lambda address: None, "tcp:0:interface=127.0.0.1",
                         store_for(args.durable, "bob", not args.no_history))

    def accept(notice: Notice) -> None:
        if isinstance(notice, ProposalNotice):
            client.respond_proposal(notice.proposal.proposal_id, True)

    client.observers.append(accept)
    port = await client.peers.listen()
    print(json.dumps({"address": signer.address.hex(), "port": port}), flush=True)

    def answer(line: bytes) -> None:
        # A line on stdin asks for a figure: how the payment path's fsyncs went so far
        # (`Payee.fsyncs`), or this process's CPU seconds (`Payee.cpu_seconds`).
        if line.strip() == b"cpu":
            print(json.dumps({"cpu_s": cpu_seconds()}), flush=True)
            return
        times = getattr(client.store, "fsync_times", None)
        print(json.dumps({"count": times.count if times else 0,
                          "total": times.total if times else 0.0}), flush=True)

    done: Deferred[None] = Deferred()
    # The paying process closes our stdin when it is finished.
    cast(Any, reactor).addReader(_StdinClosed(done, answer))
    await done


class _StdinClosed:
    """Fires `done` when standard input reaches end of file; calls `answer` with each line
    before it."""

    def __init__(self, done: Deferred[None],
                 answer: Callable[[bytes], None] = lambda line: None) -> None:
        self.done = done
        self.answer = answer
        self._partial = b""

    def fileno(self) -> int:
        return sys.stdin.fileno()

    def doRead(self) -> None:
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:
            cast(Any, reactor).removeReader(self)
            self.done.callback(None)
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.answer(line)

    def connectionLost(self, reason: object) -> None:
        # epoll reports a closed pipe as a hang-up, not as a readable end of file.
        if not self.done.called:
            self.done.callback(None)

    def logPrefix(self) -> str:
        return "stdin"


def cpu_seconds() -> float:
    """User and system CPU this process (all its threads) has used so far (clock_gettime's
    process clock: os.times counts in 10 ms ticks)."""
    return time.process_time()


# -- alice: the paying process ------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def summary(latencies: list[float], elapsed: float) -> dict[str, Any]:
    latencies.sort()
    return {
        "payments_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "payments": len(latencies),
    }


async def pay_for(client: ChannelClient, channel_id: ChannelID, until: float,
                  latencies: list[float]) -> None:
    """Pay 1 wei at a time on one channel until `until`, recording each payment's latency."""
    transfer = ((ETH, 1),)
    clock = time.perf_counter
    while clock() < until:
        start = clock()
        await client.send(channel_id, transfer)
        latencies.append(clock() - start)


class CpuPerPayment:
    """Each process's CPU per payment over one run: which of the two is the limit, and how far
    each is from the crypto floor (docs/performance.md, "Many channels")."""

    def __init__(self, payee: Payee | None) -> None:
        self._payee = payee
        self._payer_start = cpu_seconds()
        self._payee_start = payee.cpu_seconds() if payee is not None else 0.0

    def add_to(self, result: dict[str, Any]) -> dict[str, Any]:
        """`result` with "payer_cpu_us" and "payee_cpu_us" (µs a payment, this run)."""
        payments = result["payments"]
        if payments:
            result["payer_cpu_us"] = round((cpu_seconds() - self._payer_start) / payments * 1e6,
                                           1)
            if self._payee is not None:
                result["payee_cpu_us"] = round(
                    (self._payee.cpu_seconds() - self._payee_start) / payments * 1e6, 1)
        return result


async def measure(client: ChannelClient, channels: list[ChannelID],
                  seconds: float, payee: Payee | None = None) -> dict[str, Any]:
    """Closed loop: one caller per entry of `channels` pays 1 wei after 1 wei for `seconds`."""
    latencies: list[float] = []
    cpu = CpuPerPayment(payee)
    start = time.perf_counter()
    until = start + seconds
    await gatherResults([Deferred.fromCoroutine(pay_for(client, cid, until, latencies))
                         for cid in channels])
    return cpu.add_to(summary(latencies, time.perf_counter() - start))


async def offered(client: ChannelClient, channels: list[ChannelID], rate: float,
                  seconds: float, payee: Payee | None = None) -> dict[str, Any]:
    """Open loop: start payments at `rate` per second, round-robin over `channels`, whatever
    the ones before them are doing, for `seconds`; then wait for all of them.

    A closed loop (each caller waits for its payment) measures capacity, and its latency is
    mostly queueing: in-flight count / throughput. This is the user's view at a given load:
    a payment's latency runs from the moment it was due (not when it could be started, which
    would hide the queueing: coordinated omission) until it is countersigned and durable.
    """
    transfer = ((ETH, 1),)
    clock = time.perf_counter
    latencies: list[float] = []
    failures: list[str] = []
    outstanding: list[Deferred[None]] = []
    cpu = CpuPerPayment(payee)
    start = clock()
    total = round(seconds * rate)  # payment i is due at start + i / rate
    issued = 0

    def done(_: object, due: float) -> None:
        latencies.append(clock() - due)

    def failed(failure: Any) -> None:
        failures.append(failure.getErrorMessage())

    def tick(due_count: int | None = None) -> None:
        nonlocal issued
        if due_count is None:
            due_count = min(total, int((clock() - start) * rate) + 1)
        while issued < due_count:
            due = start + issued / rate
            payment = client.send(channels[issued % len(channels)], transfer)
            outstanding.append(payment.addCallbacks(done, failed, callbackArgs=(due,)))
            issued += 1

    ticker = task.LoopingCall(tick)
    ticker.clock = cast(Any, reactor)
    ticking = ticker.start(0.0005)
    await task.deferLater(cast(Any, reactor), seconds)
    ticker.stop()
    await ticking
    tick(total)
    await gatherResults(outstanding)
    # The rate counts until the last payment is done: a backlog left at the end shows in it.
    result = cpu.add_to(summary(latencies, clock() - start))
    result["offered_per_s"] = rate
    result["failed"] = len(failures)
    if failures:
        result["first_failure"] = failures[0]
    return result


class Payee:
    """bob's process as alice's measurements see it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def fsyncs(self) -> tuple[int, float]:
        """How many commit fsyncs bob's store made so far, and their seconds in all."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("fsyncs\n")
        self._process.stdin.flush()
        answer = json.loads(self._process.stdout.readline())
        return answer["count"], answer["total"]

    def cpu_seconds(self) -> float:
        """The CPU seconds bob's process has used so far."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("cpu\n")
        self._process.stdin.flush()
        cpu: float = json.loads(self._process.stdout.readline())["cpu_s"]
        return cpu


async def run_pair(args: argparse.Namespace, durable: str,
                   measurements: Callable[[ChannelClient, OpenRequest, Payee], Any]
                   ) -> dict[str, Any]:
    """Start bob's process, build alice here, run `measurements`, stop bob."""
    command = [sys.executable, *os.environ.get("BENCH_BOB_PREFIX", "").split(), __file__,
               "--serve"]
    if durable:
        command += ["--durable", durable]
    if getattr(args, "no_history", False):
        command += ["--no-history"]
    bob = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert bob.stdout is not None and bob.stdin is not None
        hello = json.loads(bob.stdout.readline())
        bob_address = Address(bytes.fromhex(hello["address"]))
        endpoint = f"tcp:host=127.0.0.1:port={hello['port']}"
        signer = Signer(os.urandom(32))
        store = store_for(durable, "alice", not getattr(args, "no_history", False))
        client = make_client(signer, {bob_address: endpoint}.get, None, store)
        request = OpenRequest(bob_address, (ETH,), ((1000 * ETHER, 1000 * ETHER),), 3600)
        results: dict[str, Any] = await measurements(client, request, Payee(bob))
        await client.peers.stop()
        close = getattr(store, "close", None)
        if close is not None:
            close()
        return results
    finally:
        if bob.stdin is not None:
            bob.stdin.close()
        try:
            bob.wait(10)
        except subprocess.TimeoutExpired:
            bob.kill()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds
    warm_up = min(1.0, seconds / 5)

    async def many_channels(client: ChannelClient, request: OpenRequest, payee: Payee,
                            prefix: str) -> dict[str, Any]:
        """One caller on each of `args.channels` channels, then each offered load."""
        opened = await gatherResults([client.open_channel(request)
                                      for _ in range(args.channels)])
        channels = [c.channel_id for c in opened]
        results = {f"{prefix}concurrent_{args.channels}": await measure(client, channels,
                                                                         seconds, payee)}
        for rate in args.rates:
            results[f"{prefix}offered_{rate}_per_s_{args.channels}_channels"] = await offered(
                client, channels, rate, seconds, payee)
        return results

    async def in_memory(client: ChannelClient, request: OpenRequest,
                        payee: Payee) -> dict[str, Any]:
        single = await client.open_channel(request)
        await measure(client, [single.channel_id], warm_up)
        results = {"sequential": await measure(client, [single.channel_id], seconds, payee)}
        results.update(await many_channels(client, request, payee, ""))
        return results

    async def durable(client: ChannelClient, request: OpenRequest,
                      payee: Payee) -> dict[str, Any]:
        single = await client.open_channel(request)
        cid = single.channel_id
        await measure(client, [cid], warm_up)
        fsyncs_before, fsync_seconds_before = payee.fsyncs()
        results = {"durable": await measure(client, [cid], seconds, payee)}
        fsyncs, fsync_seconds = payee.fsyncs()
        if fsyncs > fsyncs_before:
            # What the disk gave this run's payments: payment-limit.py times fsyncs back to
            # back, and some disks (virtual ones) answer much later after a pause.
            results["durable"]["payee_fsync_mean_us"] = round(
                (fsync_seconds - fsync_seconds_before) / (fsyncs - fsyncs_before) * 1e6, 1)
        # Several callers on one channel: their payments wait for the update in flight and go
        # out together, sharing its round trip and its fsyncs.
        results[f"durable_{args.callers}_callers_one_channel"] = await measure(
            client, [cid] * args.callers, seconds, payee)
        results.update(await many_channels(client, request, payee, "durable_"))
        return results

    results = await run_pair(args, "", in_memory)
    with tempfile.TemporaryDirectory(prefix="perund-bench-") as directory:
        results.update(await run_pair(args, args.durable or directory, durable))
    return results



_LIMIT_LINES = {
    "no_fsync_per_s": re.compile(r"ceiling, no fsync on the path:\s*([\d,]+)"),
    "one_fsync_per_s": re.compile(r"ceiling, one fsync on the path:\s*([\d,]+)"),
    "fsync_us": re.compile(r"fsync ([\d.]+) us"),
}


def payment_limits() -> dict[str, Any]:
    """The ceilings payment-limit.py (PERUND_PAYMENT_LIMIT) prints on this machine now, so that
    the runs compare with figures of the same hour (the machine's speed drifts); {"missing":
    why} without it."""
    named = os.environ.get("PERUND_PAYMENT_LIMIT")
    if not named:
        return {"missing": "PERUND_PAYMENT_LIMIT names no payment-limit.py"}
    tool = Path(named)
    if not tool.is_file():
        return {"missing": f"no {tool} (PERUND_PAYMENT_LIMIT)"}
    done = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True,
                          timeout=300)
    limits: dict[str, Any] = {}
    for name, line in _LIMIT_LINES.items():
        found = line.search(done.stdout)
        if found is not None:
            limits[name] = float(found.group(1).replace(",", ""))
    return limits or {"missing": f"{tool} printed no ceiling (exit status {done.returncode})"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--channels", type=int, default=100, help="channels of the concurrent run")
    parser.add_argument("--callers", type=int, default=16,
                        help="concurrent callers on one channel in the durable run")
    parser.add_argument("--rates", type=lambda text: [int(r) for r in text.split(",")],
                        default=[2000, 5000, 10000], metavar="R,R",
                        help="offered loads (payments/s) of the open-loop runs over the channels")
    parser.add_argument("--durable", metavar="DIR", default="",
                        help="where the durable run keeps its stores (default: a temporary dir)")
    parser.add_argument("--no-history", action="store_true",
                        help="durable stores keep no payment history (its cost: bench/history.py)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        task.react(lambda _: Deferred.fromCoroutine(serve(args)))
        return

    before = payment_limits()

    def report(results: dict[str, Any]) -> None:
        # Measured before and after the runs (the machine's speed drifts); the shares are of
        # the higher ceiling, the harder one to reach.
        after = payment_limits()
        results["limits"] = {"before": before, "after": after}
        ceiling = max(before.get("no_fsync_per_s", 0.0), after.get("no_fsync_per_s", 0.0))
        if ceiling:
            for run in ("sequential", "durable"):
                if run in results:
                    results[f"{run}_share_of_no_fsync_ceiling"] = round(
                        results[run]["payments_per_s"] / ceiling, 3)
            for run in [r for r in results if r.startswith("durable_concurrent_")]:
                # Issue #16's goal for 100 durable channels: twice the ceiling.
                results[f"{run}_multiple_of_no_fsync_ceiling"] = round(
                    results[run]["payments_per_s"] / ceiling, 3)
            fsync_us = results.get("durable", {}).get("payee_fsync_mean_us")
            if fsync_us is not None:
                # payment-limit's "one fsync" ceiling with the fsync this run's payee saw.
                with_fsync = 1 / (1 / ceiling + fsync_us / 1e6)
                results["durable_payee_fsync_ceiling_per_s"] = round(with_fsync, 1)
                results["durable_share_of_payee_fsync_ceiling"] = round(
                    results["durable"]["payments_per_s"] / with_fsync, 3)
        print(json.dumps(results))

    task.react(lambda _: Deferred.fromCoroutine(run(args)).addCallback(report))


if __name__ == "__main__":
    main()
