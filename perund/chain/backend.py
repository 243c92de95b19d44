"""ChainBackend: the node's one door to the chain, web3 on a dedicated thread pool.

The reactor side of the backend: every method returns a Deferred; the blocking work runs in
`ChainClient`'s `*_blocking` methods on this service's own named ThreadPool ("perund-chain").
The embedded dev chain is not thread-safe, so its pool has exactly one thread; an HTTP node gets
several, so a slow call never holds up the others. No pool thread ever waits for a block: the
receipt of a transaction is polled from the reactor (see `perund.chain.sender`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from web3 import Web3

from perund.chain import tokens
from perund.chain.abi import (
    ContractCodec,
    locked_value,
    params_value,
    state_value,
    virtual_params_value,
)
from perund.chain.account import Account
from perund.chain.artifact import ContractArtifact, load_artifact
from perund.chain.client import NO_CODE, BlockId, ChainClient
from perund.chain.devchain import DEFAULT_DEV_CHAIN_ID, DEV_ACCOUNT_COUNT, EMBEDDED_URL
from perund.chain.results import ChainEvent, ChannelStatus, Phase, TxReceipt
from perund.chain.sender import TransactionSender
from perund.channel.types import (
    ETH,
    Address,
    ChannelID,
    Params,
    Signature,
    State,
    VirtualProof,
    hex_address,
)
from perund.errors import (
    ChainNotReachable,
    FailedPrecondition,
    InvalidArgument,
    InvalidConfig,
    InvalidContracts,
)

if TYPE_CHECKING:
    from perund.chain.pyevm import DevChain

_P = ParamSpec("_P")
_R = TypeVar("_R")

POOL_NAME = "perund-chain"
DEFAULT_HTTP_POOL_SIZE = 4
TOKEN_FUNDING_GAS = 150_000
"""What one token adds to funding, at most: its approve transaction (~46k gas, a second one
through zero for USDT-style tokens ~29k more) and its part of the fundParticipant (~63k for
a first deposit; a permit ~38k more)."""
DEFAULT_MAX_LOG_RANGE = 5_000
"""Blocks per eth_getLogs request: public nodes refuse wide ranges, so long ones are split."""


def deferred_api(f: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, Deferred[_R]]:
    """Make an `async def` method return a Deferred (errors, even early ones, become failures)."""

    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_R]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events after a cursor, and the cursor to persist once they are processed."""

    events: tuple[ChainEvent, ...]
    cursor: int
    """The last block these events cover; pass it to the next `events_after`."""


