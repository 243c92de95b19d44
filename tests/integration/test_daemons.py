"""Two real `twistd perund` processes on anvil, driven only through JSON-RPC and WebSocket.

Like an outside program: start the daemons, open sessions, open a channel (the proposal is
pushed and accepted), pay, request payments (pushed, accepted and rejected), close
cooperatively (closed pushed to both), close the sessions, restart and see channels restored.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from perund.cli.generate import Generated
from tests.integration.daemons import Daemon, running
from tests.node.conftest import two_nodes


@pytest.fixture
def daemons(anvil_setup: Generated, tmp_path: Path) -> Iterator[tuple[Daemon, ...]]:
    with running(*two_nodes(anvil_setup), workdir=tmp_path) as both:
        yield both


def in_background(pool: ThreadPoolExecutor, f: Callable[..., Any], *args: Any,
                  **kwargs: Any) -> Future[Any]:
    return pool.submit(f, *args, **kwargs)


@pytest.mark.anvil
@pytest.mark.slow
def test_two_daemons_through_the_api(daemons: tuple[Daemon, Daemon],
                                     anvil_setup: Generated) -> None:
    alice, bob = daemons
    files = {u.name: str(u.session_file) for u in anvil_setup.users}
    a = alice.call("session_open", configFile=files["alice"])["sessionId"]
    b = bob.call("session_open", configFile=files["bob"])["sessionId"]
    check_bad_input(alice, a)
    carol = {"alias": "carol", "offChainAddress": "0x" + "ca" * 20,
             "commAddress": "127.0.0.1:9", "commType": "tcp"}
    assert alice.call("session_addPeer", sessionId=a, peer=carol)["alias"] == "carol"
    assert {p["alias"] for p in alice.call("session_listPeers", sessionId=a)} == {"bob", "carol"}
    assert alice.request("session_addPeer", sessionId=a, peer=carol)["error"]["code"] == 202
    pushes = bob.socket()
    alice_pushes = alice.socket()
    try:
        pushes.call("subscribe", sessionId=b, topic="proposals")
        pushes.call("subscribe", sessionId=b, topic="updates")
        alice_pushes.call("subscribe", sessionId=a, topic="updates")
        with ThreadPoolExecutor(2) as pool:
            opening = in_background(pool, alice.call, "channel_open", sessionId=a, peer="bob",
                                    balances={"ETH": {"self": "5", "peer": "1"}})
            proposal = pushes.wait(lambda p: "proposalId" in p)
            assert proposal["peer"] == "alice"
            assert proposal["balances"] == {"ETH": {"self": "1", "peer": "5"}}
            bob.call("channel_respondProposal", sessionId=b, proposalId=proposal["proposalId"],
                     accept=True)
            channel = opening.result(120)
            cid = channel["channelId"]
            assert channel["phase"] == "open"

            paid = alice.call("channel_send", sessionId=a, channelId=cid,
                              payments=[{"currency": "ETH", "payee": "bob", "amount": "0.5"}])
            assert paid["balances"] == {"ETH": {"self": "4.5", "peer": "1.5"}}
            moved = pushes.wait(lambda p: p.get("type") == "updated")
            assert moved["channelId"] == cid
            assert moved["channel"]["balances"] == {"ETH": {"self": "1.5", "peer": "4.5"}}

            # A payment request: pushed to bob, accepted.
            asking = in_background(pool, alice.call, "channel_send", sessionId=a,
                                   channelId=cid, payments=[
                                       {"currency": "ETH", "payee": "self", "amount": "0.25"}])
            update = pushes.wait(lambda p: p.get("type") == "open")
            assert update["kind"] == "request"
            bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                     updateId=update["updateId"], accept=True)
            assert asking.result(60)["balances"] == {"ETH": {"self": "4.75", "peer": "1.25"}}

            # Another request, rejected by bob: alice gets PeerRejected (102).
            asking = in_background(pool, alice.request, "channel_send", sessionId=a,
                                   channelId=cid, payments=[
                                       {"currency": "ETH", "payee": "self", "amount": "1"}])
            update = pushes.wait(lambda p: p.get("type") == "open")
            bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                     updateId=update["updateId"], accept=False)
            assert asking.result(60)["error"]["code"] == 102

            # A second channel stays open across the restart.
            opening = in_background(pool, alice.call, "channel_open", sessionId=a, peer="bob",
                                    balances={"ETH": {"self": "1", "peer": "0"}})
            proposal = pushes.wait(lambda p: "proposalId" in p)
            bob.call("channel_respondProposal", sessionId=b, proposalId=proposal["proposalId"],
                     accept=True)
            kept = opening.result(120)["channelId"]

            # Cooperative close: the final update is pushed to bob, closed to both.
            closing = in_background(pool, alice.call, "channel_close", sessionId=a,
                                    channelId=cid)
            final = pushes.wait(lambda p: p.get("type") == "final")
            bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                     updateId=final["updateId"], accept=True)
            closed = closing.result(120)
            assert closed["phase"] == "closed"
            pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
            alice_pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
    finally:
        pushes.close()
        alice_pushes.close()

    # What an operator's Prometheus sees (same token): alice's own states, bob's from alice,
    # the refused request, the API calls, the open channel.
    alice_metrics, bob_metrics = scrape(alice), scrape(bob)
    assert metric(alice_metrics, 'perund_channel_states_total{source="own"}') == 3
    assert metric(bob_metrics, 'perund_channel_states_total{source="peer"}') == 3
    assert metric(alice_metrics, 'perund_updates_failed_total{failure="rejected"}') == 1
    assert metric(alice_metrics, 'perund_api_calls_total{method="channel_send",outcome="ok"}') >= 2
    assert metric(alice_metrics, 'perund_channels{phase="open"}') == 1
    assert metric(alice_metrics, 'perund_channels_closed_total') == 1
    assert metric(alice_metrics, "perund_sessions") == 1
    assert metric(alice_metrics, "perund_sessions_store_failed") == 0
    # Three deposits and a concludeFinal: alice's (she proposed the final state), or bob's when
    # a loaded machine delays hers past his fallback's wait.
    assert metric(alice_metrics, "perund_transactions") >= 2
    assert metric(alice_metrics, "perund_transactions") \
        + metric(bob_metrics, "perund_transactions") >= 4
    assert metric(alice_metrics, "perund_watcher_polls") > 0
    assert metric(alice_metrics, "perund_watcher_reorgs") == 0
    # bob fsynced each state he was paid before he countersigned it.
    assert metric(bob_metrics, "perund_store_fsync_seconds_count") >= 3
    assert metric(bob_metrics, 'perund_store_fsync_seconds_bucket{le="+Inf"}') == \
        metric(bob_metrics, "perund_store_fsync_seconds_count")
    assert metric(bob_metrics, "perund_store_fsync_seconds_sum") > 0
    # The chain answered every call of theirs in time for the channel's challenge duration.
    assert metric(alice_metrics, "perund_chain_call_seconds_count") > 0
    assert metric(alice_metrics, "perund_channels_challenge_at_risk") == 0

    refused = alice.request("session_close", sessionId=a, force=False)
    assert refused["error"]["code"] == 204
    alice.call("session_close", sessionId=a, force=True)
    bob.call("session_close", sessionId=b, force=True)
    for daemon in (alice, bob):
        daemon.stop()
        daemon.start()
    a = alice.call("session_open", configFile=files["alice"])
    b = bob.call("session_open", configFile=files["bob"])
    # The peer added through the API survived the restart.
    assert alice.call("session_getPeer", sessionId=a["sessionId"], alias="carol")["alias"] == \
        "carol"
    assert [c["channelId"] for c in a["restoredChannels"]] == [kept]
    assert [c["channelId"] for c in b["restoredChannels"]] == [kept]
    again = alice.call("channel_send", sessionId=a["sessionId"], channelId=kept,
                       payments=[{"currency": "ETH", "payee": "bob", "amount": "0.1"}])
    assert again["balances"] == {"ETH": {"self": "0.9", "peer": "0.1"}}




def scrape(daemon: Daemon) -> str:
    """GET /metrics with the token."""
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/metrics", headers={
        "Authorization": f"Bearer {daemon.api.token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        text: str = answer.read().decode()
        return text


def metric(text: str, series: str) -> float:
    """The value of `series` (name and labels as rendered) in a scrape; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def raw_post(daemon: Daemon, body: bytes, token: str | None) -> tuple[int, Any]:
    """POST `body` to /rpc as is; the HTTP status and the decoded reply (None if empty)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/rpc", data=body,
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = answer.read()
            return answer.status, json.loads(data) if data else None
    except urllib.error.HTTPError as error:
        return error.code, None


def check_bad_input(daemon: Daemon, session: str) -> None:
    """Every kind of bad input gets its error from the real node, which keeps serving."""
    token = daemon.token_path.read_text().strip()
    assert raw_post(daemon, b'{"jsonrpc": "2.0", "method": "node_time", "id": 1}', None)[0] \
        == 401
    assert raw_post(daemon, b'{"jsonrpc": "2.0", "method": "node_time", "id": 1}', "x" * 32)[0] \
        == 401
    status, reply = raw_post(daemon, b'{"jsonrpc": "2.0", "method": ', token)
    assert status == 200 and reply["error"]["code"] == -32700
    assert raw_post(daemon, b"[" + b"1," * 2_000_000 + b"1]", token)[0] == 413
    status, reply = raw_post(daemon, b"[]", token)
    assert reply["error"]["code"] == -32600
    channel = "0x" + "00" * 32
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("no_such_method", {}, -32601),
        ("session_open", {"configFile": 42}, -32602),
        ("session_open", {"configFile": "/nonexistent/session.yaml"}, 205),
        ("channel_list", {"sessionId": "0x" + "00" * 16}, 201),
        ("channel_get", {"sessionId": session, "channelId": channel}, 201),
        ("channel_respondProposal", {"sessionId": session, "proposalId": channel,
                                     "accept": True}, 201),
    ]
    for amount in ("-1", "0", "0.0000000000000000001", "1e3", "abc"):
        cases.append(("channel_send", {"sessionId": session, "channelId": channel, "payments": [
            {"currency": "ETH", "payee": "bob", "amount": amount}]}, -32602))
    for method, params, code in cases:
        reply = daemon.request(method, **params)
        assert reply["error"]["code"] == code, (method, params, reply)
        assert "Traceback" not in json.dumps(reply)
    assert daemon.call("node_time") > 0
