"""Currencies and decimal amounts: the one place where wei meet the strings users type.

Amounts cross the API as decimal strings in the currency's unit (`"0.25"` ETH) and are wei
(`int`) everywhere behind it. A string is accepted only in its plain form: digits, an optional
fraction, no sign, exponent, leading zeros or spaces, and never more fraction digits than the
currency has (a silently rounded payment is a wrong payment).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from perund.channel.types import ETH, UINT256_MAX, Address, hex_address

AMOUNT_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"
"""The JSON Schema pattern of an amount string (the schema and the parser share it)."""

MAX_AMOUNT_LENGTH = 100
"""Longer strings cannot be a uint256 with at most 77 decimals; refused before any parsing."""

MAX_DECIMALS = 77
"""10**77 < 2**256 <= 10**78: a currency with more decimals could not express one unit."""

_AMOUNT = re.compile(AMOUNT_PATTERN)


class AmountError(ValueError):
    """An amount string is refused; the message says what an acceptable one looks like."""


def parse_amount(text: str, decimals: int, *, allow_zero: bool = True) -> int:
    """The base units (wei) that `text` stands for in a currency with `decimals` decimals."""
    if len(text) > MAX_AMOUNT_LENGTH:
        raise AmountError(f"an amount has at most {MAX_AMOUNT_LENGTH} characters")
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise AmountError("a non-negative decimal string such as \"1\" or \"0.25\" "
                          "(no sign, exponent, spaces or leading zeros)")
    whole, dot_fraction = match.group(1), match.group(2)
    fraction = dot_fraction[1:] if dot_fraction else ""
    if len(fraction) > decimals:
        raise AmountError(f"at most {decimals} decimal places for this currency")
    units: int = int(whole) * 10**decimals + (int(fraction.ljust(decimals, "0")) if decimals else 0)
    if units > UINT256_MAX:
        raise AmountError("too large: the amount must fit a uint256 in base units")
    if units == 0 and not allow_zero:
        raise AmountError("must be above zero")
    return units


def format_amount(units: int, decimals: int) -> str:
    """The shortest decimal string for `units` base units: `format_amount(25 * 10**16, 18)`
    is `"0.25"`, and `parse_amount` of the result gives `units` back."""
    if units < 0:
        raise ValueError("amounts are never negative")
    whole, fraction = divmod(units, 10**decimals)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{str(fraction).rjust(decimals, '0').rstrip('0')}"


@dataclass(frozen=True, slots=True)
class Currency:
    """A currency users name by `symbol`: the asset address it is held as, and its decimals."""

    symbol: str
    asset: Address
    decimals: int

    def __post_init__(self) -> None:
        if not 0 <= self.decimals <= MAX_DECIMALS:
            raise ValueError(f"decimals must be in 0..{MAX_DECIMALS}")
        if len(self.asset) != 20:
            raise ValueError("an asset address has 20 bytes")

    def parse(self, text: str, *, allow_zero: bool = True) -> int:
        """Base units from a decimal string (see `parse_amount`)."""
        return parse_amount(text, self.decimals, allow_zero=allow_zero)

    def format(self, units: int) -> str:
        """A decimal string from base units (see `format_amount`)."""
        return format_amount(units, self.decimals)


ETHER = Currency("ETH", ETH, 18)
"""Ether: always present, always first."""


class Currencies:
    """The currency table of a node: symbol → (asset, decimals), ETH first.

    Configured tokens are added by the node once it knows their decimals (from the chain).
    An asset the table does not know is still shown, by its address and in base units.
    """

    def __init__(self, tokens: Iterable[Currency] = ()) -> None:
        self._by_symbol: dict[str, Currency] = {ETHER.symbol: ETHER}
        self._by_asset: dict[Address, Currency] = {ETHER.asset: ETHER}
        self._disabled: dict[Address, str] = {}
        for token in tokens:
            self.add(token)

    def add(self, currency: Currency) -> None:
        """Add a token; a symbol or an asset already in the table is a ValueError."""
        if currency.symbol.upper() in (s.upper() for s in self._by_symbol):
            raise ValueError(f"currency {currency.symbol} is already defined")
        if currency.asset in self._by_asset:
            raise ValueError(f"asset {hex_address(currency.asset)} already has a symbol")
        self._by_symbol[currency.symbol] = currency
        self._by_asset[currency.asset] = currency

    def __iter__(self) -> Iterator[Currency]:
        return iter(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)

    def symbols(self) -> list[str]:
        """Every symbol, ETH first, then in the order added."""
        return list(self._by_symbol)

    def by_symbol(self, symbol: str) -> Currency:
        """The currency called `symbol`; KeyError if there is none."""
        return self._by_symbol[symbol]

    def by_asset(self, asset: Address) -> Currency | None:
        """The currency held as `asset`, if the table knows it."""
        return self._by_asset.get(asset)

    def label(self, asset: Address) -> tuple[str, int]:
        """How to show amounts of `asset`: its symbol and decimals, or, for an asset the table
        does not know, its checksummed address and 0 decimals (base units)."""
        currency = self._by_asset.get(asset)
        if currency is None:
            return hex_address(asset), 0
        return currency.symbol, currency.decimals

    def disable(self, asset: Address, reason: str) -> None:
        """Take the token `asset` out of new business (`perund.node_assets`): the node opens,
        accepts and funds no channel in it; its channels are still shown and settled."""
        if asset == ETHER.asset or asset not in self._by_asset:
            raise ValueError("only a token of the table can be disabled")
        self._disabled[asset] = reason

    def disabled(self, asset: Address) -> str | None:
        """Why the token `asset` is disabled (`disable`), or None if it is not."""
        return self._disabled.get(asset)

    def render(self, asset: Address, units: int) -> tuple[str, str]:
        """`(label, decimal string)` of `units` of `asset`."""
        label, decimals = self.label(asset)
        return label, format_amount(units, decimals)
