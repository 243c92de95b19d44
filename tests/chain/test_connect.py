"""Connecting: the right chain, the wrong chain, no chain; deploying and validating the contract."""

from __future__ import annotations

import os
import socket

import pytest
import pytest_twisted
from twisted.logger import capturedLogs, formatEvent

from perund.chain.account import Account
from perund.chain.artifact import load_artifact
from perund.chain.backend import ChainBackend
from perund.channel.types import Address
from perund.errors import ChainNotReachable, FailedPrecondition, InvalidConfig, InvalidContracts

from .conftest import ANVIL_CHAIN_ID, EMBEDDED_CHAIN_ID, make_backend


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _initcode_returning(runtime: bytes) -> bytes:
    """Creation code that deploys `runtime` verbatim: CODECOPY it to memory and RETURN it."""
    n = len(runtime)
    prefix = bytes.fromhex(f"61{n:04x}8061000d6000396000f3")
    assert len(prefix) == 0x0D
    return prefix + runtime


@pytest_twisted.ensureDeferred
async def test_connect_reports_chain_and_adjudicator(chain) -> None:
    backend = chain.backend
    expected = EMBEDDED_CHAIN_ID if chain.kind == "embedded" else ANVIL_CHAIN_ID
    assert backend.chain_id == expected
    assert backend.adjudicator is not None
    assert await backend.validate_adjudicator(backend.adjudicator) == backend.adjudicator
    assert await backend.block_number() >= 1
    assert await backend.chain_time() > 1_600_000_000


@pytest_twisted.ensureDeferred
async def test_wrong_chain_id_is_invalid_config(anvil_node) -> None:
    backend = make_backend(anvil_node.url, ANVIL_CHAIN_ID + 1)
    try:
        with pytest.raises(InvalidConfig) as info:
            await backend.connect()
    finally:
        backend.stopService()
    assert info.value.data["name"] == "chain.id"
    assert str(ANVIL_CHAIN_ID) in str(info.value)


@pytest_twisted.ensureDeferred
async def test_a_configured_adjudicator_without_code_names_the_key(anvil_node) -> None:
    nobody = Address(os.urandom(20))
    backend = make_backend(anvil_node.url, ANVIL_CHAIN_ID, adjudicator=nobody)
    try:
        with pytest.raises(InvalidContracts) as info:
            await backend.connect()
    finally:
        backend.stopService()
    assert str(info.value).startswith("chain.adjudicator: no contract at this address: 0x")
    assert info.value.data["error"] == "no contract at this address"


@pytest_twisted.ensureDeferred
async def test_refused_connection_is_chain_not_reachable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    backend = make_backend(url, 1)
    try:
        with pytest.raises(ChainNotReachable) as info:
            await backend.connect()
    finally:
        backend.stopService()
    assert info.value.data["chainUrl"] == url
    assert info.value.code == 302


@pytest_twisted.ensureDeferred
async def test_silent_node_is_chain_not_reachable_after_connect_timeout() -> None:
    # A listener that never accepts: the TCP handshake completes (backlog) but no answer comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        backend = make_backend(url, 1, connect_timeout=0.3)
        try:
            with pytest.raises(ChainNotReachable) as info:
                await backend.connect()
        finally:
            backend.stopService()
    assert info.value.data["chainUrl"] == url


@pytest_twisted.ensureDeferred
async def test_calls_before_connect_fail_clearly() -> None:
    backend = make_backend("", EMBEDDED_CHAIN_ID)
    try:
        with pytest.raises(FailedPrecondition):
            await backend.balance(Address(b"\x01" * 20))
    finally:
        backend.stopService()


def test_embedded_chain_pool_has_one_thread() -> None:
    from twisted.internet import reactor

    from perund.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        ChainBackend(reactor, url="", pool_size=4)
    assert ChainBackend(reactor, url="").pool.max == 1
    assert ChainBackend(reactor, url="http://127.0.0.1:1", pool_size=3).pool.max == 3


@pytest_twisted.ensureDeferred
async def test_embedded_chain_validates_a_configured_adjudicator() -> None:
    first = make_backend("", EMBEDDED_CHAIN_ID)
    try:
        await first.connect()
        # Each embedded chain starts from the same genesis and deploys from dev account 0 with
        # nonce 0, so the address is the same on every start: a config may name it.
        assert first.adjudicator is not None
        again = make_backend("", EMBEDDED_CHAIN_ID, adjudicator=first.adjudicator)
        try:
            await again.connect()
            assert again.adjudicator == first.adjudicator
        finally:
            again.stopService()
    finally:
        first.stopService()


@pytest_twisted.ensureDeferred
async def test_validate_refuses_an_address_without_code(chain) -> None:
    nobody = Address(os.urandom(20))
    with pytest.raises(InvalidContracts) as info:
        await chain.backend.validate_adjudicator(nobody)
    assert info.value.data["error"] == "no contract at this address"
    assert info.value.code == 206


@pytest_twisted.ensureDeferred
async def test_validate_checks_the_code_not_the_address(chain) -> None:
    backend = chain.backend
    account = chain.account(3)
    runtime = load_artifact().deployed_bytecode
    # The genuine runtime code deployed by other means is accepted...
    genuine = await backend.sender.transact(
        account, "deploy", None, _initcode_returning(runtime)
    )
    assert genuine.contract_address is not None
    await backend.validate_adjudicator(Address(genuine.contract_address))
    # ...and the same code with one byte changed, or other code, is not.
    middle = len(runtime) // 2
    tampered = runtime[:middle] + bytes([runtime[middle] ^ 0xFF]) + runtime[middle + 1 :]
    for code in (tampered, b"\x00"):
        receipt = await backend.sender.transact(account, "deploy", None, _initcode_returning(code))
        assert receipt.contract_address is not None
        with pytest.raises(InvalidContracts) as info:
            await backend.validate_adjudicator(Address(receipt.contract_address))
        assert "not this version's Adjudicator" in info.value.data["error"]


@pytest_twisted.ensureDeferred
async def test_deploy_adjudicator_switches_to_the_new_contract(chain) -> None:
    backend = chain.backend
    old = backend.adjudicator
    new = await backend.deploy_adjudicator(Account(chain.keys[4]))
    assert new != old and backend.adjudicator == new
    await backend.validate_adjudicator(new)


@pytest_twisted.ensureDeferred
async def test_embedded_chain_refuses_another_configured_adjudicator() -> None:
    backend = make_backend("", EMBEDDED_CHAIN_ID, adjudicator=Address(b"\x42" * 20))
    try:
        with pytest.raises(InvalidContracts) as info:
            await backend.connect()
    finally:
        backend.stopService()
    assert info.value.data["address"] == "0x" + "42" * 20


@pytest_twisted.ensureDeferred
async def test_a_url_with_a_key_is_logged_and_reported_without_it() -> None:
    url = f"http://someuser:S3CRET@127.0.0.1:{_closed_port()}/v3/PATHKEY"
    backend = make_backend(url, 1)
    try:
        with capturedLogs() as events, pytest.raises(ChainNotReachable) as info:
            await backend.connect()
    finally:
        backend.stopService()
    said = [formatEvent(e) for e in events] + [str(info.value), str(info.value.data)]
    assert any("connecting to the chain at http://127.0.0.1:" in line for line in said)
    for secret in ("someuser", "S3CRET", "PATHKEY"):
        assert not [line for line in said if secret in line]
