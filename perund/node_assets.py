"""The node's assets: ETH, the tokens of `chain.assets`, and the embedded chain's test token.

The currency table (`perund.api.amounts.Currencies`) is built from the config when the node is
built, so every amount the node shows or parses uses the configured decimals from the start.
At start-up, once the chain is connected, each token is checked on the chain: code at its
address and `decimals()` equal to the config's. A token that fails is disabled, alone: a wrong
address or wrong decimals would make every amount of that token wrong by orders of magnitude,
so the node opens, accepts and funds no channel in it, and says so in one critical line naming
its key (`chain.assets.SYM`) and why, in `node_getConfig` and in the metric
`perund_token_disabled`. It does not stop the start: a token that breaks later (an upgraded
proxy that reverts every call, a changed `decimals()`) must not leave the node's other
channels, and its own, unwatched. The channels that hold it already are watched, disputed and
concluded as any other; the Adjudicator credits a payout the token refuses, and the node
withdraws it once the token sends again. A typo in a new token's entry is disabled the same
way, loudly, rather than keeping every channel unwatched until it is mended.
"""

from __future__ import annotations

from twisted.logger import Logger

from perund.api.amounts import Currencies, Currency
from perund.chain import tokens
from perund.chain.backend import ChainBackend
from perund.chain.embedded import EmbeddedChain
from perund.channel.types import hex_address
from perund.config import NodeConfig
from perund.errors import InvalidConfig, InvalidContracts

log = Logger(namespace="perund.node")


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


async def check_tokens(chain: ChainBackend, currencies: Currencies) -> dict[str, str]:
    """Check every token of the table on the chain: code at its address and the decimals the
    table gives it. Each token that fails is disabled in `currencies` (module doc) and named in
    a critical log line; what failed, by symbol. Never raises for a token."""
    failed: dict[str, str] = {}
    for currency in currencies:
        if currency.symbol == "ETH":
            continue
        problem = await _token_problem(chain, currency)
        if problem is None:
            continue
        name = f"chain.assets.{currency.symbol}"
        failed[currency.symbol] = problem
        currencies.disable(currency.asset, problem)
        log.critical(
            "{name}: {problem}. {symbol} is disabled: no channel is opened, accepted or funded "
            "in it; the channels that hold it already are still watched, disputed and "
            "concluded. Correct the entry (or remove it once no channel holds the token) and "
            "restart the node to check it again", name=name, problem=problem,
            symbol=currency.symbol, asset=hex_address(currency.asset))
    return failed


async def _token_problem(chain: ChainBackend, currency: Currency) -> str | None:
    """What is wrong with `currency`'s token on the chain, or None if it checks out."""
    where = f"{hex_address(currency.asset)} on chain {chain.chain_id}"
    # A read that fails (a timeout, a node's hiccup) proves nothing about the token: it ends
    # the start as before, rather than disable a good token (whose funding channels would then
    # go to disputes) until the next one.
    code = await chain.run_blocking(chain.client.code_blocking, currency.asset)
    if not code:
        return (f"no contract at {where}: is the address right, and is this the chain the "
                "token lives on?")
    try:
        decimals = int(await chain.run_blocking(tokens.token_call_blocking, chain.client,
                                                currency.asset, "decimals"))
    except InvalidContracts:
        return f"the contract at {where} does not answer decimals(): not an ERC20 token"
    if decimals != currency.decimals:
        return (f"decimals is {currency.decimals} in the config, but the token at {where} has "
                f"{decimals} decimals")
    return None
