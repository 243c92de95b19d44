"""What the chain backend reads: the Adjudicator's records and holdings, balances, tokens,
blocks, fees, and its events after a cursor (each a Deferred, the call made in the pool)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from twisted.logger import Logger

from perund.chain import tokens
from perund.chain.abi import params_value, state_value
from perund.chain.client import NO_CODE
from perund.chain.connection import ChainConnection, deferred_api
from perund.chain.node_rpc import BlockId
from perund.chain.results import ChainEvent, ChannelStatus, Phase
from perund.channel.types import ETH, Address, ChannelID, Params, State
from perund.errors import ChainRpcError, InvalidContracts
from perund.words import plural

log = Logger(namespace="perund.chain")

_RANGE_REFUSED: Final = re.compile(
    r"range|more than [0-9,]+ (results|logs|blocks)|too many|response size|too large", re.I)
"""How nodes word their refusal of an eth_getLogs over too many blocks or results (Infura's
"query returned more than 10000 results", Alchemy's "block range", ...)."""

TOKEN_FUNDING_GAS = 150_000
"""What one token adds to funding, at most: its approve transaction (~46k gas, a second one
through zero for USDT-style tokens ~29k more) and its part of the fundParticipant (~63k for
a first deposit; a permit ~38k more)."""


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events after a cursor, and the cursor to persist once they are processed."""

    events: tuple[ChainEvent, ...]
    cursor: int
    """The last block these events cover; pass it to the next `events_after`."""


class ChainReads(ChainConnection):
    """The backend's reads and event queries, on its connection."""

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
            try:
                logs = await self._run(client.logs_blocking, adjudicator, start, end, topics)
            except ChainRpcError as exc:
                if end == start or not _RANGE_REFUSED.search(exc.rpc_message):
                    raise
                # The node takes fewer blocks (or results) a request than we asked for: ask
                # for half from now on, or a watcher would fail the same way every poll.
                self.max_log_range = max(1, (end - start + 1) // 2)
                log.warn("the chain refused eth_getLogs over {range} ({why}); asking "
                         "for {fewer} at a time from now on", blocks=end - start + 1,
                         range=plural(end - start + 1, "block"),
                         why=exc.rpc_message[:120], fewer=self.max_log_range)
                continue
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
