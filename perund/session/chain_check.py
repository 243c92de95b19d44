"""Does the chain still hold what a session's channels hold? Asked before they are resumed.

A chain that was reset (a dev chain started afresh), or another chain at the configured URL,
lacks the deposits of channels the store says are funded. Resuming them would sign states no
contract will honour, and a cooperative close would "conclude" a channel that pays nothing. So
when a session opens, each funded, unsettled channel's holdings are read: the contract must hold
at least the total of the channel's latest state, per asset (payments move money between the
two sides, never in or out, so that total is what was deposited). A channel the contract has
concluded already is fine: the watcher reports its conclusion. So is a channel that went to
settlement before it was funded (`Channel.unfunded`): the contract refunds whatever it holds of
it, and if that is nothing, no one lost anything. A record from before that flag passes when
the contract holds some of its deposits or has a registration of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.logger import Logger

from perund.chain.backend import ChainBackend
from perund.chain.results import ChannelStatus
from perund.chain.results import Phase as ChainPhase
from perund.channel.changes import Registered
from perund.channel.encoding import state_hash
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.rules import funds as funds_of
from perund.channel.types import ETH, Address, ChannelID, Params, State, hex_address
from perund.errors import ChainMismatch
from perund.words import asset_text, plural

AssetLabel = Callable[[Address], tuple[str, int]]
"""How to show amounts of an asset: its symbol and decimals (the node's currency table)."""

log = Logger()


def default_label(asset: Address) -> tuple[str, int]:
    """ETH by name; any other asset by its address, in base units."""
    return ("ETH", 18) if asset == ETH else (hex_address(asset), 0)


FUNDED = frozenset({Phase.OPEN, Phase.UPDATING, Phase.CLOSING, Phase.DISPUTED})
"""Phases in which the channel's deposits are on the chain."""

SETTLING = frozenset({Phase.CLOSING, Phase.DISPUTED})
"""Phases a channel also reaches when its funding failed: it may hold less than its state."""


@dataclass(frozen=True, slots=True)
class Shortfall:
    """One asset of one channel the chain holds less of than the channel does."""

    channel_id: ChannelID
    peer: Address
    asset: Address
    expected: int
    held: int
    label: AssetLabel = default_label

    def amount(self, units: int) -> str:
        """`units` of the asset for a person: `2.5 ETH`, `10 PRN`, or base units of an asset
        without a symbol."""
        return asset_text(units, *self.label(self.asset))

    def describe(self) -> str:
        """`channel 0x12ab… with 0x…: 2.5 ETH expected, 0 ETH held`."""
        return (f"channel 0x{self.channel_id.hex()[:8]}… with {hex_address(self.peer)}: "
                f"{self.amount(self.expected)} expected, {self.amount(self.held)} held")

    def to_json(self) -> dict[str, str]:
        """The error data of this shortfall."""
        return {"channelId": "0x" + self.channel_id.hex(), "peer": hex_address(self.peer),
                "asset": hex_address(self.asset), "expected": str(self.expected),
                "held": str(self.held)}


async def shortfalls(chain: ChainBackend, channels: Iterable[Channel],
                     label: AssetLabel = default_label) -> list[Shortfall]:
    """What the chain lacks of the funded, unsettled `channels`, per asset (read all at once:
    a session with a thousand channels opens in one round trip to the chain, not two
    thousand). `label` names the assets in messages.

    The holdings are read first; the Adjudicator's record only of the channels that fall
    short (one concluded on-chain may have paid out what it held). A channel that holds
    enough is fine whatever its record says, so a start reads one value per channel and asset,
    not two."""
    # A virtual channel holds nothing on-chain: its parents hold its funds (locked).
    funded = [c for c in channels
              if c.phase in FUNDED and type(c.params) is Params and not c.unfunded]
    if not funded:
        return []
    held = await chain.channel_holdings([(c.channel_id, c.latest.assets) for c in funded])
    short = [channel for channel, amounts in zip(funded, held, strict=True)
             if any(amount < total for total, amount in zip(funds_of(channel.latest), amounts,
                                                            strict=True))]
    if not short:
        return []
    funds = await chain.channel_funds([(c.channel_id, c.latest.assets) for c in short])
    found = []
    for channel, (status, amounts) in zip(short, funds, strict=True):
        if status.phase is ChainPhase.CONCLUDED:
            continue
        if channel.phase in SETTLING and (status.phase is ChainPhase.DISPUTE
                                          or any(amounts)):
            # A record from before `unfunded`: settling a channel whose funding may never have
            # completed. The contract holds what was deposited and refunds it; a reset chain
            # holds nothing of it and has no registration of it.
            continue
        state = channel.latest
        for asset, total, amount in zip(state.assets, funds_of(state), amounts, strict=True):
            if amount < total:
                found.append(Shortfall(channel.channel_id, channel.peer, asset, total, amount,
                                       label))
    return found


async def lost_conclusions(chain: ChainBackend, channels: Iterable[Channel]) -> list[ChannelID]:
    """The closed ledger `channels` the chain has not concluded although it holds their
    deposits: it lost the blocks of the conclusion (read in one round trip, then the records
    of those that hold anything; a concluded channel holds nothing)."""
    closed = [c for c in channels
              if c.phase is Phase.CLOSED and type(c.params) is Params and c.current is not None]
    if not closed:
        return []
    held = await chain.channel_holdings([(c.channel_id, c.latest.assets) for c in closed])
    holding = [c for c, amounts in zip(closed, held, strict=True) if any(amounts)]
    if not holding:
        return []
    funds = await chain.channel_funds([(c.channel_id, c.latest.assets) for c in holding])
    return [c.channel_id for c, (status, _) in zip(holding, funds, strict=True)
            if status.phase is not ChainPhase.CONCLUDED]


def mismatch(session: str, chain_url: str, found: list[Shortfall]) -> ChainMismatch:
    """The error that stops a session (and a node at start) from resuming `found`."""
    listed = "; ".join(s.describe() for s in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    channels = len({s.channel_id for s in found})
    return ChainMismatch(
        f"the chain at {chain_url} lacks what {plural(channels, 'channel')} of "
        f"session {session} {'holds' if channels == 1 else 'hold'} ({listed}{more}): it was "
        "reset, lost its newest blocks, or is another chain. Point chain.url at the chain "
        "those channels were funded on (for the embedded chain: put data_dir/devchain back), "
        "or start with "
        "--accept-lost-channels to give them up (docs/operations.md, \"When things go "
        "wrong\"); a channel that was settling because its funding failed before any "
        "deposit was made, recorded before perund marked such channels, has nothing on any "
        "chain to give up",
        session=session, channels=[s.to_json() for s in found])


def log_lost_conclusion(session_id: str, channel_id: ChannelID) -> None:
    """The critical line for a closed channel whose conclusion the chain lost (settled again)."""
    log.critical(
        "session {session_id}: the chain has not concluded channel {channel_id}, which this "
        "session holds as closed, and still holds its deposits: it lost the blocks of the "
        "conclusion (an embedded chain stopped between its state saves, or a reorganisation "
        "deeper than chain.confirmations). Settling it again.",
        session_id=session_id, channel_id="0x" + channel_id.hex())


def registered_already(status: ChannelStatus, state: State) -> Registered | None:
    """The registration the chain holds (`status`) as the core takes it, when it is of `state`
    (same version and hash): a core that no longer knows its dispute (its conclusion went with
    a reorganisation, `ConclusionLost`) learns it again, for no event will repeat it (the
    watcher has passed it), and concludes it once its challenge period is over. None for
    another state (a newer one reaches the core through the watcher)."""
    if status.version != state.version or status.state_hash != state_hash(state):
        return None
    return Registered(status.version, status.timeout, state.is_final, state.balances,
                      state.locked)
