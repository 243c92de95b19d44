"""ERC20 tokens at the chain boundary: their ABI, reads, and EIP-2612 permits for deposits.

The Adjudicator pulls a token deposit with `transferFrom`, so the depositor must first allow it:
by an `approve` transaction, or by a permit (EIP-2612) that the deposit transaction itself
executes (docs/contract.md, `fundParticipant`). A permit saves a transaction, but only tokens
that implement EIP-2612 take one; `permit_blocking` signs one and checks, by simulating it, that
the token accepts it, so a token with a different `permit` (DAI's, say) falls back to `approve`.

Blocking functions run in the chain backend's pool (`ChainBackend` calls them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, Protocol, TypeVar

from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak
from twisted.internet.defer import Deferred

from perund.chain.abi import ContractCodec
from perund.chain.account import Account
from perund.chain.client import ChainClient
from perund.chain.results import TxReceipt
from perund.chain.sender import TransactionSender
from perund.channel.types import ETH, Address, ChannelID, hex_address
from perund.errors import InvalidArgument, InvalidContracts, TxReverted

_P = ParamSpec("_P")
_R = TypeVar("_R")


class TokenHost(Protocol):
    """What token funding needs of the chain backend (`ChainBackend` is one): its blocking
    client and pool, its transaction sender, its contract codec and the Adjudicator."""

    codec: ContractCodec

    @property
    def client(self) -> ChainClient:
        """The blocking client."""

    @property
    def sender(self) -> TransactionSender:
        """The transaction sender."""

    def require_adjudicator(self) -> Address:
        """The Adjudicator in use."""

    def run_blocking(self, f: Callable[_P, _R], *args: _P.args,
                     **kwargs: _P.kwargs) -> Deferred[_R]:
        """Run a blocking function in the backend's pool."""


def _function(name: str, inputs: list[str], outputs: list[str], mutability: str) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "stateMutability": mutability,
        "inputs": [{"name": f"arg{i}", "type": kind} for i, kind in enumerate(inputs)],
        "outputs": [{"name": "", "type": kind} for kind in outputs],
    }


ERC20_ABI: Final[tuple[dict[str, Any], ...]] = (
    _function("balanceOf", ["address"], ["uint256"], "view"),
    _function("allowance", ["address", "address"], ["uint256"], "view"),
    _function("decimals", [], ["uint8"], "view"),
    _function("symbol", [], ["string"], "view"),
    _function("approve", ["address", "uint256"], ["bool"], "nonpayable"),
    _function("nonces", ["address"], ["uint256"], "view"),
    _function("DOMAIN_SEPARATOR", [], ["bytes32"], "view"),
    _function(
        "permit",
        ["address", "address", "uint256", "uint256", "uint8", "bytes32", "bytes32"],
        [],
        "nonpayable",
    ),
)
"""The parts of ERC20 and EIP-2612 the node uses (what every such token has in common)."""

TOKEN_CODEC: Final = ContractCodec(ERC20_ABI)

PERMIT_TYPEHASH: Final = keccak(
    b"Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
)
PERMIT_LIFETIME: Final = 3600
"""Seconds (of chain time) a permit stays valid: the deposit carrying it is sent at once."""


@dataclass(frozen=True, slots=True)
class Permit:
    """An EIP-2612 permit letting the Adjudicator take `value` of `token` (the Adjudicator's
    `Permit` struct)."""

    token: Address
    value: int
    deadline: int
    v: int
    r: bytes
    s: bytes

    def as_abi(self) -> tuple[Any, ...]:
        """The ABI tuple (address, uint256, uint256, uint8, bytes32, bytes32)."""
        return (self.token, self.value, self.deadline, self.v, self.r, self.s)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a token says of itself."""

    address: Address
    symbol: str
    decimals: int


def permit_digest(
    domain_separator: bytes, owner: Address, spender: Address, value: int, nonce: int,
    deadline: int,
) -> bytes:
    """The EIP-712 digest an EIP-2612 permit signs."""
    struct = keccak(
        abi_encode(
            ["bytes32", "address", "address", "uint256", "uint256", "uint256"],
            [PERMIT_TYPEHASH, owner, spender, value, nonce, deadline],
        )
    )
    return keccak(b"\x19\x01" + domain_separator + struct)


def token_call_blocking(client: ChainClient, token: Address, name: str, *args: Any) -> Any:
    """The one output of view `name` of `token`. InvalidContracts (naming the token) when it
    has no code, reverts, or answers something that is not an ERC20 answer."""
    try:
        (value,) = client.call_blocking(token, name, *args, codec=TOKEN_CODEC)
    except TxReverted as exc:
        raise InvalidContracts(
            f"{hex_address(token)} is not an ERC20 token: its {name} reverts",
            name=name, address=hex_address(token), error="not a token",
        ) from exc
    return value


def token_info_blocking(client: ChainClient, token: Address) -> TokenInfo:
    """The token's symbol and decimals; InvalidContracts when it is not an ERC20 token."""
    symbol = token_call_blocking(client, token, "symbol")
    decimals = token_call_blocking(client, token, "decimals")
    return TokenInfo(token, str(symbol), int(decimals))


