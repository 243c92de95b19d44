"""The perund methods through the dispatcher, over the in-memory facade: conversions, the
validation of every kind of bad input, and the error mapping."""

from __future__ import annotations

from typing import Any

import pytest

from perund.api.credentials import OPERATOR
from perund.api.method_spec import CallContext
from perund.api.schema import validate
from perund.channel.types import ETH
from perund.errors import UserResponseTimedOut
from tests.api.helpers import TOKEN_ASSET, Api
from tests.api.memfacade import RESPONSE_TIMEOUT

BOB = "0x" + "b0" * 20
CHANNEL = "0x" + "00" * 32


@pytest.fixture
def api() -> Api:
    return Api()


def result_schema(api: Api, method: str) -> dict[str, Any]:
    return next(m.result for m in api.dispatcher.methods if m.name == method)


def test_node_methods(api: Api) -> None:
    config = api.call("node_getConfig")
    validate(config, result_schema(api, "node_getConfig"))
    assert config["assets"] == {
        "ETH": {"address": "0x0000000000000000000000000000000000000000", "decimals": 18},
        "USDC": {"address": "0x" + "70" * 20, "decimals": 6}}
    # The range channel_open's challengeDuration must lie in, in seconds.
    assert (config["minChallengeDuration"], config["maxChallengeDuration"]) == (90, 30 * 86400)
    assert api.call("node_time") == api.clock.seconds()


def test_a_channel_life_and_its_rendering(api: Api) -> None:
    session, channel_id = api.session_with_peer()
    channel = api.call("channel_get", {"sessionId": session, "channelId": channel_id})
    validate(channel, result_schema(api, "channel_get"))
    assert channel["balances"] == {"ETH": {"self": "5", "peer": "5"},
                                   "USDC": {"self": "100", "peer": "0"}}
    assert channel["peer"] == "bob" and channel["peerAddress"].lower() == BOB
    sent = api.call("channel_send", {"sessionId": session, "channelId": channel_id, "payments": [
        {"currency": "ETH", "payee": "bob", "amount": "0.25"},
        {"currency": "USDC", "payee": "bob", "amount": "0.000001"},
        {"currency": "ETH", "payee": "self", "amount": "1"}]})
    assert sent["balances"] == {"ETH": {"self": "5.75", "peer": "4.25"},
                                "USDC": {"self": "99.999999", "peer": "0.000001"}}
    assert sent["version"] == 1
    # positional params, in schema order
    listed = api.call("channel_list", [session])
    assert [c["channelId"] for c in listed] == [channel_id]
    closed = api.call("channel_close", [session, channel_id])
    assert closed["phase"] == "closed" and closed["isFinal"] is True
    assert api.call("session_close", {"sessionId": session}) == []


@pytest.mark.parametrize(("extra", "requirement"), [
    ({"peerWait": -1}, "at least 0"),
    ({"peerWait": 86_401}, "at most 86400"),
    ({"peerWait": 1.5}, "integer"),
    ({"peerWait": "60"}, "integer"),
    ({"peerWait": True}, "integer"),
    ({"peerWait": 60, "force": True}, "forced close"),
])
def test_a_bad_peer_wait_is_invalid_params(api: Api, extra: dict[str, Any],
                                           requirement: str) -> None:
    session, channel_id = api.session_with_peer()
    error = api.error("channel_close", {"sessionId": session, "channelId": channel_id, **extra})
    assert error["code"] == -32602 and error["data"]["field"] == "peerWait", error
    assert requirement in error["data"]["requirement"], error
    assert api.node.peer_waits == []


def test_close_passes_its_peer_wait_on(api: Api) -> None:
    session, channel_id = api.session_with_peer()
    api.call("channel_close", {"sessionId": session, "channelId": channel_id, "peerWait": 0})
    session, channel_id = api.session_with_peer()
    api.call("channel_close", {"sessionId": session, "channelId": channel_id})
    assert api.node.peer_waits == [0, None]


