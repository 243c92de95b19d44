"""What `node_getConfig` shows: the node's chain, contract, currencies (a disabled token with
why, perund.node_assets) and version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perund.api.amounts import Currencies, Currency
from perund.channel.types import Address, hex_address

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What `node_getConfig` shows; the assets come from the API's currency table."""

    chain_url: str
    chain_id: int
    adjudicator: Address
    comm_types: tuple[str, ...]
    version: str
    response_timeout: float

    def to_json(self, currencies: Currencies) -> JSON:
        """The node's public configuration."""
        return {
            "chainUrl": self.chain_url,
            "chainId": self.chain_id,
            "adjudicator": hex_address(self.adjudicator),
            "assets": {c.symbol: _asset_json(c, currencies) for c in currencies},
            "commTypes": list(self.comm_types),
            "version": self.version,
            "responseTimeout": self.response_timeout,
        }


def _asset_json(currency: Currency, currencies: Currencies) -> JSON:
    """A currency of `node_getConfig`: its address and decimals, and why it is disabled if it
    is (a token that failed its check at the node's start, `perund.node_assets`)."""
    shown: dict[str, Any] = {"address": hex_address(currency.asset),
                             "decimals": currency.decimals}
    why = currencies.disabled(currency.asset)
    if why is not None:
        shown["disabled"] = why
    return shown
