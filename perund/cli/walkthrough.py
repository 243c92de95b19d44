"""`perund walkthrough`: what `make demo` runs. A real node on the embedded dev chain, two users,
and a channel's whole life through the node's API, narrated.

It writes a fresh setup (`perund generate`) into a folder, starts `twistd -n perund` on it,
opens alice's and bob's sessions over JSON-RPC with the operator's token, and from then on each
user acts with the credential of their own session (docs/security.md): bob subscribes to pushes
over WebSocket, alice opens a channel (bob accepts the pushed proposal), pays, requests a payment
(bob accepts the pushed request), closes cooperatively (bob agrees to the final state), and both
see their on-chain balances. The channel holds ETH and the embedded chain's test token PRN, and
alice pays in both. The node keeps running afterwards only with --keep.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import yaml

from perund.chain.anvil import free_port
from perund.cli.apiclient import ApiClient, ApiError
from perund.cli.generate import generate


class Narrator:
    """Numbered steps and indented details on a stream."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step = 0

    def title(self, text: str) -> None:
        self.step += 1
        print(f"\n{self.step}. {text}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out, flush=True)

    def call(self, who: str, method: str, params: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if k != "sessionId")
        print(f"   {who} → {method}({shown})", file=self.out, flush=True)


def _balances(info: dict[str, Any]) -> str:
    """`self 2 ETH + 20 PRN, peer 0.5 ETH + 5 PRN`: every currency of the channel."""
    rows = info["balances"]
    return ", ".join(side + " " + " + ".join(f"{pair[key]} {currency}"
                                            for currency, pair in rows.items())
                     for side, key in (("self", "self"), ("peer", "peer")))


def start_node(config: Path, directory: Path, log: Path, twistd_options: tuple[str, ...] = (),
               ) -> tuple[subprocess.Popen[bytes], ApiClient | None]:
    """Start `twistd -n perund --config CONFIG` in `directory`, its output into `log`; the
    process and, once its API answers, a client with the operator's token (None if it did not
    come up within a minute). `twistd_options` go before `perund` (a benchmark's profiler)."""
    twistd = str(Path(sys.executable).with_name("twistd"))
    with log.open("ab") as sink:
        node = subprocess.Popen([twistd, "-n", "--pidfile=", *twistd_options, "perund",
                                 "--config", str(config)],
                                cwd=directory, stdout=sink, stderr=subprocess.STDOUT)
    settings = yaml.safe_load(config.read_text())
    token_file = config.parent / settings["data_dir"] / "api.token"
    deadline = time.monotonic() + 60
    while not token_file.exists():
        if node.poll() is not None or time.monotonic() > deadline:
            return node, None
        time.sleep(0.1)
    api = ApiClient(int(settings["api"]["listen"].split(":")[1]), token_file.read_text().strip())
    api.wait_until_up(alive=lambda: node.poll() is None)
    return node, api


def run_walkthrough(directory: Path, out: TextIO, keep: bool = False) -> int:
    """Run the narrated walkthrough in `directory`; the exit status."""
    n = Narrator(out)
    n.title("Set up a node and two users (perund generate)")
    setup = generate(directory, api_port=free_port(), comm_ports=(free_port(), free_port()))
    n.say(f"node config {setup.node_config}")
    for user in setup.users:
        n.say(f"{user.name}: on-chain {user.on_chain_address}, signs as {user.off_chain_address}")

    n.title("Start the node: twistd -n perund --config perund.yaml (embedded dev chain)")
    log = directory / "node.log"
    node, api = start_node(setup.node_config, directory, log)
    try:
        if api is None:
            n.say("the node did not start; its log:\n" + log.read_text()[-2000:])
            return 1
        info = api.call("node_getConfig")
        n.say(f"JSON-RPC on {api.url}, token in {directory / 'data' / 'api.token'} "
              "(mode 0600)")
        n.say(f"chain {info['chainId']} ({info['chainUrl']}), Adjudicator {info['adjudicator']}")
        return _walk(n, api, setup)
    except ApiError as exc:
        n.say(f"the node refused: {exc}")
        return 1
    finally:
        if keep:
            n.say(f"the node keeps running (pid {node.pid}); stop it with kill {node.pid}")
        else:
            node.terminate()
            node.wait(30)
            n.say(f"\nnode stopped; its log is in {log}")


def _walk(n: Narrator, operator: ApiClient, setup: Any) -> int:
    files = {u.name: str(u.session_file) for u in setup.users}
    n.title("The operator opens both users' sessions (session_open)")
    opened = {name: operator.call("session_open", configFile=files[name])
              for name in ("alice", "bob")}
    a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
    alice = ApiClient(operator.port, opened["alice"]["token"], operator.host)
    bob = ApiClient(operator.port, opened["bob"]["token"], operator.host)
    n.say("each session comes with its own credential: from here on alice and bob use theirs")
    start = {"alice": alice.call("session_balance", sessionId=a)["balances"],
             "bob": bob.call("session_balance", sessionId=b)["balances"]}
    for name, session in (("alice", a), ("bob", b)):
        held = ", ".join(f"{amount} {currency}" for currency, amount in start[name].items())
        n.say(f"{name}'s session {session}, on-chain {held}")
    try:
        bob.call("channel_list", sessionId=a)
        n.say("bob's credential read alice's channels: that must not happen")
        return 1
    except ApiError as exc:
        n.say(f"bob's credential on alice's session: refused ({exc.error.get('message')}, "
              f"{exc.code})")
    return _channel_life(n, alice, bob, a, b, start)


def _channel_life(n: Narrator, alice: ApiClient, bob: ApiClient, a: str, b: str,
                  start: dict[str, dict[str, str]]) -> int:
    pushes = bob.pushes()
    pushes.call("subscribe", sessionId=b, topic="proposals")
    pushes.call("subscribe", sessionId=b, topic="updates")
    n.say("bob listens for pushes on ws://.../ws (subscribe proposals, updates)")

    with ThreadPoolExecutor(1) as pool:
        n.title("alice opens a channel with bob: 2 ETH and 20 PRN from her, 0.5 ETH and 5 PRN "
                "from him (PRN: the dev chain's test token)")
        params = {"sessionId": a, "peer": "bob",
                  "balances": {"ETH": {"self": "2", "peer": "0.5"},
                               "PRN": {"self": "20", "peer": "5"}}}
        n.call("alice", "channel_open", params)
        opening = pool.submit(alice.call, "channel_open", **params)
        proposal = pushes.wait(lambda p: "proposalId" in p)
        n.say(f"bob is pushed a proposal from {proposal['peer']}: {_balances(proposal)}")
        n.call("bob", "channel_respondProposal", {"accept": True})
        bob.call("channel_respondProposal", sessionId=b, proposalId=proposal["proposalId"],
                 accept=True)
        channel = opening.result(120)
        cid = channel["channelId"]
        n.say(f"both deposited ETH and PRN on-chain, each in one transaction; channel "
              f"{cid[:18]}… is {channel['phase']}")

        n.title("alice pays bob 0.3 ETH and 4 PRN, off-chain, in one update")
        started = time.perf_counter()
        paid = alice.call("channel_send", sessionId=a, channelId=cid,
                          payments=[{"currency": "ETH", "payee": "bob", "amount": "0.3"},
                                    {"currency": "PRN", "payee": "bob", "amount": "4"}])
        n.say(f"countersigned in {(time.perf_counter() - started) * 1000:.1f} ms: version "
              f"{paid['version']}, {_balances(paid)}")
        started = time.perf_counter()
        for _ in range(20):
            paid = alice.call("channel_send", sessionId=a, channelId=cid,
                            payments=[{"currency": "ETH", "payee": "bob", "amount": "0.001"}])
        elapsed = (time.perf_counter() - started) * 1000 / 20
        n.say(f"20 more payments of 0.001 ETH, {elapsed:.1f} ms each over HTTP: "
              f"version {paid['version']}")

        n.title("alice requests 0.1 ETH from bob (payee self)")
        asking = pool.submit(alice.call, "channel_send", sessionId=a, channelId=cid,
                             payments=[{"currency": "ETH", "payee": "self", "amount": "0.1"}])
        update = pushes.wait(lambda p: p.get("type") == "open")
        n.say(f"bob is pushed a {update['kind']}: {_balances(update['channel'])} if he agrees")
        n.call("bob", "channel_respondUpdate", {"accept": True})
        bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                 updateId=update["updateId"], accept=True)
        paid = asking.result(60)
        n.say(f"version {paid['version']}: {_balances(paid)}")

        n.title("alice closes the channel cooperatively (channel_close)")
        closing = pool.submit(alice.call, "channel_close", sessionId=a, channelId=cid)
        final = pushes.wait(lambda p: p.get("type") == "final")
        n.say(f"bob is pushed the final state: {_balances(final['channel'])}")
        n.call("bob", "channel_respondUpdate", {"accept": True})
        bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                 updateId=final["updateId"], accept=True)
        closed = closing.result(120)
        pushes.wait(lambda p: p.get("type") == "closed")
        n.say(f"concluded on-chain in one transaction and paid out: phase {closed['phase']}")
        n.say("bob is pushed: closed")
    pushes.close()

    n.title("On-chain balances afterwards (session_balance)")
    for name, user, sid in (("alice", alice, a), ("bob", bob, b)):
        now = user.call("session_balance", sessionId=sid)["balances"]
        n.say(f"{name}: {start[name]['ETH']} → {now['ETH']} ETH (the channel's outcome, less "
              "gas)")
        n.say(f"{' ' * len(name)}  {start[name]['PRN']} → {now['PRN']} PRN (exactly the "
              "channel's outcome: gas is paid in ETH)")
    for user, sid in ((alice, a), (bob, b)):
        user.call("session_close", sessionId=sid, force=False)
    n.say("sessions closed by their users (which ends their credentials)")
    print("\nDone. `make test` runs the whole test suite.", file=n.out, flush=True)
    return 0


def main(keep: bool = False, directory: str | None = None) -> int:
    """Run the walkthrough in `directory` (default: a new temporary folder)."""
    if directory:
        return run_walkthrough(Path(directory), sys.stdout, keep)
    with tempfile.TemporaryDirectory(prefix="perund-demo-") as folder:
        if keep:
            folder = tempfile.mkdtemp(prefix="perund-demo-")
        return run_walkthrough(Path(folder), sys.stdout, keep)


if __name__ == "__main__":
    raise SystemExit(main(keep="--keep" in sys.argv[1:]))


