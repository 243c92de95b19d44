"""The node's assets: ETH, the tokens of `chain.assets`, and the embedded chain's test token.

The currency table (`perund.api.amounts.Currencies`) is built from the config when the node is
built, so every amount the node shows or parses uses the configured decimals from the start.
At start-up, once the chain is connected, each token is checked on the chain: code at its
address and `decimals()` equal to the config's. A token that fails stops the start with one
line naming its key (`chain.assets.SYM`): a wrong address or wrong decimals would make every
amount of that token wrong by orders of magnitude.
"""

from __future__ import annotations

from perund.api.amounts import Currencies, Currency
from perund.chain import tokens
from perund.chain.backend import ChainBackend
from perund.chain.embedded import EmbeddedChain
from perund.channel.types import hex_address
from perund.config import NodeConfig
from perund.errors import InvalidConfig, InvalidContracts


def configured_currencies(config: NodeConfig) -> Currencies:
    """ETH and the tokens of `chain.assets`, in the config's order."""
    return Currencies(Currency(symbol, token.address, token.decimals)
                      for symbol, token in config.chain.assets.items())


def add_test_token(currencies: Currencies, devchain: EmbeddedChain) -> Currency | None:
    """Add the embedded chain's test token (PRN, from devchain.json) unless the config names
    it already; the currency added, if any. A config that gives the symbol PRN to another
    address is an InvalidConfig: on the embedded chain PRN is the chain's own."""
    recorded = devchain.recorded_test_token_info()
    if recorded is None:
        return None
    symbol, address, decimals = recorded
    if currencies.by_asset(address) is not None:
        return None  # configured (by `perund generate`, under this or another symbol)
    for currency in currencies:
        if currency.symbol.upper() == symbol.upper():
            raise InvalidConfig(
                f"chain.assets.{currency.symbol}: the embedded chain's test token {symbol} is "
                f"at {hex_address(address)}, not at {hex_address(currency.asset)}: remove the "
                "entry (the node adds the test token by itself) or correct its address",
                name=f"chain.assets.{currency.symbol}", value=hex_address(currency.asset))
    added = Currency(symbol, address, decimals)
    currencies.add(added)
    return added


async def check_tokens(chain: ChainBackend, currencies: Currencies) -> None:
    """Every token of the table has code on the chain and the decimals the table gives it;
    InvalidConfig naming the first `chain.assets.SYM` that does not."""
    for currency in currencies:
        if currency.symbol == "ETH":
            continue
        name = f"chain.assets.{currency.symbol}"
        where = f"{hex_address(currency.asset)} on chain {chain.chain_id}"
        code = await chain.run_blocking(chain.client.code_blocking, currency.asset)
        if not code:
            raise InvalidConfig(f"{name}: no contract at {where}: is the address right, and "
                                "is this the chain the token lives on?",
                                name=name, value=hex_address(currency.asset))
        try:
            decimals = int(await chain.run_blocking(tokens.token_call_blocking, chain.client,
                                                    currency.asset, "decimals"))
        except InvalidContracts:
            raise InvalidConfig(f"{name}: the contract at {where} does not answer decimals(): "
                                "not an ERC20 token", name=name,
                                value=hex_address(currency.asset)) from None
        if decimals != currency.decimals:
            raise InvalidConfig(f"{name}.decimals is {currency.decimals}, but the token at "
                                f"{where} has {decimals} decimals", name=f"{name}.decimals",
                                value=currency.decimals)