def test_open_converts_balances_to_wei_by_asset_ether_first(api: Api) -> None:
    session = api.session()
    api.call("session_addPeer", {"sessionId": session, "peer": {
        "alias": "bob", "offChainAddress": BOB, "commAddress": "127.0.0.1:5002"}})
    api.call("channel_open", {"sessionId": session, "peer": BOB, "balances": {
        "USDC": {"self": "1.5", "peer": "0"}, "ETH": {"self": "0", "peer": "0.1"}}})
    stored = next(iter(api.node.sessions[bytes.fromhex(session[2:])].channels.values()))
    assert [(b.asset, b.ours, b.peer) for b in stored.balances] == [
        (ETH, 0, 10**17), (TOKEN_ASSET, 1_500_000, 0)]
    assert stored.challenge_duration == 600  # omitted: the node's default


def test_open_leaves_the_challenge_durations_range_to_the_node(api: Api) -> None:
    # The schema's 1..2**64-1 is not the node's range: the node says what that is.
    session = api.session()
    api.call("session_addPeer", {"sessionId": session, "peer": {
        "alias": "bob", "offChainAddress": BOB, "commAddress": "127.0.0.1:5002"}})
    for duration in (0, 2**64):
        api.call("channel_open", {"sessionId": session, "peer": BOB, "challengeDuration":
                                  duration, "balances": {"ETH": {"self": "1", "peer": "0"}}})
    stored = api.node.sessions[bytes.fromhex(session[2:])].channels.values()
    assert sorted(view.challenge_duration for view in stored) == [0, 2**64]


def test_open_via_an_intermediary_is_a_virtual_channel(api: Api) -> None:
    session = api.session()
    for alias, address, port in (("bob", BOB, 5002), ("ingrid", "0x" + "1b" * 20, 5003)):
        api.call("session_addPeer", {"sessionId": session, "peer": {
            "alias": alias, "offChainAddress": address, "commAddress": f"127.0.0.1:{port}"}})
    shown = api.call("channel_open", {"sessionId": session, "peer": "bob", "via": "ingrid",
                                      "balances": {"ETH": {"self": "1", "peer": "0"}}})
    assert shown["kind"] == "virtual" and shown["via"] == "ingrid"
    assert len(shown["fundedBy"]) == 2
    unknown = api.error("channel_open", {"sessionId": session, "peer": "bob", "via": "zed",
                                         "balances": {"ETH": {"self": "1", "peer": "0"}}})
    assert unknown["code"] == 201 and unknown["data"]["id"] == "zed", unknown  # no contact
    bad = api.error("channel_open", {"sessionId": session, "peer": "bob", "via": 7,
                                     "balances": {"ETH": {"self": "1", "peer": "0"}}})
    assert bad["code"] == -32602, bad


def test_max_fee_is_per_currency_in_its_unit(api: Api) -> None:
    session = api.session()
    for alias, address, port in (("bob", BOB, 5002), ("ingrid", "0x" + "1b" * 20, 5003)):
        api.call("session_addPeer", {"sessionId": session, "peer": {
            "alias": alias, "offChainAddress": address, "commAddress": f"127.0.0.1:{port}"}})
    opening = {"sessionId": session, "peer": "bob", "via": "ingrid",
               "balances": {"ETH": {"self": "1", "peer": "0"}}}
    api.call("channel_open", {**opening, "maxFee": {"ETH": "0.001", "USDC": "0"}})
    api.call("channel_open", opening)
    assert api.node.max_fees == [{ETH: 10**15, TOKEN_ASSET: 0}, None]
    for max_fee, name in (({"ETH": "-1"}, "maxFee.ETH"), ({"ETH": "1e-3"}, "maxFee.ETH"),
                          ({"ETH": "0.0000000000000000001"}, "maxFee.ETH"),
                          ({"XYZ": "1"}, "maxFee.XYZ"), ({"ETH": 1}, "maxFee.ETH"),
                          ("1", "maxFee")):
        bad = api.error("channel_open", {**opening, "maxFee": max_fee})
        assert bad["code"] == -32602 and bad["data"]["field"] == name, (max_fee, bad)


