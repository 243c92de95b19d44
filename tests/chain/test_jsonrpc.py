"""The JSON-RPC transport over HTTP, and the client's decoding of what a node answers: keep-alive,
dropped connections, batches, error objects, and replies that are not what they should be."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
from web3._utils.error_formatters_utils import raise_contract_logic_error_on_revert
from web3.exceptions import ContractLogicError

from perund.chain.abi import ContractCodec
from perund.chain.artifact import load_artifact
from perund.chain.client import ChainClient
from perund.chain.jsonrpc import Answer, HttpTransport
from perund.chain.reverts import is_revert, revert_data
from perund.chain.urls import shown_url
from perund.channel.types import Address
from perund.errors import (
    ChainNotReachable,
    ChainRpcError,
    InvalidConfig,
    ProtocolError,
)

from .scripted_node import Reply, answer, error, scripted_node

TX_HASH = "0x" + "ab" * 32
ADDRESS = Address(b"\x11" * 20)


def _echo_method(request: Any, use: int) -> Reply:
    return 200, answer(request, request["method"])


def test_one_keep_alive_connection_per_thread() -> None:
    with scripted_node(_echo_method) as node:
        transport = HttpTransport(node.url, timeout=5)
        assert [transport.request(f"m{i}", []) for i in range(5)] == [f"m{i}" for i in range(5)]
        assert node.connections == 1
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(transport.request("t", [])))
        worker.start()
        worker.join()
        assert results == ["t"] and node.connections == 2
        transport.close()


def test_a_connection_the_node_closed_while_idle_is_replaced() -> None:
    def once_per_connection(request: Any, use: int) -> Reply:
        return (200, answer(request, use)) if use == 1 else None

    with scripted_node(once_per_connection) as node:
        transport = HttpTransport(node.url, timeout=5)
        # The node drops each connection when a second request arrives on it: the transport
        # sends that request once more on a new connection, and it is answered there.
        assert [transport.request("eth_blockNumber", []) for _ in range(3)] == [1, 1, 1]
        assert node.connections == 3
        transport.close()


def test_a_connection_closed_after_its_answer_is_not_reused() -> None:
    with scripted_node(lambda request, use: (200, answer(request, use), True)) as node:
        transport = HttpTransport(node.url, timeout=5)
        for count in range(1, 4):
            assert transport.request("eth_blockNumber", []) == 1
            # Once the node has closed it, the transport must notice before it sends again.
            node.wait_closed(count)
        assert (len(node.requests), node.connections) == (3, 3)
        transport.close()


def test_a_fresh_connection_dropped_is_not_retried() -> None:
    with scripted_node(lambda request, use: None) as node:
        transport = HttpTransport(node.url, timeout=5)
        with pytest.raises(OSError):
            transport.request("eth_chainId", [])
        assert len(node.requests) == 1
        client = ChainClient(transport, ContractCodec(load_artifact().abi))
        with pytest.raises(ChainNotReachable) as raised:
            client.chain_id_blocking()
        assert raised.value.data["chainUrl"] == node.url


def test_error_objects_carry_code_message_and_data() -> None:
    def reverting(request: Any, use: int) -> Reply:
        return 200, error(request, 3, "execution reverted", data="0xdeadbeef")

    with scripted_node(reverting) as node, pytest.raises(ChainRpcError) as raised:
        HttpTransport(node.url).request("eth_call", [{}, "latest"])
    failure = raised.value
    assert (failure.rpc_code, failure.rpc_message, failure.rpc_data, failure.has_data) \
        == (3, "execution reverted", "0xdeadbeef", True)
    assert isinstance(failure, ProtocolError)
    assert revert_data(failure) == bytes.fromhex("deadbeef") and is_revert(failure)


def test_batches_are_one_request_and_answers_find_their_calls() -> None:
    def batch(request: Any, use: int) -> Reply:
        replies = [json.loads(answer(r, r["params"][0])) for r in request]
        replies[1] = json.loads(error(request[1], -32000, "nope"))
        return 200, json.dumps(list(reversed(replies))).encode()

    with scripted_node(batch) as node:
        answers = HttpTransport(node.url).batch([("a", [1]), ("b", [2]), ("c", [3])])
        assert len(node.requests) == 1
    assert answers is not None
    assert [a.result for a in answers] == [1, None, 3]
    assert answers[1].error is not None and answers[1].error.rpc_message == "nope"
    assert answers[0] == Answer(result=1)


def test_a_node_without_batches_gets_none_back() -> None:
    with scripted_node(lambda request, use: (200, json.dumps(
            {"jsonrpc": "2.0", "id": None,
             "error": {"code": -32600, "message": "batches are off"}}).encode())) as node:
        assert HttpTransport(node.url).batch([("a", []), ("b", [])]) is None


@pytest.mark.parametrize("body", [
    b"<html>gateway</html>",
    b'{"jsonrpc": "2.0", "id": 999, "result": 1}',
    b'{"jsonrpc": "2.0", "id": 1}',
    b'{"jsonrpc": "2.0", "id": 1, "error": "bad"}',
    b'{"jsonrpc": "2.0", "id": 1, "error": {"code": "3", "message": "x"}}',
    b"[1, 2]",
])
def test_replies_that_are_not_json_rpc_are_protocol_errors(body: bytes) -> None:
    with scripted_node(lambda request, use: (200, body)) as node, \
            pytest.raises(ProtocolError) as raised:
        HttpTransport(node.url).request("eth_chainId", [])
    assert not isinstance(raised.value, ChainNotReachable)
    assert "malformed reply to eth_chainId" in str(raised.value)


def test_an_http_error_status_is_not_reachable() -> None:
    with scripted_node(lambda request, use: (503, b"busy")) as node:
        client = ChainClient(HttpTransport(node.url), ContractCodec(load_artifact().abi))
        with pytest.raises(ChainNotReachable) as raised:
            client.block_number_blocking()
    assert "503" in str(raised.value)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8546", "ftp://x", "http://", "http://h:99999"])
def test_urls_the_client_cannot_use_are_invalid_config(url: str) -> None:
    with pytest.raises(InvalidConfig) as raised:
        HttpTransport(url)
    assert raised.value.data["name"] == "chain.url"


def test_credentials_in_the_url_become_basic_auth() -> None:
    seen: list[str] = []

    with scripted_node(_echo_method) as node:
        url = node.url.replace("http://", "http://user:p%40ss@")
        transport = HttpTransport(url)
        original = transport._headers
        seen.append(original["Authorization"])
        assert transport.request("x", []) == "x"
    assert seen == ["Basic dXNlcjpwQHNz"]  # base64 of user:p@ss


# The client: every reply is decoded from the JSON-RPC format, and what does not decode is a
# ProtocolError naming the node, never a KeyError or ValueError.

GOOD = {
    "eth_chainId": "0x7a69",
    "eth_blockNumber": "0x10",
    "eth_getBlockByNumber": {"hash": "0x" + "cd" * 32, "timestamp": "0x6553f100",
                             "baseFeePerGas": "0x3b9aca00"},
    "eth_getTransactionReceipt": {
        "transactionHash": TX_HASH, "blockNumber": "0x10", "status": "0x1",
        "gasUsed": "0x5208", "effectiveGasPrice": "0x77359400", "contractAddress": None,
        "logs": [{"address": "0x" + "11" * 20, "topics": ["0x" + "01" * 32],
                  "data": "0x", "blockNumber": "0x10", "logIndex": "0x0",
                  "transactionHash": TX_HASH}],
    },
}


def _client_answering(replies: dict[str, Any]) -> Any:
    def respond(request: Any, use: int) -> Reply:
        return 200, answer(request, replies[request["method"]])
    return scripted_node(respond)


def test_good_replies_decode() -> None:
    with _client_answering(GOOD) as node:
        client = ChainClient(HttpTransport(node.url), ContractCodec(load_artifact().abi))
        assert client.chain_id_blocking() == 31337
        assert client.block_number_blocking() == 16
        assert client.block_hash_blocking(16) == b"\xcd" * 32
        assert client.block_timestamp_blocking() == 0x6553F100
        receipt = client.receipt_blocking(bytes.fromhex(TX_HASH[2:]))
    assert receipt is not None
    assert (receipt.status, receipt.gas_used, receipt.effective_gas_price, receipt.block_number) \
        == (1, 21_000, 2 * 10**9, 16)
    assert receipt.logs[0].address == ADDRESS and receipt.logs[0].topics == (b"\x01" * 32,)


@pytest.mark.parametrize(("method", "reply"), [
    ("eth_chainId", 31337),
    ("eth_chainId", "0x"),
    ("eth_chainId", "0xzz"),
    ("eth_chainId", "0x" + "f" * 65),
    ("eth_blockNumber", None),
    ("eth_getBlockByNumber", {"hash": "0x12"}),
    ("eth_getBlockByNumber", {"timestamp": "0x1"}),
    ("eth_getBlockByNumber", ["not", "a", "block"]),
    ("eth_getTransactionReceipt", dict(GOOD["eth_getTransactionReceipt"], status="yes")),
    ("eth_getTransactionReceipt", dict(GOOD["eth_getTransactionReceipt"], logs={})),
    ("eth_getTransactionReceipt", {k: v for k, v in GOOD["eth_getTransactionReceipt"].items()
                                   if k != "gasUsed"}),
    ("eth_getTransactionReceipt", dict(GOOD["eth_getTransactionReceipt"],
                                       logs=[{"address": "0x11"}])),
    ("eth_getTransactionReceipt", dict(GOOD["eth_getTransactionReceipt"],
                                       contractAddress="0x1234")),
    # Another transaction's receipt: its events would be taken for ours.
    ("eth_getTransactionReceipt", dict(GOOD["eth_getTransactionReceipt"],
                                       transactionHash="0x" + "cd" * 32)),
])
def test_malformed_replies_are_protocol_errors(method: str, reply: Any) -> None:
    with _client_answering(dict(GOOD, **{method: reply})) as node:
        client = ChainClient(HttpTransport(node.url), ContractCodec(load_artifact().abi))
        with pytest.raises(ProtocolError) as raised:
            client.chain_id_blocking()
            client.block_number_blocking()
            client.block_hash_blocking(16)
            client.block_timestamp_blocking()
            client.receipt_blocking(bytes.fromhex(TX_HASH[2:]))
    assert node.url in str(raised.value)
    assert type(raised.value) is ProtocolError


# Revert detection: exactly web3's rules (what the client used before), so every node's way of
# reporting a revert is still one.

ERRORS = [
    {"code": 3, "message": "execution reverted", "data": "0x08c379a0" + "00" * 64},
    {"code": 3, "message": "execution reverted: no", "data": "0x"},
    {"code": -32000, "message": "execution reverted"},
    {"code": -32000, "message": "execution reverted: because"},
    {"code": -32015, "message": "VM Exception", "data": "0xabcdef0123"},
    {"code": -32000, "message": "x", "data": "Reverted 0x616263"},
    {"code": -32000, "message": "x", "data": None},
    {"code": -32000, "message": "x", "data": {"data": "0x12345678aa"}},
    {"code": -32000, "message": "", "data": {"data": "0x12345678aa"}},
    {"code": -32000, "message": "insufficient funds for gas * price + value"},
    {"code": -32602, "message": "invalid argument 0"},
    {"code": -32000, "message": "nonce too low", "data": "0x"},
    {"code": 3, "message": ""},
    {"code": -32000, "message": "x", "data": 5},
]


@pytest.mark.parametrize("rpc_error", ERRORS)
def test_reverts_are_told_from_refusals_as_web3_tells_them(rpc_error: dict[str, Any]) -> None:
    ours = ChainRpcError("eth_call", rpc_error["code"], rpc_error["message"],
                         rpc_data=rpc_error.get("data"), has_data="data" in rpc_error)
    try:
        raise_contract_logic_error_on_revert({"jsonrpc": "2.0", "id": 1,  # type: ignore[typeddict-item]
                                              "error": rpc_error})
        web3_says_revert = False
    except ContractLogicError:
        web3_says_revert = True
    assert is_revert(ours) == web3_says_revert


def test_a_urls_key_and_password_reach_the_node_and_no_error() -> None:
    """Hosted nodes take an API key in the path or the query, and a URL may hold a user and a
    password: the node is sent them, errors and logs show scheme, host and port only."""
    with scripted_node(lambda request, use: (200, b'"not an object"')) as node:
        host = node.url.removeprefix("http://")
        url = f"http://someuser:S3CRET@{host}/v3/PATHKEY?token=QUERYKEY"
        transport = HttpTransport(url, timeout=5)
        assert transport.url == node.url + "/…"
        client = ChainClient(transport, ContractCodec(load_artifact().abi))
        with pytest.raises(ProtocolError) as raised:
            client.chain_id_blocking()
        assert node.targets == [("/v3/PATHKEY?token=QUERYKEY",
                                 "Basic " + base64.b64encode(b"someuser:S3CRET").decode())]
        _assert_no_secret(raised.value)
        node_url = node.url
    # The node is gone now: not reachable, and still no secret in what is said.
    with pytest.raises(ChainNotReachable) as unreachable:
        ChainClient(HttpTransport(url, timeout=2), ContractCodec(load_artifact().abi)) \
            .chain_id_blocking()
    _assert_no_secret(unreachable.value)
    assert unreachable.value.data["chainUrl"] == node_url + "/…"
    with pytest.raises(InvalidConfig) as refused:
        HttpTransport("ws://someuser:S3CRET@example.org/v3/PATHKEY?token=QUERYKEY")
    _assert_no_secret(refused.value)


def _assert_no_secret(error: Exception) -> None:
    said = str(error) + json.dumps(getattr(error, "data", {}))
    for secret in ("someuser", "S3CRET", "PATHKEY", "QUERYKEY"):
        assert secret not in said, said


@pytest.mark.parametrize(("url", "shown"), [
    ("https://mainnet.example.io/v3/KEY", "https://mainnet.example.io/…"),
    ("http://user:pw@127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("http://[::1]:8545/", "http://[::1]:8545"),
    ("https://host?key=1", "https://host/…"),
    ("not a url", "(a malformed URL)"),
    ("http://host:99999/KEY", "(a malformed URL)"),
    ("", ""),
])
def test_shown_url(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_a_reply_trickled_byte_by_byte_ends_at_the_requests_deadline() -> None:
    """Each byte in time for the read timeout, the whole far too late: the chain review's node
    stalled the watcher for 3.5 minutes so, and a dispute was missed. The request ends at
    REQUEST_DEADLINE_FACTOR times the timeout as an unreachable chain."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            reply = b'{"jsonrpc":"2.0","id":1,"result":"0x10"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(reply))
            for byte in reply:
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    client = ChainClient(HttpTransport(url, timeout=0.3), ContractCodec(load_artifact().abi))
    try:  # the whole reply would take 4 s, and come
        with pytest.raises(ChainNotReachable, match=r"no whole reply within 0\.9 s"):
            client.block_number_blocking()
    finally:
        stop.set()
        server.close()


def test_every_exchange_is_timed_answered_or_not() -> None:
    """perund_chain_call_seconds, and the node's estimate of its dispute reaction
    (perund.challenge_watch), count every exchange: a failed one took its time too."""
    def slow(request: Any, use: int) -> Reply:
        time.sleep(0.02)
        if isinstance(request, list):
            return 200, json.dumps([json.loads(answer(r, 1)) for r in request]).encode()
        return (200, answer(request, use)) if request["method"] != "drop" else None

    with scripted_node(slow) as node:
        transport = HttpTransport(node.url, timeout=5)
        assert transport.call_times.recent_p90() is None
        for _ in range(3):
            transport.request("eth_blockNumber", [])
        assert transport.batch([("eth_blockNumber", []), ("eth_chainId", [])]) is not None
        with pytest.raises(OSError):
            transport.request("drop", [])
        times = transport.call_times.histogram()
        assert times.count == 5 and times.total >= 5 * 0.02
        assert times.counts[:3] == [0, 0, 0]  # none under 10 ms
        p90 = transport.call_times.recent_p90()
        assert p90 is not None and p90 >= 0.02
        transport.close()
