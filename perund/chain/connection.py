"""The chain backend's connection: a JSON-RPC client on a dedicated thread pool, reached from
the reactor.

The reactor side of the backend: every method returns a Deferred; the blocking work runs in
`ChainClient`'s `*_blocking` methods on this service's own named ThreadPool ("perund-chain").
The embedded dev chain is not thread-safe, so its pool has exactly one thread; an HTTP node gets
several, so a slow call never holds up the others. No pool thread ever waits for a block: the
receipt of a transaction is polled from the reactor (see `perund.chain.sender`).

`ChainConnection` connects (chain ID check) and deploys or validates the Adjudicator; the reads
(`perund.chain.reads`) and the transactions (`perund.chain.backend`) stand on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from perund.chain.abi import ContractCodec
from perund.chain.account import Account
from perund.chain.artifact import ContractArtifact, load_artifact
from perund.chain.call_times import ChainCallTimes
from perund.chain.client import ChainClient
from perund.chain.devchain import DEFAULT_DEV_CHAIN_ID, DEV_ACCOUNT_COUNT, EMBEDDED_URL
from perund.chain.jsonrpc import HttpTransport
from perund.chain.sender import TransactionSender
from perund.chain.urls import shown_url
from perund.channel.types import Address, hex_address
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
DEFAULT_MAX_LOG_RANGE = 5_000
"""Blocks per eth_getLogs request: public nodes refuse wide ranges, so long ones are split."""


def deferred_api(f: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, Deferred[_R]]:
    """Make an `async def` method return a Deferred (errors, even early ones, become failures)."""

    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_R]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


class ChainConnection(Service):
    """The backend's Service: its thread pool, the connection to the chain, the Adjudicator in
    use, and the transaction sender. `ChainBackend` is the whole backend built on it."""

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
        self.call_times = ChainCallTimes()
        """How long the chain node takes to answer each JSON-RPC exchange."""
        self._funding_locks: dict[Address, DeferredLock] = {}
        """Per account: one `fund` at a time (its allowances are read, then used)."""

    # Service lifecycle

    def startService(self) -> None:
        """Start the thread pool."""
        Service.startService(self)  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self.pool.start()

    def stopService(self) -> Deferred[None] | None:
        """Stop the thread pool (waits for a running call to finish), then close the
        connections its threads held."""
        Service.stopService(self)  # type: ignore[no-untyped-call]
        self.pool.stop()
        if self._client is not None:
            self._client.transport.close()
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
        self.log.info("connecting to the chain at {url}",
                      url=shown_url(self.url) if self.url else EMBEDDED_URL)
        client = await self._run(
            open_client_blocking, self.url, self.codec,
            chain_id=self.expected_chain_id or DEFAULT_DEV_CHAIN_ID,
            dev_accounts=self.dev_accounts, request_timeout=self.connect_timeout,
            call_times=self.call_times,
        )
        try:
            chain_id = await self._check_chain_id(client)
        except BaseException:
            client.transport.close()
            raise
        self._client = client
        self.devchain = client.devchain
        self.chain_id = chain_id
        self._sender = TransactionSender(
            self._reactor, self._run, client, chain_id,
            tx_timeout=self.tx_timeout, poll_interval=self.receipt_poll_interval,
        )
        via = client.transport.via
        self.log.info("connected to chain {chain_id} at {url}{through}", chain_id=chain_id,
                      url=client.url, through=f" through the proxy {via}" if via else "")
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
            try:
                await self.validate_adjudicator(configured)
            except InvalidContracts as exc:
                # The address came from the node config: say which key to look at.
                raise InvalidContracts(f"chain.adjudicator: {exc.message}", **exc.data) from None
        return chain_id

    async def _check_chain_id(self, client: ChainClient) -> int:
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

    def forget(self) -> None:
        """A reorganisation replaced blocks: our transactions in them may be gone, so every
        account's next nonce is asked of the node again."""
        if self._sender is not None:
            self._sender.forget_nonces()


def open_client_blocking(
    url: str,
    codec: ContractCodec,
    *,
    chain_id: int = DEFAULT_DEV_CHAIN_ID,
    dev_accounts: int = DEV_ACCOUNT_COUNT,
    request_timeout: float = 10.0,
    call_times: ChainCallTimes | None = None,
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
        return ChainClient(devchain.transport, codec, devchain=devchain)
    # No retries here: an unreachable chain is reported at once (the caller decides whether
    # and when to try again).
    return ChainClient(HttpTransport(url, timeout=request_timeout, call_times=call_times),
                       codec)