class ChainBackend(Service):
    """web3 on a thread pool with a Deferred API: connect, deploy, transact, read, follow events.

    Build it with `ChainBackend(reactor, url=...)` for a JSON-RPC node or with `url=""` for the
    embedded dev chain; add it to the node's service tree (it starts and stops its pool with the
    service); then `connect()` before anything else.
    """

    log = Logger()
    name = "chain"

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        url: str = "",
        chain_id: int | None = None,
        adjudicator: Address | None = None,
        connect_timeout: float = 10.0,
        tx_timeout: float = 60.0,
        receipt_poll_interval: float = 0.2,
        pool_size: int | None = None,
        dev_accounts: int = DEV_ACCOUNT_COUNT,
        max_log_range: int = DEFAULT_MAX_LOG_RANGE,
        artifact: ContractArtifact | None = None,
    ) -> None:
        """`url` empty means the embedded dev chain (chain ID `chain_id` or 1337).

        `adjudicator`: on a node, the deployed contract to use, validated by `connect()` (None
        leaves it to `deploy_adjudicator` or `validate_adjudicator`). The embedded chain always
        deploys one at connect from dev account 0; a configured address must be that one.
        """
        self._reactor = reactor
        self.url = url
        self.embedded = not url
        self.expected_chain_id = chain_id
        self.chain_id: int | None = None
        self.adjudicator: Address | None = adjudicator
        self.connect_timeout = connect_timeout
        self.tx_timeout = tx_timeout
        self.receipt_poll_interval = receipt_poll_interval
        self.dev_accounts = dev_accounts
        self.max_log_range = max_log_range
        self.artifact = artifact or load_artifact()
        self.codec = ContractCodec(self.artifact.abi)
        size = 1 if self.embedded else (pool_size or DEFAULT_HTTP_POOL_SIZE)
        if self.embedded and pool_size not in (None, 1):
            raise InvalidArgument(
                "the embedded dev chain is single-threaded: its pool has one thread",
                name="pool_size", value=pool_size, requirement="1 for the embedded chain",
            )
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name=POOL_NAME)
        self.devchain: DevChain | None = None
        self._client: ChainClient | None = None
        self._sender: TransactionSender | None = None
        self._funding_locks: dict[Address, DeferredLock] = {}
        """Per account: one `fund` at a time (its allowances are read, then used)."""

    # Service lifecycle

    def startService(self) -> None:
        """Start the thread pool."""
        Service.startService(self)  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self.pool.start()

    def stopService(self) -> Deferred[None] | None:
        """Stop the thread pool (waits for a running call to finish)."""
        Service.stopService(self)  # type: ignore[no-untyped-call]
        self.pool.stop()
        return None

    def _run(self, f: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_R]:
        if not self.pool.started:
            raise FailedPrecondition("the chain backend is not running", service=self.name)
        return deferToThreadPool(
            cast(IReactorFromThreads, self._reactor), self.pool, f, *args, **kwargs
        )

    def run_blocking(self, f: Callable[_P, _R], *args: _P.args,
                     **kwargs: _P.kwargs) -> Deferred[_R]:
        """Run a blocking chain function in this backend's pool (the chain boundary)."""
        return self._run(f, *args, **kwargs)

    def use_url(self, url: str) -> None:
        """Reach the chain at `url` (known only now: the node's embedded anvil picks its port
        when it starts); before `connect()` only."""
        if self._client is not None:
            raise FailedPrecondition("the chain backend is connected already")
        if self.embedded:
            raise FailedPrecondition("this backend runs the in-process chain")
        self.url = url

    @property
    def client(self) -> ChainClient:
        """The blocking client; FailedPrecondition before `connect()`."""
        if self._client is None:
            raise FailedPrecondition("the chain backend is not connected: call connect() first")
        return self._client

    @property
    def sender(self) -> TransactionSender:
        """The transaction sender; FailedPrecondition before `connect()`."""
        if self._sender is None:
            raise FailedPrecondition("the chain backend is not connected: call connect() first")
        return self._sender

    def require_adjudicator(self) -> Address:
        """The Adjudicator in use; FailedPrecondition before one is deployed or validated."""
        if self.adjudicator is None:
            raise FailedPrecondition(
                "no Adjudicator: deploy_adjudicator() or validate_adjudicator() first"
            )
        return self.adjudicator

    # Connecting

    @deferred_api
    async def connect(self) -> int:
        """Reach the chain and check its ID; validate or deploy the Adjudicator. The chain ID.

        ChainNotReachable (with `chainUrl`) when the node does not answer within
        `connect_timeout`; InvalidConfig when its chain ID is not the configured one;
        InvalidContracts when the configured Adjudicator's code is wrong.
        """
        self.log.info("connecting to the chain at {url}", url=self.url or EMBEDDED_URL)
        client = await self._run(
            open_client_blocking, self.url, self.codec,
            chain_id=self.expected_chain_id or DEFAULT_DEV_CHAIN_ID,
            dev_accounts=self.dev_accounts, request_timeout=self.connect_timeout,
        )
        asked = self._run(client.chain_id_blocking)
        asked.addTimeout(self.connect_timeout, self._reactor)
        try:
            chain_id = await asked
        except defer.TimeoutError as exc:
            raise ChainNotReachable(
                f"the chain at {client.url} did not answer within {self.connect_timeout:g} s",
                chainUrl=client.url,
            ) from exc
        if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
            raise InvalidConfig(
                f"the chain at {client.url} has chain ID {chain_id}, "
                f"but chain.id is {self.expected_chain_id}",
                name="chain.id",
                value=self.expected_chain_id,
            )
        self._client = client
        self.devchain = client.devchain
        self.chain_id = chain_id
        self._sender = TransactionSender(
            self._reactor, self._run, client, chain_id,
            tx_timeout=self.tx_timeout, poll_interval=self.receipt_poll_interval,
        )
        self.log.info("connected to chain {chain_id} at {url}", chain_id=chain_id, url=client.url)
        configured = self.adjudicator
        if self.devchain is not None:
            # A fresh embedded chain holds no contract yet: deploy it. Dev account 0 with nonce
            # 0 always creates the same address, so a config may still name it.
            deployed = await self.deploy_adjudicator(self.devchain.dev_account(0))
            if configured is not None and configured != deployed:
                raise InvalidContracts(
                    f"the embedded chain deploys the Adjudicator at {hex_address(deployed)}, "
                    f"not at the configured {hex_address(configured)}",
                    name=self.artifact.name, address=hex_address(configured),
                    error="not the embedded chain's Adjudicator address",
                )
        elif configured is not None:
            await self.validate_adjudicator(configured)
        return chain_id

    def dev_private_keys(self) -> tuple[bytes, ...]:
        """The embedded chain's funded dev accounts' keys; FailedPrecondition on a node."""
        if self.devchain is None:
            raise FailedPrecondition("dev accounts exist only on the embedded dev chain")
        return self.devchain.private_keys

    # Contract deployment

    @deferred_api
    async def deploy_adjudicator(self, account: Account) -> Address:
        """Deploy the packaged Adjudicator from `account`, use it from now on; its address."""
        receipt = await self.sender.transact(
            account, "deployAdjudicator", None,
            self.codec.encode_constructor(self.artifact.bytecode),
        )
        address = receipt.contract_address
        if address is None:
            raise InvalidContracts(
                "the deployment's receipt names no contract address",
                name=self.artifact.name, address=None, error="no contract address",
            )
        self.adjudicator = Address(address)
        self.log.info("deployed the Adjudicator at {address}", address=hex_address(address))
        return self.adjudicator

    @deferred_api
    async def validate_adjudicator(self, address: Address) -> Address:
        """Check that `address` holds the packaged Adjudicator's code, then use it.

        InvalidContracts (name, address, error) when there is no code or other code.
        """
        code = await self._run(self.client.code_blocking, address)
        if not code:
            problem = "no contract at this address"
        elif not self.artifact.runtime_code_matches(code):
            problem = "the code at this address is not this version's Adjudicator"
        else:
            self.adjudicator = address
            self.log.info("using the Adjudicator at {address}", address=hex_address(address))
            return address
        raise InvalidContracts(
            f"{problem}: {hex_address(address)} on chain {self.chain_id}",
            name=self.artifact.name, address=hex_address(address), error=problem,
        )

    # Transactions (each returns the receipt summary once mined; see TransactionSender)

    async def _transact(self, account: Account, tx_type: str, data: bytes, value: int = 0
                        ) -> TxReceipt:
        adjudicator = self.require_adjudicator()
        return await self.sender.transact(
            account, tx_type, adjudicator, data, value, events_of=adjudicator
        )

    @deferred_api
    async def deposit(
        self, account: Account, channel_id: ChannelID, index: int, asset: Address, amount: int
    ) -> TxReceipt:
        """Deposit `amount` of `asset` for participant `index` (0 or 1) of the channel."""
        if amount <= 0:
            raise InvalidArgument(
                "a deposit must be positive", name="amount", value=amount, requirement="> 0"
            )
        value = amount if asset == ETH else 0
        data = self.codec.encode_call("deposit", channel_id, index, asset, amount)
        return await self._transact(account, "deposit", data, value)

    @deferred_api
    async def register(
        self, account: Account, params: Params, state: State, sigs: Sequence[Signature]
    ) -> TxReceipt:
        """Register a fully signed `state`: starts a dispute, or refutes with a newer state."""
        data = self.codec.encode_call(
            "register", params_value(params), state_value(state), _two_sigs(sigs)
        )
        return await self._transact(account, "register", data)

    @deferred_api
    async def conclude(self, account: Account, params: Params, state: State) -> TxReceipt:
        """Conclude with the registered `state` after its timeout; pays out."""
        data = self.codec.encode_call("conclude", params_value(params), state_value(state))
        return await self._transact(account, "conclude", data)

    @deferred_api
    async def conclude_final(
        self, account: Account, params: Params, state: State, sigs: Sequence[Signature]
    ) -> TxReceipt:
        """Conclude with a fully signed final `state` at once; pays out."""
        data = self.codec.encode_call(
            "concludeFinal", params_value(params), state_value(state), _two_sigs(sigs)
        )
        return await self._transact(account, "concludeFinal", data)

    @deferred_api
    async def register_virtual(
        self, account: Account, params: Params, state: State, sigs: Sequence[Signature],
        proof: VirtualProof,
    ) -> TxReceipt:
        """`registerVirtualState`: register the parent `state` (with its locks; its signatures
        are not checked when it is the registered state) and, through it, the virtual
        channel's state in `proof` (start, refute, or nothing if registered already)."""
        data = self.codec.encode_call(
            "registerVirtualState", params_value(params), state_value(state),
            locked_value(state), _two_sigs(sigs), virtual_params_value(proof.params),
            state_value(proof.state), _two_sigs(proof.signatures))
        return await self._transact(account, "registerVirtualState", data)

    @deferred_api
    async def conclude_parent(self, account: Account, params: Params, state: State,
                              sub_states: Sequence[State]) -> TxReceipt:
        """`concludeParentState`: conclude the registered parent `state` with the registered,
        frozen state of each virtual channel it locks (`sub_states`, in `state.locked`
        order); pays out."""
        data = self.codec.encode_call(
            "concludeParentState", params_value(params), state_value(state),
            locked_value(state), [state_value(sub) for sub in sub_states])
        return await self._transact(account, "concludeParentState", data)

    @deferred_api
    async def fund(
        self, account: Account, channel_id: ChannelID, index: int,
        deposits: Sequence[tuple[Address, int]], *, use_permits: bool = True,
    ) -> tuple[TxReceipt, ...]:
        """Deposit each `(asset, amount)` for participant `index` in one `fundParticipant`
        transaction (the ETH amounts as its value). A token whose allowance for the Adjudicator
        is short is allowed first: by a permit inside that transaction when the token takes
        one (and `use_permits`), else by `approve` transactions. The receipts, deposit last.

        One account funds one channel at a time: an allowance read, then granted and taken by
        the deposit, must not be overwritten or taken by another channel's funding between."""
        lock = self._funding_locks.setdefault(account.address, DeferredLock())
        await lock.acquire()
        try:
            return await tokens.fund(self, account, channel_id, index, deposits, use_permits)
        finally:
            lock.release()

    @deferred_api
    async def approve_token(self, account: Account, token: Address, amount: int
                            ) -> tuple[TxReceipt, ...]:
        """Let the Adjudicator take `amount` of `token` from `account` (approve transactions)."""
        allowed = await self.token_allowance(token, account.address)
        return await tokens.approve(self, account, token, amount, allowed)

    @deferred_api
    async def withdraw(self, account: Account, asset: Address = ETH) -> TxReceipt:
        """Withdraw what the contract owes `account` in `asset` (a payout it could not push)."""
        return await self._transact(account, "withdraw", self.codec.encode_call("withdraw", asset))

    @deferred_api
    async def send_ether(self, account: Account, to: Address, amount: int) -> TxReceipt:
        """A plain ether transfer (to fund another account from a dev account, say)."""
        return await self.sender.transact(account, "transfer", to, b"", amount)

    # Reads

    async def _view(self, name: str, *args: Any, block: BlockId = "latest") -> tuple[Any, ...]:
        adjudicator = self.require_adjudicator()
        return await self._run(self.client.call_blocking, adjudicator, name, *args, block=block)

    @deferred_api
    async def holdings(self, channel_id: ChannelID, asset: Address = ETH,
                       block: BlockId = "latest") -> tuple[int, int]:
        """What each participant has deposited into the channel and not been paid out, as of
        `block` (a number, for what is confirmed)."""
        try:
            first, second = await self._view("holdings", channel_id, asset, block=block)
        except InvalidContracts as exc:
            if block != "latest" and exc.data.get("error") == NO_CODE:
                return 0, 0  # a block before the contract was deployed: nothing held yet
            raise
        return int(first), int(second)

    @deferred_api
    async def channel_funds(self, channels: Sequence[tuple[ChannelID, Sequence[Address]]],
                            ) -> list[tuple[ChannelStatus, tuple[int, ...]]]:
        """For each `(channel, assets)`: the Adjudicator's record of the channel and the total
        it holds of each asset, read together (in JSON-RPC batches on an HTTP node)."""
        calls: list[tuple[str, tuple[Any, ...]]] = []
        for channel_id, assets in channels:
            calls.append(("channelStatus", (channel_id,)))
            calls += [("holdings", (channel_id, asset)) for asset in assets]
        outputs = iter(await self._run(self.client.calls_blocking, self.require_adjudicator(),
                                       calls))
        funds = []
        for _, assets in channels:
            phase, version, timeout, state_hash = next(outputs)
            status = ChannelStatus(Phase(phase), int(version), int(timeout), bytes(state_hash))
            funds.append((status, tuple(int(first) + int(second)
                                        for first, second in (next(outputs) for _ in assets))))
        return funds

    @deferred_api
    async def channel_holdings(self, channels: Sequence[tuple[ChannelID, Sequence[Address]]],
                               ) -> list[tuple[int, ...]]:
        """For each `(channel, assets)`: the total the Adjudicator holds of each asset (half the
        calls of `channel_funds`, for a start-up check that needs the status only of the
        channels that fall short)."""
        calls = [("holdings", (channel_id, asset))
                 for channel_id, assets in channels for asset in assets]
        outputs = iter(await self._run(self.client.calls_blocking, self.require_adjudicator(),
                                       calls))
        return [tuple(int(first) + int(second) for first, second in (next(outputs)
                                                                    for _ in assets))
                for _, assets in channels]

    @deferred_api
    async def deposit_fee(self, sender: Address, tokens: int = 0) -> int:
        """The most one deposit transaction's gas may cost `sender` now (wei): of ETH alone,
        or with `tokens` tokens, each with its approval (`fund`)."""
        return await self._run(self.client.deposit_fee_blocking, self.require_adjudicator(),
                               sender, tokens * TOKEN_FUNDING_GAS)

    @deferred_api
    async def owed(self, receiver: Address, asset: Address = ETH) -> int:
        """What the contract holds for `receiver` to `withdraw` (payouts it could not push)."""
        (amount,) = await self._view("owed", receiver, asset)
        return int(amount)

    @deferred_api
    async def channel_status(self, channel_id: ChannelID) -> ChannelStatus:
        """The Adjudicator's record of the channel (phase, version, timeout, state hash)."""
        phase, version, timeout, state_hash = await self._view("channelStatus", channel_id)
        return ChannelStatus(Phase(phase), int(version), int(timeout), bytes(state_hash))

    @deferred_api
    async def contract_channel_id(self, params: Params) -> bytes:
        """The channel ID as the contract computes it (to cross-check the off-chain one)."""
        (value,) = await self._view("channelID", params_value(params))
        return bytes(value)

    @deferred_api
    async def contract_state_hash(self, state: State) -> bytes:
        """The state hash as the contract computes it."""
        (value,) = await self._view("hashState", state_value(state))
        return bytes(value)

    @deferred_api
    async def balance(self, address: Address) -> int:
        """The ether balance of `address` in wei."""
        return await self._run(self.client.balance_blocking, address)

    @deferred_api
    async def token_balance(self, token: Address, holder: Address) -> int:
        """`holder`'s balance of ERC20 `token` (InvalidContracts if it is no token)."""
        return int(await self._run(tokens.token_call_blocking, self.client, token, "balanceOf",
                                   holder))

    @deferred_api
    async def token_allowance(self, token: Address, owner: Address) -> int:
        """What the Adjudicator may take of `owner`'s `token` now."""
        return int(await self._run(tokens.token_call_blocking, self.client, token, "allowance",
                                   owner, self.require_adjudicator()))

    @deferred_api
    async def token_info(self, token: Address) -> tokens.TokenInfo:
        """The token's symbol and decimals (InvalidContracts if it is no ERC20 token)."""
        return await self._run(tokens.token_info_blocking, self.client, token)

    @deferred_api
    async def block_number(self) -> int:
        """The latest block's number."""
        return await self._run(self.client.block_number_blocking)

    def forget(self) -> None:
        """A reorganisation replaced blocks: our transactions in them may be gone, so every
        account's next nonce is asked of the node again."""
        if self._sender is not None:
            self._sender.forget_nonces()

    @deferred_api
    async def block_hash(self, number: int) -> bytes | None:
        """The hash of block `number` now (it changes if a reorganisation replaces the block);
        None if there is no such block."""
        return await self._run(self.client.block_hash_blocking, number)

    @deferred_api
    async def chain_time(self) -> int:
        """The latest block's timestamp: the clock of the contract's timeouts."""
        return await self._run(self.client.block_timestamp_blocking, "latest")

    # Events

    @deferred_api
    async def events(
        self,
        from_block: int,
        to_block: int,
        channel_ids: Iterable[bytes] | None = None,
    ) -> list[ChainEvent]:
        """The Adjudicator's events in blocks `from_block..to_block` (inclusive), in order.

        With `channel_ids`, only the events about those channels (every event but Withdrawn
        carries its channel ID as the first indexed topic).
        """
        adjudicator = self.require_adjudicator()
        topics: list[list[bytes] | None] = []
        if channel_ids is not None:
            wanted = list(dict.fromkeys(bytes(c) for c in channel_ids))
            if not wanted:
                return []
            topics = [None, wanted]
        client = self.client
        found: list[ChainEvent] = []
        start = max(from_block, 0)
        while start <= to_block:
            end = min(to_block, start + self.max_log_range - 1)
            logs = await self._run(client.logs_blocking, adjudicator, start, end, topics)
            found.extend(client.decode_events(adjudicator, logs))
            start = end + 1
        found.sort(key=lambda event: event.position)
        return found

    @deferred_api
    async def events_after(
        self,
        cursor: int,
        channel_ids: Iterable[bytes] | None = None,
        *,
        confirmations: int = 0,
    ) -> EventBatch:
        """The events in the blocks after `cursor` up to the latest confirmed block.

        A watcher persists the returned `cursor` once it has handled the events and passes it
        back next time: every event is seen once and none is skipped, across restarts too. A
        `confirmations` depth of n leaves the newest n blocks for a later call.
        """
        last = await self._run(self.client.block_number_blocking) - confirmations
        if last <= cursor:
            return EventBatch((), cursor)
        events = await self.events(cursor + 1, last, channel_ids)
        return EventBatch(tuple(events), last)

    # Dev-chain control (tests, demo): the embedded chain and anvil

    @deferred_api
    async def advance_time(self, seconds: int) -> int:
        """Move the chain's clock forward by mining a block `seconds` later; its timestamp."""
        return await self._run(self.client.advance_time_blocking, seconds)

    @deferred_api
    async def set_automine(self, enabled: bool) -> None:
        """Mine every transaction at once (the default on dev chains) or only on `mine()`."""
        await self._run(self.client.set_automine_blocking, enabled)

    @deferred_api
    async def mine(self) -> None:
        """Mine one block with whatever transactions are pending."""
        await self._run(self.client.mine_blocking)


