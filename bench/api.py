"""Payments through the JSON-RPC API of a real node, and what the credential check costs.

Starts `twistd -n perund` on the embedded dev chain (the walkthrough's setup), opens alice's and
bob's sessions, opens a channel, then sends sequential `channel_send` calls over one keep-alive
HTTP connection for --seconds: as the operator (the token file) and as alice (her session's own
credential), in alternating rounds so that drift of the machine hits both alike. Then the same
sequential calls over one WebSocket (`/ws`), and --clients concurrent clients (each on its own
keep-alive connection or WebSocket, each paying sequentially), all on one channel (their
payments merge into shared updates, as concurrent payments on a channel do) and each on a
channel of its own. It also times the credential check itself
(`CredentialRegistry.authenticate`) and prints it as a share of one call. Prints JSON.

Both users' sessions run in the one node, so the node does the payer's, the payee's and the
API's work of every payment on one core (two nodes would each do their own side).
"""

from __future__ import annotations

import argparse
import http.client
import json
import pstats
import statistics
import sys
import tempfile
import time
import timeit
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from perund.api.credentials import CredentialRegistry, Scope
from perund.chain.anvil import free_port
from perund.cli.apiclient import ApiClient, Pushes
from perund.cli.generate import generate
from perund.cli.walkthrough import start_node


class KeepAlive:
    """Sequential JSON-RPC calls on one persistent HTTP connection."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.ids = 0

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.ids += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self.ids, "method": method,
                           "params": params})
        self.connection.request("POST", "/rpc", body, self.headers)
        reply = json.loads(self.connection.getresponse().read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


def _send_params(session: str, channel: str) -> dict[str, Any]:
    return {"sessionId": session, "channelId": channel,
            "payments": [{"currency": "ETH", "payee": "bob", "amount": "0.000001"}]}


def _paying(call: Any, params: dict[str, Any], until: float) -> list[float]:
    """Sequential `channel_send` calls until `until`; their latencies."""
    call(params)  # the connection is up and warm
    latencies: list[float] = []
    while (now := time.perf_counter()) < until:
        call(params)
        latencies.append(time.perf_counter() - now)
    return latencies


def _summary(latencies: list[float], elapsed: float) -> dict[str, Any]:
    latencies.sort()
    return {"payments_per_s": round(len(latencies) / elapsed, 1), "payments": len(latencies),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2)}


def _caller(port: int, token: str, over: str) -> Any:
    """One client's `channel_send` over a keep-alive HTTP connection or a WebSocket."""
    if over == "http":
        client = KeepAlive(port, token)
        return lambda params: client.call("channel_send", params)
    socket = Pushes(f"ws://127.0.0.1:{port}/ws", token)
    return lambda params: socket.call("channel_send", **params)


def payments(port: int, token: str, session: str, channel: str, seconds: float,
             over: str = "http") -> dict[str, Any]:
    """Sequential payments of 1 wei-ish amounts for `seconds`: rate and latencies."""
    call = _caller(port, token, over)
    start = time.perf_counter()
    latencies = _paying(call, _send_params(session, channel), start + seconds)
    return _summary(latencies, time.perf_counter() - start)


def concurrent(port: int, token: str, session: str, channels: list[str], seconds: float,
               over: str) -> dict[str, Any]:
    """One client per entry of `channels` (a channel may repeat), all paying at once."""
    callers = [_caller(port, token, over) for _ in channels]
    start = time.perf_counter()
    with ThreadPoolExecutor(len(channels)) as pool:
        runs = [pool.submit(_paying, call, _send_params(session, channel), start + seconds)
                for call, channel in zip(callers, channels, strict=True)]
        latencies = [latency for run in runs for latency in run.result()]
    return _summary(latencies, time.perf_counter() - start)


def check_cost() -> dict[str, float]:
    """Microseconds of one credential check, for the operator's token and a session's."""
    registry = CredentialRegistry("operator-token-" + "x" * 28, clock=time.time)
    for index in range(20):  # a node with some sessions
        registry.issue(f"{index:032x}", Scope.SESSION)
    _, token = registry.issue("ff" * 16, Scope.SESSION)
    operator = "operator-token-" + "x" * 28
    rounds = 200_000
    return {
        "operator_us": round(timeit.timeit(lambda: registry.authenticate(operator),
                                           number=rounds) / rounds * 1e6, 3),
        "session_us": round(timeit.timeit(lambda: registry.authenticate(token),
                                          number=rounds) / rounds * 1e6, 3),
        "unknown_us": round(timeit.timeit(lambda: registry.authenticate(token[:-1] + "A"),
                                          number=rounds) / rounds * 1e6, 3),
    }