def permit_blocking(
    client: ChainClient, account: Account, token: Address, spender: Address, value: int
) -> Permit | None:
    """A permit of `account` for `spender` to take `value` of `token`, or None when the token
    does not take EIP-2612 permits (no `DOMAIN_SEPARATOR` or `nonces`, or it refuses the signed
    permit when simulated)."""
    owner = account.address
    try:
        domain = bytes(token_call_blocking(client, token, "DOMAIN_SEPARATOR"))
        nonce = int(token_call_blocking(client, token, "nonces", owner))
    except InvalidContracts:
        return None
    deadline = client.block_timestamp_blocking("latest") + PERMIT_LIFETIME
    signature = account.sign_hash(permit_digest(domain, owner, spender, value, nonce, deadline))
    permit = Permit(token, value, deadline, signature[64], signature[:32], signature[32:64])
    data = TOKEN_CODEC.encode_call(
        "permit", owner, spender, value, deadline, permit.v, permit.r, permit.s
    )
    return permit if client.succeeds_blocking(token, data) else None


async def approve(
    backend: TokenHost, account: Account, token: Address, amount: int, allowed: int,
    sent: list[TxReceipt] | None = None,
) -> tuple[TxReceipt, ...]:
    """Let the Adjudicator take `amount` of `token` from `account` by `approve` transactions.

    `allowed` is the allowance now: a token that refuses to change a nonzero allowance to
    another nonzero one (USDT does, against front-running) is set to zero first. Each receipt
    is also added to `sent` as soon as it is in, so a caller counts the gas of a transaction
    that went through even when a later one fails."""
    spender = backend.require_adjudicator()
    sender = backend.sender
    kept = [] if sent is None else sent
    start = len(kept)
    data = TOKEN_CODEC.encode_call("approve", spender, amount)
    try:
        kept.append(await sender.transact(account, "approve", token, data))
        return tuple(kept[start:])
    except TxReverted:
        if allowed == 0:
            raise
    zero = TOKEN_CODEC.encode_call("approve", spender, 0)
    kept.append(await sender.transact(account, "approve", token, zero))
    kept.append(await sender.transact(account, "approve", token, data))
    return tuple(kept[start:])


async def fund(
    backend: TokenHost,
    account: Account,
    channel_id: ChannelID,
    index: int,
    deposits: Sequence[tuple[Address, int]],
    use_permits: bool,
    sent: list[TxReceipt] | None = None,
) -> tuple[TxReceipt, ...]:
    """`ChainBackend.fund`: allowances first (permits or approvals), then one deposit; each
    receipt also goes to `sent` as soon as it is in (see `approve`)."""
    adjudicator = backend.require_adjudicator()
    if index not in (0, 1):
        raise InvalidArgument("a participant index is 0 or 1", name="index", value=index,
                              requirement="0 or 1")
    if not deposits or any(type(amount) is not int or amount <= 0 for _, amount in deposits):
        raise InvalidArgument("each deposit must be positive", name="deposits",
                              value=len(deposits), requirement="at least one, each > 0")
    needed: dict[Address, int] = {}
    for asset, amount in deposits:
        if asset != ETH:
            needed[asset] = needed.get(asset, 0) + amount
    receipts: list[TxReceipt] = [] if sent is None else sent
    start = len(receipts)
    permits: list[tuple[Any, ...]] = []
    for token, amount in needed.items():
        allowed = int(await backend.run_blocking(
            token_call_blocking, backend.client, token, "allowance", account.address, adjudicator))
        if allowed >= amount:
            continue
        permit = None
        if use_permits:
            permit = await backend.run_blocking(
                permit_blocking, backend.client, account, token, adjudicator, amount)
        if permit is not None:
            permits.append(permit.as_abi())
        else:
            await approve(backend, account, token, amount, allowed, receipts)
    data = backend.codec.encode_call(
        "fundParticipant", channel_id, index, [asset for asset, _ in deposits],
        [amount for _, amount in deposits], permits)
    value = sum(amount for asset, amount in deposits if asset == ETH)
    receipts.append(await backend.sender.transact(
        account, "fundParticipant", adjudicator, data, value, events_of=adjudicator))
    return tuple(receipts[start:])