@pytest.mark.parametrize(("amount", "field_says"), [
    ("-1", "decimal amount"),
    ("1e3", "decimal amount"),
    ("abc", "decimal amount"),
    ("0.0000000000000000001", "at most 18 decimal places"),
    ("0", "above zero"),
    ("0.000", "above zero"),
    ("9" * 90, "uint256"),
    ("1" * 101, "at most 100 characters"),
    (1, "must be a string"),
    (0.5, "must be a string"),
])
def test_bad_payment_amounts_are_invalid_params(api: Api, amount: Any, field_says: str) -> None:
    session, channel_id = api.session_with_peer()
    before = list(api.node.calls)
    error = api.error("channel_send", {"sessionId": session, "channelId": channel_id,
                                       "payments": [{"currency": "ETH", "payee": "bob",
                                                     "amount": "1"},
                                                    {"currency": "ETH", "payee": "bob",
                                                     "amount": amount}]})
    assert error["code"] == -32602
    assert error["data"]["field"] == "payments[1].amount"
    assert field_says in error["data"]["requirement"]
    assert api.node.calls == before  # the node was never asked


@pytest.mark.parametrize(("balances", "field", "says"), [
    ({"ETH": {"self": "1.0000001", "peer": "0"}, "USDC": {"self": "1.0000001", "peer": "0"}},
     "balances.USDC.self", "at most 6 decimal places"),
    ({"ETH": {"self": "-1", "peer": "0"}}, "balances.ETH.self", "decimal amount"),
    ({"ETH": {"self": "1"}}, "balances.ETH.peer", "is required"),
    ({"DOGE": {"self": "1", "peer": "0"}}, "balances.DOGE", "not allowed"),
    ({}, "balances", "at least one currency"),
    ({"ETH": {"self": "0", "peer": "0.0"}}, "balances", "not every amount zero"),
])
def test_bad_open_balances_are_invalid_params(api: Api, balances: Any, field: str,
                                              says: str) -> None:
    session = api.session()
    error = api.error("channel_open", {"sessionId": session, "peer": "bob",
                                       "balances": balances})
    assert error["code"] == -32602
    assert error["data"]["field"] == field and says in error["data"]["requirement"]
    assert "channel_open" not in api.node.calls


@pytest.mark.parametrize(("params", "field"), [
    ({"sessionId": "0x00", "channelId": CHANNEL}, "sessionId"),
    ({"sessionId": "0x" + "00" * 17, "channelId": CHANNEL}, "sessionId"),
    ({"sessionId": "00" * 16, "channelId": CHANNEL}, "sessionId"),
    ({"sessionId": "0x" + "zz" * 16, "channelId": CHANNEL}, "sessionId"),
    ({"sessionId": 5, "channelId": CHANNEL}, "sessionId"),
    ({"sessionId": "0x" + "00" * 16, "channelId": "0x" + "00" * 31}, "channelId"),
    ({"sessionId": "0x" + "00" * 16, "channelId": "0x" + "00" * 32, "more": 1}, "more"),
    ({"channelId": "0x" + "00" * 32}, "sessionId"),
])
def test_malformed_ids_are_invalid_params(api: Api, params: Any, field: str) -> None:
    error = api.error("channel_get", params)
    assert error["code"] == -32602 and error["data"]["field"] == field


