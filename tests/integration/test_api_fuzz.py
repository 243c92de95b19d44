"""Random calls from the holder of one user's credential, over a real `twistd perund`.

Every method the node describes (`rpc.discover`) is called with params drawn from its own
schema, and from near it: the session's and its channel's real IDs and their case variants,
other users' IDs, made-up ones, amounts at and beyond the balances and the wei, peers that exist
and don't, session files the node must not read, junk of every JSON type, params by position,
batches; over HTTP, then over one WebSocket. Whatever comes, each answer is a JSON-RPC one (or
HTTP 401 for a made-up token), never the internal error a bug gets, and quotes no credential and
no file's contents; the node logs no traceback; afterwards both users see the same channel
holding all its money, and it still pays.

The seeds are fixed: a failure is reproducible, and the campaign's output names the call.
"""

from __future__ import annotations

import http.client
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from perund.cli.apiclient import ApiClient, Pushes
from perund.errors import Internal
from tests.integration.daemons import Daemon, generated, open_channel, running

CALLS_PER_SEED = 800
CALLS_OVER_WS = 300
SEEDS = (1, 2)
MADE_UP_TOKEN = "made-up-token-0123456789abcdef"
DESTRUCTIVE = {"session_close", "session_revokeToken", "session_rotateToken", "channel_close"}
"""Methods never aimed at the real sessions and channel: revoking our own token or closing our
own session ends the campaign early, and closing the channel waits out its challenge period."""


