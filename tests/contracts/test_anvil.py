"""The anvil launcher that the tests, the benchmark and the dev node use."""

from __future__ import annotations

from pathlib import Path

import pytest

from perund.chain.anvil import Anvil, find_anvil, rpc_call
from perund.channel.encoding import Signer
from perund.errors import ChainNotReachable, PerundError


def test_missing_binary_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ChainNotReachable, match="make deps") as info:
        find_anvil([tmp_path])
    assert isinstance(info.value, PerundError)
    assert str(tmp_path / "node_modules") in info.value.data["searched"][0]


def test_unrunnable_binary_is_a_chain_error(tmp_path: Path) -> None:
    with pytest.raises(ChainNotReachable, match="make deps"):
        Anvil(binary=str(tmp_path / "no-such-anvil")).start()


@pytest.mark.anvil
def test_start_answers_with_the_chain_id_and_funded_dev_keys_then_stops() -> None:
    anvil = Anvil(chain_id=4711, accounts=3)
    with anvil:
        assert anvil.running
        assert anvil.url.startswith("http://127.0.0.1:")
        assert int(rpc_call(anvil.url, "eth_chainId"), 16) == 4711
        assert len(anvil.private_keys) == 3
        for key, account in zip(anvil.private_keys, anvil.accounts, strict=True):
            assert Signer(key).address == account
            balance = int(
                rpc_call(anvil.url, "eth_getBalance", ["0x" + account.hex(), "latest"]), 16
            )
            assert balance == 10_000 * 10**18
        url = anvil.url
    assert not anvil.running
    with pytest.raises(ChainNotReachable):
        rpc_call(url, "eth_chainId", timeout=1.0)


@pytest.mark.anvil
def test_two_anvils_get_different_ports() -> None:
    with Anvil() as first, Anvil() as second:
        assert first.port != second.port
        assert rpc_call(first.url, "eth_chainId") == rpc_call(second.url, "eth_chainId")
