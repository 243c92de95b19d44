"""payment_list and payment_get through the dispatcher: pages newest first, filters, cursors,
bad input, and the `payments` push topic."""

from __future__ import annotations

from typing import Any

from perund.api.hub import PAYMENTS
from perund.errors import InvalidArgument, ResourceNotFound
from tests.api.helpers import Api


def _pay(api: Api, session: str, channel: str, currency: str, payee: str,
         amount: str) -> None:
    api.call("channel_send", {"sessionId": session, "channelId": channel, "payments": [
        {"currency": currency, "payee": payee, "amount": amount}]})


def _paid() -> tuple[Api, str, str]:
    api = Api()
    session, channel = api.session_with_peer()
    for amount in ("0.1", "0.2", "0.3"):
        _pay(api, session, channel, "ETH", "bob", amount)
    _pay(api, session, channel, "USDC", "bob", "1.5")
    _pay(api, session, channel, "ETH", "self", "0.05")
    return api, session, channel


def test_payments_are_listed_newest_first_with_every_field() -> None:
    api, session, channel = _paid()
    page = api.call("payment_list", {"sessionId": session})
    assert page["nextCursor"] is None
    shown = [(p["direction"], p["currency"], p["amount"], p["request"])
             for p in page["payments"]]
    assert shown == [("received", "ETH", "0.05", True), ("sent", "USDC", "1.5", False),
                     ("sent", "ETH", "0.3", False), ("sent", "ETH", "0.2", False),
                     ("sent", "ETH", "0.1", False)]
    newest = page["payments"][0]
    assert newest["channelId"] == channel and newest["peer"] == "bob"
    assert newest["peerAddress"].lower() == "0x" + "b0" * 20
    assert newest["status"] == "paid" and newest["reference"] is None
    assert newest["time"] == api.clock.seconds()
    assert api.call("payment_get", {"sessionId": session, "paymentId": newest["paymentId"]}) \
        == newest


def test_a_reference_travels_with_the_payment() -> None:
    api = Api()
    session, channel = api.session_with_peer()
    api.call("channel_send", {"sessionId": session, "channelId": channel, "reference": "inv-9",
                              "payments": [{"currency": "ETH", "payee": "bob", "amount": "1"}]})
    listed = api.call("payment_list", {"sessionId": session})["payments"]
    assert [p["reference"] for p in listed] == ["inv-9"]
    too_long = api.error("channel_send", {
        "sessionId": session, "channelId": channel, "reference": "x" * 129,
        "payments": [{"currency": "ETH", "payee": "bob", "amount": "1"}]})
    assert too_long["code"] == -32602 and too_long["data"]["field"] == "reference"
    # It reaches the payee's screen and spreadsheet: no escapes, line breaks, direction marks.
    for bad in ("INV\x1b[2J", "a\r\nfake line", "x\u202ey", "nul\x00", "c1\x9b"):
        refused = api.error("channel_send", {
            "sessionId": session, "channelId": channel, "reference": bad,
            "payments": [{"currency": "ETH", "payee": "bob", "amount": "1"}]})
        assert refused["code"] == InvalidArgument.code and refused["data"]["name"] == "reference"
    api.call("channel_send", {"sessionId": session, "channelId": channel,
                              "reference": "Rechnung Nr. 7 — 東京 👩‍💻",
                              "payments": [{"currency": "ETH", "payee": "bob", "amount": "1"}]})


def test_filters_and_pages() -> None:
    api, session, channel = _paid()

    def amounts(**params: Any) -> list[str]:
        page = api.call("payment_list", {"sessionId": session, **params})
        return [p["amount"] for p in page["payments"]]

    assert amounts(currency="USDC") == ["1.5"]
    assert amounts(direction="received") == ["0.05"]
    assert amounts(channelId=channel, peer="bob", direction="sent", currency="ETH") == [
        "0.3", "0.2", "0.1"]
    assert amounts(peer="0x" + "b0" * 20, limit=2) == ["0.05", "1.5"]
    assert amounts(channelId="0x" + "11" * 32) == []
    assert amounts(since=api.clock.seconds() + 1) == []
    assert amounts(until=api.clock.seconds()) == []

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"sessionId": session, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.call("payment_list", params)
        seen += [p["amount"] for p in page["payments"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["0.05", "1.5", "0.3", "0.2", "0.1"]


def test_bad_input_is_a_clear_error() -> None:
    api, session, _ = _paid()
    for params, code, field in (
            ({"limit": 0}, -32602, "limit"),
            ({"limit": 1001}, -32602, "limit"),
            ({"direction": "sideways"}, -32602, "direction"),
            ({"currency": "BTC"}, -32602, "currency"),
            ({"cursor": "not a cursor"}, InvalidArgument.code, "cursor"),
            ({"cursor": "x" * 65}, -32602, "cursor"),
            ({"peer": "nobody"}, ResourceNotFound.code, None),
            ({"since": "yesterday"}, -32602, "since"),
            ({"since": 10**400}, InvalidArgument.code, None),  # no float: once an internal error
            ({"until": -(10**400)}, InvalidArgument.code, None)):
        error = api.error("payment_list", {"sessionId": session, **params})
        assert error["code"] == code, (params, error)
        if code == -32602:
            assert error["data"]["field"] == field
    missing = api.error("payment_get", {"sessionId": session, "paymentId": 99})
    assert missing["code"] == ResourceNotFound.code and missing["data"]["type"] == "payment"
    assert api.error("payment_get", {"sessionId": session, "paymentId": -1})["code"] == -32602


def test_the_payments_topic_pushes_each_new_entry_to_its_subscribers_only() -> None:
    api, session, channel = _paid()
    hub = api.hubs.attach(bytes.fromhex(session[2:]))
    got: list[Any] = []
    hub.subscribe(PAYMENTS, None, got.append)
    mine: list[Any] = []
    hub.subscribe(PAYMENTS, bytes.fromhex("11" * 32), mine.append)
    _pay(api, session, channel, "ETH", "bob", "0.4")
    assert [p.to_json(api.currencies)["amount"] for p in got] == ["0.4"]
    assert mine == []
    assert hub.cached() == []  # never cached: payment_list has them


def test_payments_and_reads_write_no_log_line_unless_they_fail() -> None:
    from twisted.logger import globalLogPublisher

    api = Api()
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        session, channel = api.session_with_peer()
        _pay(api, session, channel, "ETH", "bob", "0.1")
        api.call("payment_list", {"sessionId": session})
        api.call("node_time")
        api.error("channel_send", {"sessionId": session, "channelId": channel, "payments": [
            {"currency": "ETH", "payee": "bob", "amount": "1000"}]})
    finally:
        globalLogPublisher.removeObserver(seen.append)
    logged = [(e["method"], e["outcome"]) for e in seen
              if e.get("log_namespace") == "perund.api" and "duration_ms" in e]
    assert logged == [("session_open", "ok"), ("session_addPeer", "ok"), ("channel_open", "ok"),
                      ("channel_send", f"error {InvalidArgument.code}")]