def open_client_blocking(
    url: str,
    codec: ContractCodec,
    *,
    chain_id: int = DEFAULT_DEV_CHAIN_ID,
    dev_accounts: int = DEV_ACCOUNT_COUNT,
    request_timeout: float = 10.0,
) -> ChainClient:
    """A client for the node at `url`, or for a new embedded dev chain when `url` is empty.

    Runs in the pool: the embedded chain must be built on the thread that will use it.
    `chain_id` and `dev_accounts` apply to the embedded chain only.
    """
    if not url:
        # Imported here: eth-tester and py-evm take about a second to import, which a node on
        # anvil or a real chain never needs.
        from perund.chain.pyevm import DevChain

        devchain = DevChain(chain_id, accounts=dev_accounts)
        return ChainClient(devchain.w3, devchain.url, codec, devchain=devchain)
    provider = Web3.HTTPProvider(
        url,
        request_kwargs={"timeout": request_timeout},
        # web3 retries a refused connection for seconds by default; an unreachable chain is
        # reported at once instead (the caller decides whether and when to retry).
        exception_retry_configuration=None,
    )
    return ChainClient(Web3(provider), url, codec)


def _two_sigs(sigs: Sequence[Signature]) -> list[bytes]:
    if len(sigs) != 2:
        raise InvalidArgument(
            "a state needs both participants' signatures",
            name="sigs", value=len(sigs), requirement="exactly 2",
        )
    return [bytes(sig) for sig in sigs]
