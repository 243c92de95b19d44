"""An in-memory NodeFacade for the API tests.

It is a small, honest implementation of the protocol, not a stand-in for the node: a ledger
of sessions, contacts and channels with no peers, no chain and no signatures. Channels open at
once; our payments apply at once; "the peer" acts only when a test calls `propose` or
`peer_update`. What it checks (unknown IDs, balances, phases, expiries) it checks for real, so
the API's error mapping is exercised with the node's own error classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from perund.api.node_info import NodeInfo
from perund.api.views import (
    AccountBalance,
    AssetBalance,
    ChannelView,
    Notification,
    Payment,
    PaymentPage,
    PaymentView,
    PeerView,
    ProposalView,
    SessionInfo,
    SessionOpened,
    UpdateView,
    payment_view,
)
from perund.channel.types import ETH, Address, ChannelID, hex_address, to_address
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvalidConfig,
    ResourceExists,
    ResourceNotFound,
    StoreCorrupt,
    UserResponseTimedOut,
)
from perund.storage.archive import PaymentArchive
from perund.storage.history import PaymentHistory, PaymentQuery
from perund.storage.payments import PaymentRecord

ADJUDICATOR = to_address("0x" + "ad" * 20)
RESPONSE_TIMEOUT = 60.0


@dataclass
class _Pending:
    view: ProposalView | UpdateView
    apply: Callable[[], ChannelView | None]


class MemoryShelf:
    """A `NoticeShelf` in a dict: it outlives the hubs, as a session's store does."""

    def __init__(self) -> None:
        self.records: dict[int, bytes] = {}

    def kept(self) -> dict[int, bytes]:
        return dict(self.records)

    def keep(self, key: int, record: bytes) -> None:
        self.records[key] = record

    def drop(self, key: int) -> None:
        self.records.pop(key, None)


@dataclass
class _Session:
    id: bytes
    address: Address
    account: Address
    peers: dict[str, PeerView] = field(default_factory=dict)
    channels: dict[bytes, ChannelView] = field(default_factory=dict)
    pending: dict[bytes, _Pending] = field(default_factory=dict)
    listeners: list[Callable[[Notification], None]] = field(default_factory=list)
    on_chain: dict[Address, int] = field(default_factory=dict)
    shelf: MemoryShelf = field(default_factory=lambda: MemoryShelf())
    # The real history over records kept in memory only (its archive file never exists).
    history: PaymentHistory = field(
        default_factory=lambda: PaymentHistory(PaymentArchive("/nonexistent/perund-memfacade")))

    def notify(self, note: Notification) -> None:
        for listener in list(self.listeners):
            listener(note)


