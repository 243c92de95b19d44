"""What the node hands the API about itself, its sessions and their contacts (the channels'
and pushes' views are in `perund.api.views`): plain values, rendered by `to_json`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from perund.api.amounts import Currencies, Currency
from perund.api.views import JSON, ChannelView, hex_id
from perund.channel.types import Address, hex_address
from perund.contacts.book import Contact
from perund.session.config import IntermediaryConfig


@dataclass(frozen=True, slots=True)
class PeerView:
    """A contact of a session."""

    alias: str
    off_chain_address: Address
    comm_address: str
    comm_type: str = "tcp"

    def to_json(self, currencies: Currencies | None = None) -> JSON:
        """`{alias, offChainAddress, commAddress, commType}`."""
        return {"alias": self.alias, "offChainAddress": hex_address(self.off_chain_address),
                "commAddress": self.comm_address, "commType": self.comm_type}


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What `node_getConfig` shows; the assets come from the API's currency table."""

    chain_url: str
    chain_id: int
    adjudicator: Address
    comm_types: tuple[str, ...]
    version: str
    response_timeout: float
    min_challenge_duration: int
    """The shortest challenge duration the node takes, in seconds (its reaction time with
    margin: a shorter one would not leave it time to answer a dispute)."""
    max_challenge_duration: int
    """The longest one, in seconds."""

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
            "minChallengeDuration": self.min_challenge_duration,
            "maxChallengeDuration": self.max_challenge_duration,
        }


def _asset_json(currency: Currency, currencies: Currencies) -> JSON:
    """A currency of `node_getConfig`: its address and decimals, and why it is disabled if it
    is (a token that failed its check at the node's start, `perund.node_assets`)."""
    shown: JSON = {"address": hex_address(currency.asset), "decimals": currency.decimals}
    why = currencies.disabled(currency.asset)
    if why is not None:
        shown["disabled"] = why
    return shown


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """An opened session and the unsettled channels it restored."""

    session_id: bytes
    off_chain_address: Address
    on_chain_address: Address
    restored_channels: tuple[ChannelView, ...] = ()

    def to_json(self, currencies: Currencies) -> JSON:
        """`{sessionId, offChainAddress, onChainAddress, restoredChannels}`."""
        return {
            "sessionId": hex_id(self.session_id),
            "offChainAddress": hex_address(self.off_chain_address),
            "onChainAddress": hex_address(self.on_chain_address),
            "restoredChannels": [c.to_json(currencies) for c in self.restored_channels],
        }


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One open session, for `session_list`."""

    session_id: bytes
    config_file: str
    off_chain_address: Address
    on_chain_address: Address
    open_channels: int
    intermediary: IntermediaryConfig | None = None
    """The session's intermediary settings, when it serves as one."""

    def to_json(self) -> JSON:
        """`{sessionId, configFile, offChainAddress, onChainAddress, openChannels}`."""
        return {
            "sessionId": hex_id(self.session_id),
            "configFile": self.config_file,
            "offChainAddress": hex_address(self.off_chain_address),
            "onChainAddress": hex_address(self.on_chain_address),
            "openChannels": self.open_channels,
            **({} if self.intermediary is None else {"intermediary": {
                "lockWindow": self.intermediary.lock_window,
                "fee": {f.symbol: {"base": f.base, "ppm": f.ppm}
                        for f in self.intermediary.fee}}}),
        }


@dataclass(frozen=True, slots=True)
class AccountBalance:
    """The on-chain balances of a session's on-chain account, in base units per asset."""

    address: Address
    balances: Mapping[Address, int] = field(default_factory=dict)
    errors: Mapping[Address, str] = field(default_factory=dict)
    """Why an asset's balance could not be read (a token whose balanceOf reverts)."""

    def to_json(self, currencies: Currencies) -> JSON:
        """`{address, balances: {currency: amount}, errors?: {currency: why}}`."""
        shown: dict[str, str] = {}
        for asset, units in self.balances.items():
            label, amount = currencies.render(asset, units)
            shown[label] = amount
        answer: JSON = {"address": hex_address(self.address), "balances": shown}
        if self.errors:
            answer["errors"] = {currencies.label(asset)[0]: why
                                for asset, why in self.errors.items()}
        return answer


def peer_view(contact: Contact) -> PeerView:
    """The API's view of a contact."""
    return PeerView(contact.alias, contact.off_chain_address, contact.comm_address,
                    contact.comm_type)