class Campaign:
    """The values the calls draw from, and the checks on every answer."""

    def __init__(self, rng: random.Random, node: Daemon, alice: dict[str, Any],
                 bob: dict[str, Any], channel: str, files: dict[str, str]) -> None:
        self.rng, self.node, self.channel = rng, node, channel
        self.alice, self.bob = alice, bob
        self.secrets = [alice["token"], bob["token"], node.api.token]
        shouted = "0x" + alice["sessionId"][2:].upper()
        self.sessions: list[str] = [alice["sessionId"], bob["sessionId"], shouted,
                                    "0x" + "00" * 16, self.hex(16)]
        self.channels: list[str] = [channel, "0x" + channel[2:].upper(), "0x" + "00" * 32,
                                    self.hex(32)]
        self.peers = ["bob", "Bob", "alice", "self", "carol", "a" * 64, "_", "bob.",
                      "0x" + "00" * 20, self.hex(20)]
        self.amounts = ["0", "1", "0.5", "0.000000000000000001", "0.0000000000000000001",
                        "9" * 99, "1" + "0" * 60, "11", "1.0", "0." + "0" * 98 + "1"]
        data = node.token_path.parent
        self.files: list[str] = [files["alice"], files["bob"], "/etc/passwd", str(node.token_path),
                      str(data), str(node.config), "../../etc/shadow", "/dev/zero",
                      "/proc/self/environ", "nope.yaml", ""]
        self.junk: list[Any] = [None, True, 0, -1, 1.5, 2**256, -(2**300), 1e308, "", "x" * 5000,
                                "\u0000", "\U0001F600" * 20, [], [1, [2]], {}, {"a": {"b": []}},
                                "0x", "0x" + "g" * 64, " " + alice["sessionId"]]

    def hex(self, size: int) -> str:
        return "0x" + self.rng.randbytes(size).hex()

    def value(self, schema: dict[str, Any], name: str) -> Any:
        """A value for `schema`: mostly of its shape, sometimes just off it."""
        rng = self.rng
        if rng.random() < 0.03:
            return rng.choice(self.junk)
        if "enum" in schema:
            options = list(schema["enum"])
            if rng.random() < 0.1:
                return rng.choice(["", "nope", str(options[0]).upper()])
            return rng.choice(options)
        kind = schema.get("type")
        if kind == "string":
            return self.string(schema, name)
        if kind == "integer":
            low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**256)
            return rng.choice([low, high, low - 1, high + 1, 0, 1, rng.randint(low, high)])
        if kind == "number":
            return rng.choice([0, -1, 1.5, 1e308, -1e308, 1_700_000_000, 4_000_000_000])
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "array":
            return [self.value(schema.get("items", {}), name)
                    for _ in range(rng.randint(0, schema.get("maxItems", 3) + 1))]
        if kind == "object":
            return self.object(schema)
        return rng.choice(self.junk)

    def string(self, schema: dict[str, Any], name: str) -> str:
        pattern, rng = schema.get("pattern", ""), self.rng
        if "{32}" in pattern:
            return rng.choice(self.sessions)
        if "{64}" in pattern:
            return rng.choice(self.channels)
        if "[0-9]*)" in pattern:
            return rng.choice(self.amounts)
        if "A-Za-z0-9_]" in pattern:
            return rng.choice(self.peers)
        if name == "configFile":
            return rng.choice(self.files)
        if name in ("tokenId", "updateId", "proposalId"):
            return rng.choice([self.hex(8), self.hex(16), self.hex(32), "abc"])
        size = rng.randint(0, min(schema.get("maxLength", 40) + 2, 200))
        return "".join(rng.choice("ab01-_.:/\\%$ é\n\u202e") for _ in range(size))

    def object(self, schema: dict[str, Any]) -> dict[str, Any]:
        rng, required = self.rng, set(schema.get("required", ()))
        drawn = {key: self.value(sub, key) for key, sub in schema.get("properties", {}).items()
                 if (key in required and rng.random() < 0.95) or rng.random() < 0.5}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for _ in range(rng.randint(0, 3)):
                drawn[rng.choice(["ETH", "PRN", "DAI", "eth"])] = self.value(extra, "")
        if rng.random() < 0.05:
            drawn["unexpected"] = 1
        return drawn

    def params(self, method: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        drawn = {p["name"]: self.value(p["schema"], p["name"]) for p in method.get("params", ())
                 if (p.get("required") and rng.random() < 0.98) or rng.random() < 0.5}
        if method["name"] == "channel_send" and rng.random() < 0.5:
            drawn["payments"] = [{"currency": rng.choice(["ETH", "PRN"]),
                                  "payee": rng.choice(["bob", "self", "alice"]),
                                  "amount": rng.choice(["0.001", "1", "0", "10", "11"])}
                                 for _ in range(rng.randint(1, 3))]
        if method["name"] in DESTRUCTIVE:
            ours = {s.lower() for s in self.sessions[:3]}
            if str(drawn.get("sessionId", "")).lower() in ours:
                drawn["sessionId"] = "0x" + "00" * 16
        return drawn

    def body(self, method: dict[str, Any], call_id: int) -> str:
        rng, params = self.rng, self.params(method)
        request: Any = {"jsonrpc": "2.0", "id": call_id, "method": method["name"],
                        "params": params}
        shape = rng.random()
        if shape < 0.08:
            request["params"] = list(params.values())
        elif shape < 0.1:
            request["params"] = rng.choice(self.junk)
        elif shape < 0.12:
            request = rng.choice([[request, request], [], {"jsonrpc": "2.0"}, {"id": call_id}])
        return json.dumps(request)

    def check(self, body: str, token: str, status: int, data: bytes) -> None:
        """The answer to `body`, sent with `token`, is a proper one."""
        said = data.decode("utf-8", "replace")
        for secret in self.secrets:
            assert secret not in said, f"{body[:300]} quoted a credential"
        for content in ("root:x:0", "ciphertext", "PATH="):
            assert content not in said, f"{body[:300]} quoted a file's contents: {said[:300]}"
        if token == MADE_UP_TOKEN:
            assert status == 401, (body[:300], status, said[:300])
            return
        assert status in (200, 204), (body[:300], status, said[:300])
        if status == 204:
            return  # notifications only: nothing to answer
        replies = json.loads(data)
        for reply in replies if isinstance(replies, list) else [replies]:
            assert reply["jsonrpc"] == "2.0" and ("result" in reply) != ("error" in reply), reply
            if "error" in reply:
                assert reply["error"]["code"] != Internal.code, \
                    f"{body[:400]} met a bug: see the node's log:\n" \
                    + self.node.log.read_text()[-3000:]


def _answer(socket: Pushes) -> bytes:
    """The next message on the socket that answers a call (pushes are skipped)."""
    while True:
        data = socket.ws.recv(timeout=60)
        raw = data.encode() if isinstance(data, str) else data
        message = json.loads(raw)
        if isinstance(message, list) or "id" in message:
            return raw


def _node_with_short_answers(folder: Path) -> tuple[Path, dict[str, str]]:
    """One node (alice and bob), whose users have 1 s to answer a proposal or an update: a call
    that waits for the other user (a payment request, a proposal) returns soon."""
    setup = generated(folder)
    node = yaml.safe_load(setup.node_config.read_text())
    node["timeouts"] = {**node.get("timeouts", {}), "response": "1s"}
    setup.node_config.write_text(yaml.safe_dump(node))
    return setup.node_config, {u.name: str(u.session_file) for u in setup.users}


@pytest.mark.parametrize("seed", SEEDS)
def test_random_calls_with_one_users_credential_meet_clear_errors_and_lose_nothing(
        tmp_path: Path, seed: int) -> None:
    config, files = _node_with_short_answers(tmp_path / "setup")
    with running(config, workdir=tmp_path) as (node,):
        alice = node.call("session_open", configFile=files["alice"])
        bob = node.call("session_open", configFile=files["bob"])
        channel = open_channel(node, alice["sessionId"], bob["sessionId"], "10", "1")
        methods = node.call("rpc.discover")["methods"]
        campaign = Campaign(random.Random(seed), node, alice, bob, channel, files)
        tokens = [alice["token"]] * 8 + [node.api.token, MADE_UP_TOKEN]
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
        for call_id in range(CALLS_PER_SEED):
            method = campaign.rng.choice(methods)
            if method["name"] == "channel_close":
                continue  # on the real channel it waits out the challenge period
            body, token = campaign.body(method, call_id), campaign.rng.choice(tokens)
            connection.request("POST", "/rpc", body=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            answer = connection.getresponse()
            campaign.check(body, token, answer.status, answer.read())
        connection.close()
        # The same over one WebSocket holding alice's credential (its connection's own).
        socket = ApiClient(node.port, alice["token"]).pushes()
        for call_id in range(CALLS_OVER_WS):
            method = campaign.rng.choice(methods)
            if method["name"] == "channel_close":
                continue
            body = campaign.body(method, call_id)
            socket.ws.send(body)
            campaign.check(body, alice["token"], 200, _answer(socket))
        socket.close()

        ours = node.call("channel_get", sessionId=alice["sessionId"], channelId=channel)
        theirs = node.call("channel_get", sessionId=bob["sessionId"], channelId=channel)
        assert ours["phase"] == theirs["phase"] == "open"
        assert ours["version"] == theirs["version"]
        mine, peers = ours["balances"]["ETH"]["self"], ours["balances"]["ETH"]["peer"]
        assert (theirs["balances"]["ETH"]["self"], theirs["balances"]["ETH"]["peer"]) \
            == (peers, mine)
        assert Decimal(mine) + Decimal(peers) == 11
        payer, payee = (alice, "bob") if Decimal(mine) > 0 else (bob, "alice")
        node.call("channel_send", sessionId=payer["sessionId"], channelId=channel,
                  payments=[{"currency": "ETH", "payee": payee, "amount": "0.000000000000000001"}])
        after = node.call("channel_get", sessionId=alice["sessionId"], channelId=channel)
        assert after["version"] == ours["version"] + 1