class MemoryNode:
    """NodeFacade over dicts. `calls` records every facade method called, in order."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.sessions: dict[bytes, _Session] = {}
        self.calls: list[str] = []
        self.peer_waits: list[int | None] = []
        """Each channel_close's peer wait, in order."""
        self.max_fees: list[Mapping[Address, int] | None] = []
        """The maxFee of each channel_open, as the dispatcher passed it."""

    # -- helpers ------------------------------------------------------------------------------

    def _session(self, session_id: bytes) -> _Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise ResourceNotFound("no such session", type="session", id="0x" + session_id.hex())
        return session

    def _channel(self, session: _Session, channel_id: bytes) -> ChannelView:
        channel = session.channels.get(channel_id)
        if channel is None:
            raise ResourceNotFound("no such channel", type="channel", id="0x" + channel_id.hex())
        return channel

    @staticmethod
    def _peer(session: _Session, peer: str) -> PeerView:
        for view in session.peers.values():
            if peer == view.alias or peer.lower() == hex_address(view.off_chain_address).lower():
                return view
        raise ResourceNotFound(f"no contact {peer!r}", type="peer", id=peer)

    # -- NodeFacade -----------------------------------------------------------------------------

    async def node_get_config(self) -> NodeInfo:
        self.calls.append("node_get_config")
        return NodeInfo("", 1337, ADJUDICATOR, ("tcp",), "test", RESPONSE_TIMEOUT)

    async def node_time(self) -> float:
        self.calls.append("node_time")
        return float(self.clock.seconds())

    async def session_open(self, config_file: str) -> SessionOpened:
        self.calls.append("session_open")
        if config_file.startswith("missing"):
            raise InvalidConfig(f"cannot read {config_file}", name="configFile",
                                value=config_file)
        if config_file == "crash":
            raise RuntimeError("secret detail at /home/user/.perund/keystore")
        if config_file == "corrupt":
            raise StoreCorrupt("record 7 of /srv/db is damaged", file="/srv/db")
        session = _Session(os.urandom(16), Address(os.urandom(20)), Address(os.urandom(20)),
                           on_chain={ETH: 10**18})
        self.sessions[session.id] = session
        return SessionOpened(session.id, session.address, session.account, ())

    async def session_list(self) -> list[SessionInfo]:
        self.calls.append("session_list")
        return [SessionInfo(s.id, f"/sessions/{s.id.hex()}/session.yaml", s.address, s.account,
                            len(s.channels)) for s in self.sessions.values()]

    async def session_close(self, session_id: bytes, force: bool) -> list[ChannelView]:
        self.calls.append("session_close")
        session = self._session(session_id)
        still_open = [c for c in session.channels.values() if c.phase != "closed"]
        if still_open and not force:
            raise FailedPrecondition("session has open channels",
                                     openChannels=["0x" + c.channel_id.hex() for c in still_open])
        del self.sessions[session_id]
        return still_open

    async def session_add_peer(self, session_id: bytes, alias: str, off_chain_address: Address,
                               comm_address: str, comm_type: str) -> PeerView:
        self.calls.append("session_add_peer")
        session = self._session(session_id)
        if alias.lower() == "self":
            raise InvalidArgument("alias: 'self' is reserved", name="alias", value=alias,
                                  requirement="not 'self'")
        if alias in session.peers:
            raise ResourceExists(f"contact {alias} exists", type="peer", id=alias)
        view = PeerView(alias, off_chain_address, comm_address, comm_type)
        session.peers[alias] = view
        return view

    async def session_get_peer(self, session_id: bytes, alias: str) -> PeerView:
        self.calls.append("session_get_peer")
        session = self._session(session_id)
        if alias not in session.peers:
            raise ResourceNotFound(f"no contact named {alias!r}", type="peer", id=alias)
        return session.peers[alias]

    async def session_list_peers(self, session_id: bytes) -> list[PeerView]:
        self.calls.append("session_list_peers")
        return sorted(self._session(session_id).peers.values(), key=lambda p: p.alias)

    async def session_balance(self, session_id: bytes) -> AccountBalance:
        self.calls.append("session_balance")
        session = self._session(session_id)
        return AccountBalance(session.account, dict(session.on_chain))

    async def channel_open(self, session_id: bytes, peer: str,
                           balances: Mapping[Address, tuple[int, int]],
                           challenge_duration: int | None,
                           via: str | None = None,
                           max_fee: Mapping[Address, int] | None = None) -> ChannelView:
        self.calls.append("channel_open")
        self.max_fees.append(max_fee)
        session = self._session(session_id)
        contact = self._peer(session, peer)
        intermediary = None if via is None else self._peer(session, via).alias
        view = ChannelView(
            os.urandom(32), contact.alias, contact.off_chain_address, "open", 0,
            tuple(AssetBalance(a, ours, theirs) for a, (ours, theirs) in balances.items()),
            600 if challenge_duration is None else challenge_duration,
            funded_by=() if via is None else (ChannelID(os.urandom(32)),
                                              ChannelID(os.urandom(32))),
            via=intermediary)
        session.channels[view.channel_id] = view
        return view

    async def channel_respond_proposal(self, session_id: bytes, proposal_id: bytes,
                                       accept: bool) -> ChannelView | None:
        self.calls.append("channel_respond_proposal")
        return self._answer(self._session(session_id), proposal_id, accept, "proposal")

    async def channel_list(self, session_id: bytes) -> list[ChannelView]:
        self.calls.append("channel_list")
        return list(self._session(session_id).channels.values())

    async def channel_list_retired(self, session_id: bytes, limit: int, before: bytes | None,
                                   ) -> tuple[list[ChannelView], bytes | None]:
        self.calls.append("channel_list_retired")
        self._session(session_id)
        if before is not None:  # this facade retires nothing
            raise ResourceNotFound("no such retired channel")
        return [], None

    async def channel_get(self, session_id: bytes, channel_id: bytes) -> ChannelView:
        self.calls.append("channel_get")
        session = self._session(session_id)
        return self._channel(session, channel_id)

    async def channel_send(self, session_id: bytes, channel_id: bytes,
                           payments: Sequence[Payment],
                           reference: str | None = None) -> ChannelView:
        self.calls.append("channel_send")
        session = self._session(session_id)
        channel = self._channel(session, channel_id)
        if channel.phase != "open":
            raise FailedPrecondition(f"channel is {channel.phase}", phase=channel.phase)
        moves: dict[Address, int] = {}
        for index, payment in enumerate(payments):
            if payment.payee == "self":
                moves[payment.asset] = moves.get(payment.asset, 0) - payment.amount
            elif self._peer(session, payment.payee).alias == channel.peer:
                moves[payment.asset] = moves.get(payment.asset, 0) + payment.amount
            else:
                raise InvalidArgument("the payee is not this channel's peer",
                                      name=f"payments[{index}].payee", value=payment.payee,
                                      requirement="'self' or the channel's peer")
        updated = self._moved(channel, moves)
        session.channels[channel_id] = updated
        peer = self._peer(session, channel.peer).off_chain_address
        for asset, moved in moves.items():
            record = PaymentRecord(session.history.next_id, ChannelID(channel_id), peer,
                                   "sent" if moved > 0 else "received", asset, abs(moved),
                                   updated.version, self.clock.seconds(), moved < 0,
                                   reference=reference)
            session.history.add([record])
            session.notify(payment_view(record, lambda address: channel.peer))
        return updated

    async def payment_list(self, session_id: bytes, query: PaymentQuery, peer: str | None,
                           limit: int, cursor: str | None) -> PaymentPage:
        self.calls.append("payment_list")
        session = self._session(session_id)
        if peer is not None:
            query = replace(query, peer=self._peer(session, peer).off_chain_address)
        page = session.history.page(query, limit, cursor)
        return PaymentPage(tuple(payment_view(r, self._alias_of(session))
                                 for r in page.payments), page.next_cursor)

    async def payment_get(self, session_id: bytes, payment_id: int) -> PaymentView:
        self.calls.append("payment_get")
        session = self._session(session_id)
        record = session.history.get(payment_id)
        if record is None:
            raise ResourceNotFound("no such payment", type="payment", id=str(payment_id))
        return payment_view(record, self._alias_of(session))

    @staticmethod
    def _alias_of(session: _Session) -> Callable[[Address], str | None]:
        by_address = {view.off_chain_address: view.alias for view in session.peers.values()}
        return by_address.get

    async def channel_respond_update(self, session_id: bytes, channel_id: bytes,
                                     update_id: bytes, accept: bool) -> ChannelView:
        self.calls.append("channel_respond_update")
        session = self._session(session_id)
        self._channel(session, channel_id)
        result = self._answer(session, update_id, accept, "update")
        return result if result is not None else session.channels[channel_id]

    async def channel_close(self, session_id: bytes, channel_id: bytes,
                            force: bool, peer_wait: int | None = None) -> ChannelView:
        self.calls.append("channel_close")
        self.peer_waits.append(peer_wait)
        session = self._session(session_id)
        channel = self._channel(session, channel_id)
        if channel.phase == "closed":
            raise FailedPrecondition("channel is closed", phase="closed")
        closed = replace(channel, phase="closed", version=channel.version + (0 if force else 1),
                         is_final=not force)
        session.channels[channel_id] = closed
        session.notify(UpdateView(None, channel_id, "closed", closed, None,
                                  error="forced" if force else None))
        return closed

    def subscribe_notices(self, session_id: bytes, callback: Callable[[Notification], None],
                          wants_updated: Callable[[bytes], bool] | None = None,
                          wants_payments: Callable[[bytes], bool] | None = None,
                          ) -> Callable[[], None]:
        self.calls.append("subscribe_notices")
        session = self._session(session_id)
        session.listeners.append(callback)
        return lambda: session.listeners.remove(callback)

    def notice_shelf(self, session_id: bytes) -> MemoryShelf:
        self.calls.append("notice_shelf")
        return self._session(session_id).shelf

    # -- the peer's side, driven by tests -------------------------------------------------------

    def propose(self, session_id: bytes, alias: str,
                balances: Mapping[Address, tuple[int, int]]) -> ProposalView:
        """The peer `alias` proposes a channel (balances as (ours, the peer's))."""
        session = self._session(session_id)
        contact = session.peers[alias]
        view = ProposalView(os.urandom(32), alias, contact.off_chain_address,
                            tuple(AssetBalance(a, o, p) for a, (o, p) in balances.items()),
                            600, self.clock.seconds() + RESPONSE_TIMEOUT)

        def accept() -> ChannelView:
            channel = ChannelView(os.urandom(32), alias, contact.off_chain_address, "open", 0,
                                  view.balances, view.challenge_duration)
            session.channels[channel.channel_id] = channel
            return channel

        session.pending[view.proposal_id] = _Pending(view, accept)
        session.notify(view)
        return view

    def peer_update(self, session_id: bytes, channel_id: bytes, asset: Address, to_us: int,
                    final: bool = False) -> UpdateView:
        """The peer proposes to move `to_us` (negative: a request) of `asset` to us."""
        session = self._session(session_id)
        channel = self._channel(session, channel_id)
        proposed = replace(self._moved(channel, {asset: -to_us}), is_final=final)
        kind = "final" if final else ("payment" if to_us >= 0 else "request")
        view = UpdateView(os.urandom(32), channel_id, "final" if final else "open", proposed,
                          self.clock.seconds() + RESPONSE_TIMEOUT, kind=kind)

        def accept() -> ChannelView:
            session.channels[channel_id] = proposed
            return proposed

        session.pending[view.update_id or b""] = _Pending(view, accept)
        session.notify(view)
        return view

    def _answer(self, session: _Session, key: bytes, accept: bool,
                what: str) -> ChannelView | None:
        pending = session.pending.pop(key, None)
        if pending is None:
            raise ResourceNotFound(f"no such {what}", type=what, id="0x" + key.hex())
        expiry = pending.view.expiry
        if expiry is not None and self.clock.seconds() >= expiry:
            raise UserResponseTimedOut("the answer came after the expiry", expiry=expiry,
                                       receivedAt=self.clock.seconds())
        return pending.apply() if accept else None

    @staticmethod
    def _moved(channel: ChannelView, moves: Mapping[Address, int]) -> ChannelView:
        """`channel` with `moves[asset]` base units moved from us to the peer (negative:
        from the peer to us), one version up."""
        rows = []
        for row in channel.balances:
            delta = moves.get(row.asset, 0)
            if row.ours - delta < 0 or row.peer + delta < 0:
                # The shape of the channel core's error (base units, the asset, what is there).
                available = row.ours if row.ours - delta < 0 else row.peer
                raise InvalidArgument("insufficient balance", name="amount",
                                      value=str(abs(delta)), requirement=f"at most {available}",
                                      asset="0x" + bytes(row.asset).hex(),
                                      available=str(available))
            rows.append(AssetBalance(row.asset, row.ours - delta, row.peer + delta))
        unknown = set(moves) - {row.asset for row in channel.balances}
        if unknown:
            raise InvalidArgument("the channel does not hold that currency", name="payments",
                                  value=hex_address(next(iter(unknown))),
                                  requirement="a currency of the channel")
        return replace(channel, balances=tuple(rows), version=channel.version + 1)
