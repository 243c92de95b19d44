"""How long a node with many channels and stored states takes to be ready again after a restart.

Starts `twistd -n perund` on the embedded dev chain (the walkthrough's setup), opens alice's and
bob's sessions, opens --channels channels from alice to bob (bob's session accepts every
proposal pushed to it), sends --states payments on each, stops the node with SIGTERM and
starts it again. Prints JSON with the time from starting the process until:

- `api`: the API answers;
- `sessions`: the node has opened both sessions again by itself (keys unlocked, stores
  loaded, the chain checked to hold every channel's deposits, the first watcher poll done);
- `peers`: both sessions are connected to each other (`perund_peers_connected`), so every
  channel's sync with its peer has gone out;
- `resynced`: besides, no channel waits for its peer's Sync any more
  (`perund_channels_resyncing` is 0): the node is ready, the issue's mark;
- `channels`: both sessions list every channel as open, at the version it had (asked only
  from `resynced` on: listing 2,000 channels every 10 ms would slow the start it measures);
- `paid_on_every_channel`: one more payment on every channel went through (the channels are
  usable again), with 16 callers at once.

The issue's target is 1,000 channels and 100,000 stored states ready within 2 s: run
`bench/restart.py --channels 1000 --states 100` (its set-up takes about five minutes). The
store's size per channel and per state written is printed too, and the node's CPU seconds and
resident memory when it was ready (`node_at_resynced`): on a shared machine the wall-clock
marks include waiting for a core, the CPU seconds do not.
`--restarts N` restarts the node N times (the marks of each, then their median).
`--keep DIR` keeps the set-up in DIR; `--reuse DIR` restarts a node kept that way again,
without the set-up's five minutes (to compare two versions of the code on the same node).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from perund.chain.anvil import free_port
from perund.cli.apiclient import ApiClient, PushStream
from perund.cli.generate import Generated, GeneratedUser, generate
from perund.cli.walkthrough import start_node

CALLERS = 16
KEPT = "bench-restart.json"
"""What a kept set-up needs to be restarted again (`--reuse`), in its directory."""


def open_channels(api: ApiClient, bob_api: ApiClient, alice: str, bob: str,
                  count: int) -> list[str]:
    """`count` channels alice → bob, bob accepting each proposal as it is pushed."""
    accepting = ThreadPoolExecutor(4)

    def on_push(_: str, push: Any) -> None:
        if "proposalId" in push:
            accepting.submit(bob_api.call, "channel_respondProposal", sessionId=bob,
                             proposalId=push["proposalId"], accept=True)

    stream = PushStream(bob_api.ws_url, bob_api.token, on_push)
    stream.call("subscribe", sessionId=bob, topic="proposals")
    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            opened = list(pool.map(
                lambda _: api.call("channel_open", sessionId=alice, peer="bob",
                                   balances={"ETH": {"self": "0.01", "peer": "0"}})["channelId"],
                range(count)))
    finally:
        stream.close()
        accepting.shutdown()
    return opened


def pay_each(api: ApiClient, alice: str, channels: list[str], times: int) -> float:
    """`times` payments on every channel, CALLERS at once, each caller on channels of its own
    (so no two payments merge into one update); the seconds it took."""
    payment = [{"currency": "ETH", "payee": "bob", "amount": "0.000001"}]

    def caller(mine: list[str]) -> None:
        client = ApiClient(api.port, api.token)
        for _ in range(times):
            for channel in mine:
                client.call("channel_send", sessionId=alice, channelId=channel,
                            payments=payment)

    start = time.monotonic()
    with ThreadPoolExecutor(CALLERS) as pool:
        for done in [pool.submit(caller, channels[i::CALLERS]) for i in range(CALLERS)]:
            done.result()
    return time.monotonic() - start


def gauge(api: ApiClient, name: str) -> float | None:
    """A gauge of the node's `/metrics` (None when it is not there)."""
    request = urllib.request.Request(f"http://127.0.0.1:{api.port}/metrics",
                                     headers={"Authorization": f"Bearer {api.token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def process_figures(pid: int) -> dict[str, float]:
    """CPU seconds (user and system) and resident memory of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {"cpu_s": round((int(fields[11]) + int(fields[12])) / ticks, 2),
            "rss_mb": round(rss / 2**20, 1)}


def wait(what: str, ready: Any, node: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except Exception:  # not ready yet (a session still opening, say)
            pass
        if node.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the node was not ready ({what})")
        time.sleep(0.01)


def restart(setup: Generated, directory: Path, api: ApiClient, sessions: dict[str, str],
            channels: list[str], versions: dict[str, int]) -> tuple[Any, dict[str, Any]]:
    """Start the stopped node again; it and the marks (seconds since the start)."""
    started = time.monotonic()
    with (directory / "node.log").open("ab") as sink:
        node = subprocess.Popen(
            [str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "perund",
             "--config", str(setup.node_config)],
            cwd=directory, stdout=sink, stderr=subprocess.STDOUT)
    # Asked every 10 ms (ApiClient.wait_until_up's 0.2 s would blur the mark).
    wait("api", lambda: api.call("node_time"), node)
    marks: dict[str, Any] = {"api": time.monotonic() - started}
    wait("sessions", lambda: len(api.call("session_list")) == 2, node)
    marks["sessions"] = time.monotonic() - started

    def all_open() -> bool:
        for session in sessions.values():
            listed = {c["channelId"]: c for c in api.call("channel_list", sessionId=session)}
            if any(listed[c]["phase"] != "open" or listed[c]["version"] != versions[c]
                   for c in channels):
                return False
        return True

    wait("peers", lambda: (gauge(api, "perund_peers_connected") or 0) >= 2, node)
    marks["peers"] = time.monotonic() - started
    wait("resynced", lambda: gauge(api, "perund_channels_resyncing") == 0, node)
    marks["resynced"] = time.monotonic() - started
    figures = process_figures(node.pid)
    # Listing every channel costs the node CPU: asked only once it is ready.
    wait("channels", all_open, node)
    marks["channels"] = time.monotonic() - started
    pay_each(api, sessions["alice"], channels, 1)
    marks["paid_on_every_channel"] = time.monotonic() - started
    marks = {k: round(v, 3) for k, v in marks.items()}
    marks["node_at_resynced"] = figures
    return node, marks


def median_marks(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each mark over several restarts."""
    middle = len(runs) // 2
    return {key: sorted(run[key] for run in runs)[middle] for key in runs[0]
            if isinstance(runs[0][key], float)}


def store_bytes(setup: Generated) -> int:
    return sum(f.stat().st_size for user in setup.users
               for f in (user.session_file.parent / "db").rglob("*") if f.is_file())


def run(directory: Path, channels: int, states: int, restarts: int) -> dict[str, Any]:
    setup = generate(directory, api_port=free_port(), comm_ports=(free_port(), free_port()))
    node, api = start_node(setup.node_config, directory, directory / "node.log")
    try:
        if api is None:
            raise SystemExit("the node did not start: " + (directory / "node.log").read_text())
        files = {u.name: str(u.session_file) for u in setup.users}
        opened = {name: api.call("session_open", configFile=files[name]) for name in files}
        sessions = {name: o["sessionId"] for name, o in opened.items()}
        bob_api = ApiClient(api.port, opened["bob"]["token"])
        start = time.monotonic()
        ids = open_channels(api, bob_api, sessions["alice"], sessions["bob"], channels)
        opening = time.monotonic() - start
        paying = pay_each(api, sessions["alice"], ids, states) if states else 0.0
        # Payments that find their channel busy go out merged: read what each version is.
        versions = {c["channelId"]: c["version"]
                    for c in api.call("channel_list", sessionId=sessions["alice"])}
        stored = sum(versions.values())
        node.send_signal(signal.SIGTERM)
        node.wait(120)
        size = store_bytes(setup)
        node, runs = restarts_of(setup, directory, api, sessions, ids, versions, restarts)
    finally:
        node.terminate()
        node.wait(60)
    return {
        "channels": channels,
        "payments": channels * states,
        "versions_written_per_side": stored,
        "setup": {"open_channels_s": round(opening, 1),
                  "payments_per_s": round(channels * states / paying, 1) if paying else None},
        **marks_of(runs),
        "store_bytes_per_channel": round(size / (2 * channels)),
        "store_bytes_per_state_written": round(size / max(1, 2 * (stored + channels))),
    }


def restarts_of(setup: Generated, directory: Path, api: ApiClient, sessions: dict[str, str],
                channels: list[str], versions: dict[str, int],
                restarts: int) -> tuple[Any, list[dict[str, Any]]]:
    """Restart the stopped node `restarts` times; the last process and each start's marks.
    What `--reuse` needs is kept in the directory after each start."""
    runs = []
    node = None
    for _ in range(restarts):
        node, marks = restart(setup, directory, api, sessions, channels, versions)
        runs.append(marks)
        # Each restart's payment raised every version: the next restart expects those.
        versions = {c["channelId"]: c["version"]
                    for c in api.call("channel_list", sessionId=sessions["alice"])}
        node.send_signal(signal.SIGTERM)
        node.wait(120)
        (directory / KEPT).write_text(json.dumps(
            {"config": str(setup.node_config), "api_port": api.port,
             "users": {u.name: str(u.session_file) for u in setup.users},
             "sessions": sessions, "channels": channels, "versions": versions}))
    return node, runs


def marks_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The marks of each start, and their median when there are several."""
    return {"ready_after_restart_s": runs[0] if len(runs) == 1 else runs,
            **({"median_of_restarts_s": median_marks(runs)} if len(runs) > 1 else {})}


def rerun(directory: Path, restarts: int) -> dict[str, Any]:
    """Restart a node kept by an earlier `--keep` run `restarts` times."""
    try:
        kept = json.loads((directory / KEPT).read_text())
    except (OSError, ValueError):
        raise SystemExit(f"{directory} holds no set-up kept by --keep") from None
    config = Path(kept["config"])
    settings = yaml.safe_load(config.read_text())
    token = (config.parent / settings["data_dir"] / "api.token").read_text().strip()
    users = tuple(GeneratedUser(name, Path(file), "", "", 0)
                  for name, file in kept["users"].items())
    setup = Generated(config, users)
    api = ApiClient(kept["api_port"], token)
    node, runs = restarts_of(setup, directory, api, kept["sessions"], kept["channels"],
                             kept["versions"], restarts)
    if node is not None and node.poll() is None:
        node.terminate()
        node.wait(60)
    return {"channels": len(kept["channels"]), **marks_of(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=100, help="channels alice → bob")
    parser.add_argument("--states", type=int, default=10, help="payments on each channel")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (the node's log)")
    parser.add_argument("--reuse", metavar="DIR",
                        help="restart the node kept in DIR by --keep (no set-up)")
    parser.add_argument("--restarts", type=int, default=1, help="restarts to measure")
    args = parser.parse_args()
    if args.reuse:
        results = rerun(Path(args.reuse), args.restarts)
    elif args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        results = run(Path(args.keep), args.channels, args.states, args.restarts)
    else:
        with tempfile.TemporaryDirectory(prefix="perund-bench-restart-") as folder:
            results = run(Path(folder), args.channels, args.states, args.restarts)
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