def breakdown(stats_file: Path, calls: int, top: int = 25) -> list[dict[str, Any]]:
    """The node's busiest functions (own time) per channel_send call, from its cProfile."""
    stats = pstats.Stats(str(stats_file))
    rows = []
    for (path, line, name), (_, count, own, total, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(path).name}:{line}({name})",
                     "own_us_per_call": round(own / calls * 1e6, 1),
                     "total_us_per_call": round(total / calls * 1e6, 1),
                     "calls_per_call": round(count / calls, 2)})
    rows.sort(key=lambda row: -row["own_us_per_call"])
    return rows[:top]


def run(directory: Path, seconds: float, rounds: int, clients: int,
        profile: Path | None = None) -> dict[str, Any]:
    setup = generate(directory, api_port=free_port(), comm_ports=(free_port(), free_port()))
    options = () if profile is None else (f"--profile={profile}", "--profiler=cprofile",
                                          "--savestats")
    node, operator = start_node(setup.node_config, directory, directory / "node.log", options)
    try:
        if operator is None:
            raise SystemExit("the node did not start: " + (directory / "node.log").read_text())
        files = {u.name: str(u.session_file) for u in setup.users}
        alice = operator.call("session_open", configFile=files["alice"])
        bob = operator.call("session_open", configFile=files["bob"])
        bob_api = ApiClient(operator.port, bob["token"])
        pushes = bob_api.pushes()
        pushes.call("subscribe", sessionId=bob["sessionId"], topic="proposals")

        def open_channel() -> str:
            with ThreadPoolExecutor(1) as pool:
                opening = pool.submit(operator.call, "channel_open",
                                      sessionId=alice["sessionId"], peer="bob",
                                      balances={"ETH": {"self": "10", "peer": "0"}})
                proposal = pushes.wait(lambda p: "proposalId" in p)
                bob_api.call("channel_respondProposal", sessionId=bob["sessionId"],
                             proposalId=proposal["proposalId"], accept=True)
                return str(opening.result(120)["channelId"])

        channel = open_channel()
        port, session = operator.port, alice["sessionId"]
        runs: dict[str, list[dict[str, Any]]] = {"operator": [], "session": [], "ws": []}
        for _ in range(rounds):
            runs["operator"].append(payments(port, operator.token, session, channel, seconds))
            runs["session"].append(payments(port, alice["token"], session, channel, seconds))
            runs["ws"].append(payments(port, alice["token"], session, channel, seconds, "ws"))
        many = [open_channel() for _ in range(clients - 1)] if clients > 1 else []
        pushes.close()
        together: dict[str, dict[str, Any]] = {}
        if clients > 1:
            for over in ("http", "ws"):
                together[f"{clients}_clients_one_channel_{over}"] = concurrent(
                    port, alice["token"], session, [channel] * clients, seconds, over)
                together[f"{clients}_clients_{clients}_channels_{over}"] = concurrent(
                    port, alice["token"], session, [channel, *many], seconds, over)
    finally:
        node.terminate()
        node.wait(30)
    medians = {who: statistics.median(r["payments_per_s"] for r in results)
               for who, results in runs.items()}
    if profile is not None:
        calls = sum(r["payments"] for results in runs.values() for r in results)
        return {"median_payments_per_s_under_the_profiler": medians, "calls": calls,
                "node_time_per_channel_send": breakdown(profile, calls)}
    cost = check_cost()
    per_call_us = 1e6 / medians["session"]
    return {
        "sequential_channel_send_one_connection": runs,
        "concurrent_clients": together,
        "median_payments_per_s": medians,
        "session_vs_operator": round(medians["session"] / medians["operator"], 3),
        "credential_check": cost,
        "credential_check_share_of_a_call": round(cost["session_us"] / per_call_us, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per credential")
    parser.add_argument("--clients", type=int, default=16,
                        help="concurrent clients of the concurrent runs (1: none)")
    parser.add_argument("--profile", action="store_true",
                        help="run the node under cProfile and print where one call's time goes "
                             "(slower: the figures are for the breakdown only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="perund-bench-api-") as folder:
        results = run(Path(folder), args.seconds, args.rounds, args.clients,
                      Path(folder) / "node.prof" if args.profile else None)
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
