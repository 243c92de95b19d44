"""How the start-up chain check names what a chain lacks: per asset, in the currency's unit."""

from __future__ import annotations

from perund.channel.types import ETH, Address, ChannelID, hex_address
from perund.session.chain_check import Shortfall

TOKEN = Address(bytes.fromhex("e4" * 20))
PEER = Address(bytes.fromhex("11" * 20))
CHANNEL = ChannelID(bytes.fromhex("ab" * 32))


def labels(asset: Address) -> tuple[str, int]:
    return {ETH: ("ETH", 18), TOKEN: ("USDC", 6)}.get(asset, (hex_address(asset), 0))


def test_each_asset_is_named_in_its_unit() -> None:
    eth = Shortfall(CHANNEL, PEER, ETH, 25 * 10**17, 0, labels)
    assert eth.describe() == f"channel 0xabababab… with {hex_address(PEER)}: 2.5 ETH " \
                             "expected, 0 ETH held"
    token = Shortfall(CHANNEL, PEER, TOKEN, 10_500_000, 1, labels)
    assert token.describe().endswith(": 10.5 USDC expected, 0.000001 USDC held")
    other = Address(bytes.fromhex("22" * 20))
    unknown = Shortfall(CHANNEL, PEER, other, 7, 0, labels)
    assert unknown.describe().endswith(f": 7 units of {hex_address(other)} expected, 0 units "
                                       f"of {hex_address(other)} held")
    # Without the node's table: ETH by name, every other asset in base units.
    assert Shortfall(CHANNEL, PEER, TOKEN, 5, 0).amount(5) == f"5 units of {hex_address(TOKEN)}"
    assert Shortfall(CHANNEL, PEER, ETH, 10**18, 0).amount(10**30) == "1000000000000 ETH"
    assert eth.to_json()["asset"] == hex_address(ETH)