def test_add_peer_checks_the_address_checksum(api: Api) -> None:
    session = api.session()
    error = api.error("session_addPeer", {"sessionId": session, "peer": {
        "alias": "bob", "offChainAddress": "0x70997970C51812dc3A010C7d01b50e0d17dc79c8",
        "commAddress": "127.0.0.1:5002"}})
    assert error["code"] == -32602 and error["data"]["field"] == "peer.offChainAddress"
    assert "checksum" in error["data"]["requirement"]
    added = api.call("session_addPeer", {"sessionId": session, "peer": {
        "alias": "bob", "offChainAddress": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "commAddress": "127.0.0.1:5002", "commType": "tcp"}})
    assert added == {"alias": "bob", "offChainAddress":
                     "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                     "commAddress": "127.0.0.1:5002", "commType": "tcp"}
    assert api.call("session_getPeer", [session, "bob"]) == added
    assert api.call("session_listPeers", [session]) == [added]
    (listed,) = [s for s in api.call("session_list") if s["sessionId"] == session]
    assert listed["configFile"].endswith("session.yaml") and listed["openChannels"] == 0
    assert set(listed) == {"sessionId", "configFile", "offChainAddress", "onChainAddress",
                           "openChannels"}


def test_unknown_session_channel_proposal_update_are_201(api: Api) -> None:
    unknown_session = "0x" + "11" * 16
    error = api.error("channel_list", {"sessionId": unknown_session})
    assert error["code"] == 201 and error["data"] == {
        "category": "client", "type": "session", "id": unknown_session}
    session, channel_id = api.session_with_peer()
    other = "0x" + "22" * 32
    assert api.error("channel_get", [session, other])["data"]["type"] == "channel"
    assert api.error("channel_respondProposal", [session, other, True])["data"]["type"] \
        == "proposal"
    assert api.error("channel_respondUpdate", [session, channel_id, other, True])["data"][
        "type"] == "update"


def test_application_errors_keep_their_code_and_data(api: Api) -> None:
    error = api.error("session_open", {"configFile": "missing.yaml"})
    assert error == {"code": 205, "message": "cannot read missing.yaml",
                     "data": {"category": "client", "name": "configFile",
                              "value": "missing.yaml"}}
    session, channel_id = api.session_with_peer()
    error = api.error("session_close", {"sessionId": session})
    assert error["code"] == 204 and error["data"]["openChannels"] == [channel_id]
    error = api.error("channel_send", {"sessionId": session, "channelId": channel_id,
                                       "payments": [{"currency": "ETH", "payee": "bob",
                                                     "amount": "6"}]})
    assert error["code"] == 203


def test_internal_failures_reveal_nothing(api: Api) -> None:
    for config in ("crash", "corrupt"):
        error = api.error("session_open", {"configFile": config})
        assert error == {"code": 401, "message": "internal error",
                         "data": {"category": "internal"}}


def test_answering_after_the_expiry_is_104(api: Api) -> None:
    session, channel_id = api.session_with_peer()
    raw_session = bytes.fromhex(session[2:])
    update = api.node.peer_update(raw_session, bytes.fromhex(channel_id[2:]), ETH, -10**18)
    api.clock.advance(RESPONSE_TIMEOUT)
    error = api.error("channel_respondUpdate", [session, channel_id,
                                                "0x" + (update.update_id or b"").hex(), True])
    assert error["code"] == UserResponseTimedOut.code
    assert error["data"]["expiry"] == update.expiry


def test_subscriptions_need_a_websocket(api: Api) -> None:
    session = api.session()
    error = api.error("subscribe", {"sessionId": session, "topic": "proposals"})
    assert error["code"] == 204 and error["data"]["transport"] == "http"
    error = api.error("subscribe", {"sessionId": session, "topic": "nonsense"},
                      CallContext("ws", None, OPERATOR))
    assert error["code"] == -32602 and error["data"]["field"] == "topic"


def test_an_insufficient_balance_says_what_is_available_in_the_currencys_unit() -> None:
    api = Api()
    session, channel = api.session_with_peer()  # 5 ETH ours, 100 USDC ours
    error = api.error("channel_send", {"sessionId": session, "channelId": channel, "payments": [
        {"currency": "USDC", "payee": "bob", "amount": "100.5"}]})
    assert error["code"] == 203
    assert error["message"] == "insufficient balance: 100.5 USDC asked, 100 USDC available"
    assert error["data"]["currency"] == "USDC" and error["data"]["available"] == "100"
