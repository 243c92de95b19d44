"""Credentials over a real `twistd -n perund`: alice's session credential is refused on every
method of bob's session, over HTTP and over /ws, and nothing of bob's changes; a made-up
credential is HTTP 401; the operator's token still does everything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from perund.cli.apiclient import ApiClient, ApiError, AuthFailed
from perund.cli.generate import Generated
from perund.errors import Unauthorized
from tests.integration.daemons import Daemon, open_channel, running


def _on_bobs_session(bob: str, channel: str) -> dict[str, dict[str, Any]]:
    """Valid params of every method that names a session, aimed at bob's. IDs bob does not
    have are fine: the credential is checked before anything is looked up."""
    some_id = "0x" + os.urandom(32).hex()
    token_id = "0x" + os.urandom(16).hex()
    return {
        "session_close": {"sessionId": bob, "force": True},
        "session_addPeer": {"sessionId": bob, "peer": {
            "alias": "mallory", "offChainAddress": "0x" + "0d" * 20,
            "commAddress": "127.0.0.1:9"}},
        "session_getPeer": {"sessionId": bob, "alias": "alice"},
        "session_listPeers": {"sessionId": bob},
        "session_balance": {"sessionId": bob},
        "channel_open": {"sessionId": bob, "peer": "alice",
                         "balances": {"ETH": {"self": "1", "peer": "0"}}},
        "channel_respondProposal": {"sessionId": bob, "proposalId": some_id, "accept": True},
        "channel_list": {"sessionId": bob},
        "channel_listRetired": {"sessionId": bob},
        "channel_get": {"sessionId": bob, "channelId": channel},
        "channel_send": {"sessionId": bob, "channelId": channel, "payments": [
            {"currency": "ETH", "payee": "alice", "amount": "0.5"}]},
        "channel_respondUpdate": {"sessionId": bob, "channelId": channel, "updateId": some_id,
                                  "accept": True},
        "channel_close": {"sessionId": bob, "channelId": channel, "force": True},
        "subscribe": {"sessionId": bob, "topic": "updates"},
        "session_createToken": {"sessionId": bob, "scope": "session"},
        "session_listTokens": {"sessionId": bob},
        "session_revokeToken": {"sessionId": bob, "tokenId": token_id},
        "session_rotateToken": {"sessionId": bob, "tokenId": token_id},
        "payment_list": {"sessionId": bob},
        "payment_get": {"sessionId": bob, "paymentId": 0},
    }


def _bobs_state(bob_api: ApiClient, bob: str) -> Any:
    return (bob_api.call("channel_list", sessionId=bob),
            bob_api.call("session_listPeers", sessionId=bob),
            bob_api.call("session_listTokens", sessionId=bob))


@pytest.mark.anvil
def test_alices_credential_reaches_nothing_of_bobs(anvil_setup: Generated,
                                                   tmp_path: Path) -> None:
    with running(anvil_setup.node_config, workdir=tmp_path) as (node,):
        _check(node, {u.name: str(u.session_file) for u in anvil_setup.users})


def _check(node: Daemon, files: dict[str, str]) -> None:
    opened = {name: node.call("session_open", configFile=files[name]) for name in files}
    a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
    alice = ApiClient(node.port, opened["alice"]["token"])
    bob = ApiClient(node.port, opened["bob"]["token"])

    channel = open_channel(node, a, b, "2", "1")

    # The methods that take a session are exactly those of the matrix (a new one must be added).
    described = node.call("rpc.discover")["methods"]
    with_session = {m["name"] for m in described
                    if any(p["name"] == "sessionId" for p in m["params"])}
    matrix = _on_bobs_session(b, channel)
    assert with_session == set(matrix)

    before = _bobs_state(bob, b)
    for method, params in matrix.items():
        reply = alice.request(method, **params)
        assert reply.get("error", {}).get("code") == Unauthorized.code, (method, reply)
    socket = alice.pushes()
    try:
        for method, params in matrix.items():
            with pytest.raises(ApiError) as refused:
                socket.call(method, **params)
            assert refused.value.code == Unauthorized.code, method
        assert socket.call("channel_list", sessionId=a)[0]["channelId"] == channel
    finally:
        socket.close()
    assert _bobs_state(bob, b) == before

    made_up = ApiClient(node.port, "pdt_" + os.urandom(16).hex() + "_" + "A" * 43)
    with pytest.raises(AuthFailed):
        made_up.call("node_time")
    # The operator still does everything, bob's session included.
    assert node.call("channel_get", sessionId=b, channelId=channel)["phase"] == "open"
    paid = node.call("channel_send", sessionId=b, channelId=channel,
                     payments=[{"currency": "ETH", "payee": "alice", "amount": "0.25"}])
    assert paid["balances"]["ETH"] == {"self": "0.75", "peer": "2.25"}
