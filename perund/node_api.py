"""NodeAPI: the node's side of the user API (`perund.api.facade.NodeFacade`).

It turns API calls into session and channel-client calls, and the client's notices into the
API's notifications; the API layer (perund/api) does all JSON, validation and rendering.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, TypeVar

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore

from perund import __version__
from perund.api.node_views import (
    AccountBalance,
    NodeInfo,
    PeerView,
    SessionInfo,
    SessionOpened,
    peer_view,
)
from perund.api.views import (
    ChannelView,
    Notification,
    Payment,
    PaymentPage,
    PaymentView,
    channel_view,
    notification_of,
    payment_view,
)
from perund.chain.urls import shown_url
from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.proposal import MAX_CHALLENGE_DURATION, OpenRequest
from perund.channel.records import Channel
from perund.channel.types import ETH, Address, ChannelID, VirtualParams, hex_address
from perund.channel.virtual_opening import VirtualOpenRequest
from perund.contacts.book import parse_account_address
from perund.errors import (
    FailedPrecondition,
    InsufficientFunds,
    InvalidArgument,
    PerundError,
    ResourceNotFound,
)
from perund.ratelimit import WorkAllowance
from perund.session.notices import ChannelNotice, Notice
from perund.session.session import Session, min_challenge_duration
from perund.storage.history import SCAN_BUDGET, Page, PaymentHistory, PaymentQuery
from perund.storage.payments import PaymentRecord
from perund.storage.store import SessionStore

_T = TypeVar("_T")

DEFAULT_CHALLENGE_DURATION = 3600


def _ether(wei: int) -> str:
    """Wei as ether, every significant digit: `1.5`, `0.000021`."""
    text = format(Decimal(wei) / 10**18, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


KEPT_PUSH = "push:"
"""The store's meta names of the pushes a session's hub keeps (`push:<key>`)."""


class StoreShelf:
    """A session hub's `NoticeShelf` on the session's store (meta values `push:<key>`)."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    def kept(self) -> dict[int, bytes]:
        """Every kept push by key (names that are not `push:<int>` are not ours)."""
        kept = {}
        for name, value in self._store.metas(KEPT_PUSH).items():
            key = name[len(KEPT_PUSH):]
            if key.isdigit():
                kept[int(key)] = value
        return kept

    def keep(self, key: int, record: bytes) -> None:
        """Keep one push (durable with the store's next commit)."""
        self._store.set_meta(f"{KEPT_PUSH}{key}", record)

    def drop(self, key: int) -> None:
        """Forget one push."""
        self._store.delete_meta(f"{KEPT_PUSH}{key}")


RETIRED_KEYS_PER_UNIT: Final = 256
"""Places of the store's retired channels' index (`SessionStore.retired_ids`) that
`channel_listRetired` may walk for one unit of a session's listing allowance
(perund.session.session.LISTING_RATE)."""


class NodeAPI:
    """Implements `NodeFacade` on a `NodeService`."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._user_reads: DeferredSemaphore | None = None

    # -- helpers ---------------------------------------------------------------------------------

    def _read(self, f: Callable[..., Deferred[_T]], *args: Any) -> Deferred[_T]:
        """Run a chain read that a user's call asked for. Users' reads hold at most all but one
        of the chain pool's threads (one, on a one-thread pool): the rest queue here, not in
        the pool, so the watcher's polls and the settlement's reads and transactions never
        wait behind a user's pile of them."""
        if self._user_reads is None:
            threads = self.node.chain.pool.max
            self._user_reads = DeferredSemaphore(max(1, threads - 1))
        return self._user_reads.run(f, *args)

    def _session(self, session_id: bytes) -> Session:
        session: Session = self.node.session(session_id.hex())
        return session

    def _alias_of(self, session: Session) -> Callable[[Address], str | None]:
        def alias_of(address: Address) -> str | None:
            contact = session.contacts.by_address(address)
            return None if contact is None else contact.alias

        return alias_of

    def _channel(self, session: Session, channel_id: bytes, retired: bool = False) -> Channel:
        """The session's channel `channel_id`; with `retired`, a channel closed for longer than
        limits.closed_channel_retention too (read from the store: perund.session.retirement)."""
        channel = session.client.channels.get(ChannelID(channel_id))
        if channel is None and retired:
            channel = session.store.retired_channel(ChannelID(channel_id))
        if channel is None:
            raise ResourceNotFound("no such channel", type="channel", id="0x" + channel_id.hex())
        return channel

    def _view(self, session: Session, channel: Channel) -> ChannelView:
        params = channel.params
        parent = None
        if type(params) is VirtualParams:
            parent_id = params.parents[channel.index]
            # A retired virtual channel's parent may have retired too.
            parent = session.client.channels.get(parent_id) \
                or session.store.retired_channel(parent_id)
        payout = session.client.payouts.of(channel.channel_id) or {}
        return channel_view(channel, self._alias_of(session),
                            paid_out=tuple((a, p.paid) for a, p in payout.items()) if payout
                            else None,
                            via=None if parent is None else parent.peer,
                            credited=tuple((a, p.credited) for a, p in payout.items()
                                           if p.credited),
                            withdrawn=tuple((a, p.withdrawn_at) for a, p in payout.items()
                                            if p.credited and p.withdrawn_at is not None),
                            fees=session.client.fees.totals(channel.channel_id),
                            deposits_missing=self._deposits_missing(session, channel),
                            deposits_back=self._deposits_back(session, channel))

    @staticmethod
    def _deposits_missing(session: Session, channel: Channel,
                          ) -> tuple[tuple[Address, int, int], ...]:
        """What the chain lacks of `channel` while the session holds it for that."""
        held = session.missing_deposits
        if held is None:
            return ()
        return tuple((lack.asset, lack.expected, lack.held)
                     for lack in held.missing(channel.channel_id))

    @staticmethod
    def _deposits_back(session: Session, channel: Channel) -> tuple[tuple[Address, int], ...]:
        """What a forced close of `channel` would pay us while it is held because only the
        peer's deposit is missing (perund.session.held_close); empty otherwise."""
        holds = session.client.holds
        back = None if holds is None else holds.deposits_back(channel)
        return back or ()

    # -- node ------------------------------------------------------------------------------------

    async def node_get_config(self) -> NodeInfo:
        chain = self.node.chain
        # The bounds every session's deployment takes (`Session.open`), so that a client can
        # offer a duration the node will take rather than learn them from a refusal.
        return NodeInfo(shown_url(self.node.config.chain.url) or "embedded", chain.chain_id,
                        chain.adjudicator, ("tcp",), __version__,
                        self.node.config.timeouts.response,
                        min_challenge_duration(self.node.config), MAX_CHALLENGE_DURATION)

    async def node_time(self) -> float:
        return float(self.node.clock.seconds()) if self.node.clock else time.time()

    # -- sessions --------------------------------------------------------------------------------

    async def session_open(self, config_file: str) -> SessionOpened:
        session = await self.node.open_session(config_file)
        return SessionOpened(bytes.fromhex(session.id), session.client.address,
                             session.account.address,
                             tuple(self._view(session, c) for c in session.restored))

    async def session_list(self) -> list[SessionInfo]:
        return [SessionInfo(bytes.fromhex(s.id), str(s.config.path), s.client.address,
                            s.account.address, len(s.open_channels()),
                            s.config.intermediary if s.config.intermediary.enabled else None)
                for s in self.node.sessions.values()]

    async def session_close(self, session_id: bytes, force: bool) -> list[ChannelView]:
        session = self._session(session_id)
        left = await self.node.close_session(session.id, force)
        return [self._view(session, c) for c in left]

    async def session_add_peer(self, session_id: bytes, alias: str, off_chain_address: Address,
                               comm_address: str, comm_type: str) -> PeerView:
        session = self._session(session_id)
        contact = session.contacts.add(alias, hex_address(off_chain_address), comm_address,
                                       comm_type)
        flushed = session.store.flush()
        if flushed is not None:
            await flushed
        return peer_view(contact)

    async def session_get_peer(self, session_id: bytes, alias: str) -> PeerView:
        return peer_view(self._session(session_id).contacts.by_alias(alias))

    async def session_list_peers(self, session_id: bytes) -> list[PeerView]:
        session = self._session(session_id)
        contacts = session.contacts.list()
        _listing(session, "contacts", len(contacts))
        return [peer_view(c) for c in contacts]

    async def session_balance(self, session_id: bytes) -> AccountBalance:
        session = self._session(session_id)
        chain, account = self.node.chain, session.account.address
        currencies = list(self.node.currencies)
        # Read side by side (the chain's pool has several threads on an HTTP node).
        outcomes = await DeferredList(
            [self._read(chain.balance, account) if c.asset == ETH
             else self._read(chain.token_balance, c.asset, account) for c in currencies],
            consumeErrors=True)
        if not any(succeeded for succeeded, _ in outcomes):
            outcomes[0][1].raiseException()  # nothing could be read: the chain is away
        # One token whose reads fail (its balanceOf reverts) hides no other currency.
        balances, errors = {}, {}
        for currency, (succeeded, result) in zip(currencies, outcomes, strict=True):
            if succeeded:
                balances[currency.asset] = result
            else:
                error = result.value
                errors[currency.asset] = error.message if isinstance(error, PerundError) \
                    else "the read failed"
        return AccountBalance(account, balances, errors)

    # -- channels --------------------------------------------------------------------------------

    def _amount(self, asset: Address, units: int) -> str:
        """`2.5 ETH`, `10 PRN`: an amount as the user names it."""
        label, amount = self.node.currencies.render(asset, units)
        return f"{amount} {label}"

    def _refuse_disabled(self, assets: Iterable[Address]) -> None:
        """FailedPrecondition for a channel in a token the node disabled at its start
        (`perund.node_assets`): no new channel holds it, whoever proposed it."""
        currencies = self.node.currencies
        for asset in assets:
            why = currencies.disabled(asset)
            if why is not None:
                symbol = currencies.label(asset)[0]
                raise FailedPrecondition(
                    f"{symbol} is disabled on this node: {why}; no channel is opened or "
                    "accepted in it (node_getConfig shows it; the node's log says more)",
                    asset=symbol, disabled=why)

    async def _can_fund(self, session: Session, deposits: Mapping[Address, int]) -> None:
        """InsufficientFunds, before anything is sent to anyone, when the session's on-chain
        account cannot pay its deposits (of every asset) and the gas of their transactions;
        FailedPrecondition for an asset the node does not know."""
        currencies = self.node.currencies
        unknown = [asset for asset in deposits if currencies.by_asset(asset) is None]
        if unknown:
            raise FailedPrecondition(
                f"the channel would hold {hex_address(unknown[0])}, which is no asset of this "
                "node's (node_getConfig lists them; chain.assets configures them)",
                asset=hex_address(unknown[0]))
        self._refuse_disabled(deposits)
        tokens = [asset for asset, amount in deposits.items() if amount > 0 and asset != ETH]
        if not tokens and not deposits.get(ETH, 0):
            return  # nothing for us to deposit: no transaction either
        chain, account = self.node.chain, session.account.address
        for token in tokens:
            held = await self._read(chain.token_balance, token, account)
            if held < deposits[token]:
                symbol = currencies.label(token)[0]
                raise InsufficientFunds(
                    f"the on-chain account {hex_address(account)} holds "
                    f"{self._amount(token, held)}; this channel needs "
                    f"{self._amount(token, deposits[token])} deposited", asset=symbol,
                    account=hex_address(account),
                    required=currencies.render(token, deposits[token])[1],
                    available=currencies.render(token, held)[1])
        # One deposit transaction (of every asset), and an approval per token.
        fee = await self._read(chain.deposit_fee, account, len(tokens))
        eth_needed = deposits.get(ETH, 0) + fee
        available = await self._read(chain.balance, account)
        if available < eth_needed:
            deposit = _ether(deposits.get(ETH, 0))
            raise InsufficientFunds(
                f"the on-chain account {hex_address(account)} holds {_ether(available)} ETH; "
                f"this channel needs {deposit} ETH deposited plus up to {_ether(fee)} ETH of "
                f"gas: {_ether(eth_needed)} ETH", asset="ETH", account=hex_address(account),
                required=_ether(eth_needed), available=_ether(available))

    async def channel_open(self, session_id: bytes, peer: str,
                           balances: Mapping[Address, tuple[int, int]],
                           challenge_duration: int | None,
                           via: str | None = None,
                           max_fee: Mapping[Address, int] | None = None) -> ChannelView:
        session = self._session(session_id)
        contact = session.contacts.resolve(peer)
        # Only an omitted duration takes the default: a 0 is refused, with the range.
        duration = DEFAULT_CHALLENGE_DURATION if challenge_duration is None \
            else challenge_duration
        if max_fee is not None and via is None:
            raise InvalidArgument("maxFee limits an intermediary's fee: it goes with via",
                                  name="maxFee", value=None, requirement="via as well")
        if via is not None:
            limits = dict(max_fee or {})
            foreign = [asset for asset in limits if asset not in balances]
            if foreign:
                symbol = self.node.currencies.label(foreign[0])[0]
                raise InvalidArgument(f"maxFee names {symbol}, which the channel does not hold",
                                      name=f"maxFee.{symbol}", value=None,
                                      requirement="a currency of balances")
            self._refuse_disabled(balances)
            # Funded by a lock in our ledger channel with the intermediary: no deposit.
            virtual = VirtualOpenRequest(
                contact.off_chain_address, session.contacts.resolve(via, "via").off_chain_address,
                tuple(balances), tuple(balances.values()),
                duration,
                tuple(limits.get(asset, 0) for asset in balances))
            return self._view(session, await session.client.open_channel(virtual))
        await self._can_fund(session, {asset: ours for asset, (ours, _) in balances.items()})
        request = OpenRequest(contact.off_chain_address, tuple(balances),
                              tuple(balances.values()),
                              duration)
        return self._view(session, await session.client.open_channel(request))

    async def channel_respond_proposal(self, session_id: bytes, proposal_id: bytes,
                                       accept: bool) -> ChannelView | None:
        session = self._session(session_id)
        if accept:
            self._refuse_disabled(session.client.proposed_assets(proposal_id))
            await self._can_fund(session, session.client.proposed_deposits(proposal_id))
        channel = await session.client.respond_proposal(proposal_id, accept)
        return None if channel is None else self._view(session, channel)

    async def channel_list(self, session_id: bytes) -> list[ChannelView]:
        session = self._session(session_id)
        channels = list(session.client.channels.values())
        _listing(session, "channels", 2 * len(channels))
        return [self._view(session, c) for c in channels]

    async def channel_get(self, session_id: bytes, channel_id: bytes) -> ChannelView:
        session = self._session(session_id)
        return self._view(session, self._channel(session, channel_id, retired=True))

    async def channel_list_retired(self, session_id: bytes, limit: int, before: bytes | None,
                                   ) -> tuple[list[ChannelView], bytes | None]:
        session = self._session(session_id)
        store = session.store
        if before is not None and store.retired_channel(ChannelID(before)) is None:
            raise ResourceNotFound("no such retired channel", type="channel",
                                   id="0x" + before.hex())
        ids, looked = store.retired_ids(limit + 1,
                                        None if before is None else ChannelID(before))
        # The index is walked from `before` back: records superseded on the way (made live
        # or retired again) cost the reactor their places as well (about 250 for one unit).
        _listing(session, "channels", 2 * min(len(ids), limit) + looked // RETIRED_KEYS_PER_UNIT)
        views = []
        for channel_id in ids[:limit]:
            channel = store.retired_channel(channel_id)
            if channel is not None:
                views.append(self._view(session, channel))
        return views, (ids[limit - 1] if len(ids) > limit else None)

    async def channel_send(self, session_id: bytes, channel_id: bytes,
                           payments: Sequence[Payment],
                           reference: str | None = None) -> ChannelView:
        session = self._session(session_id)
        channel = self._channel(session, channel_id)
        totals: dict[Address, int] = {}
        for payment in payments:
            if payment.payee.lower() == "self":
                amount = -payment.amount
            else:
                payee = session.contacts.resolve(payment.payee, "payee")
                if payee.off_chain_address != channel.peer:
                    raise InvalidArgument(
                        "the payee is not this channel's peer", name="payee",
                        value=payment.payee, requirement="'self' or the channel's peer")
                amount = payment.amount
            totals[payment.asset] = totals.get(payment.asset, 0) + amount
        held = channel.latest.assets
        for asset in totals:
            if asset not in held:
                currencies = self.node.currencies
                raise InvalidArgument(
                    f"this channel holds no {currencies.label(asset)[0]}, only "
                    + ", ".join(currencies.label(a)[0] for a in held), name="currency",
                    value=currencies.label(asset)[0], requirement="a currency of the channel")
        transfers = tuple((asset, amount) for asset, amount in totals.items() if amount)
        if not transfers:
            raise InvalidArgument("the payments cancel out", name="payments",
                                  value=len(payments), requirement="a net transfer")
        return self._view(session, await session.client.send(channel.channel_id, transfers,
                                                             reference=reference))

    async def channel_respond_update(self, session_id: bytes, channel_id: bytes,
                                     update_id: bytes, accept: bool) -> ChannelView:
        session = self._session(session_id)
        channel = await session.client.respond_update(ChannelID(channel_id), update_id, accept)
        return self._view(session, channel)

    async def channel_close(self, session_id: bytes, channel_id: bytes,
                            force: bool, peer_wait: int | None = None,
                            accept_deposits_back: bool = False) -> ChannelView:
        session = self._session(session_id)
        channel = self._channel(session, channel_id)
        if channel.phase is Phase.CLOSED:
            raise FailedPrecondition("the channel is closed already",
                                     channel_id="0x" + channel_id.hex())
        if channel.phase is Phase.CHAIN_LOST:
            raise FailedPrecondition("the chain lost this channel's deposits: there is nothing "
                                     "to close (docs/operations.md)",
                                     channel_id="0x" + channel_id.hex())
        if force:
            closed = await session.client.force_close(channel.channel_id,
                                                      accept_deposits_back)
        else:
            closed = await session.client.close(channel.channel_id, peer_wait)
        return self._view(session, closed)

    # -- payment history -------------------------------------------------------------------------

    async def payment_list(self, session_id: bytes, query: PaymentQuery, peer: str | None,
                           limit: int, cursor: str | None) -> PaymentPage:
        session = self._session(session_id)
        if peer is not None:
            query = dataclasses.replace(query, peer=self._peer_address(session, peer))
        page = allowed_page(session.store.history, session.history_scans, query, limit, cursor)
        alias_of = self._alias_of(session)
        return PaymentPage(tuple(payment_view(r, alias_of) for r in page.payments),
                           page.next_cursor)

    async def payment_get(self, session_id: bytes, payment_id: int) -> PaymentView:
        session = self._session(session_id)
        record = session.store.history.get(payment_id)
        if record is None:
            raise ResourceNotFound("no such payment", type="payment", id=str(payment_id))
        return payment_view(record, self._alias_of(session))

    @staticmethod
    def _peer_address(session: Session, peer: str) -> Address:
        """A peer named by alias (a contact), or by 0x address (a contact or a former one)."""
        if peer.startswith("0x"):
            try:
                return parse_account_address(peer)
            except ValueError as exc:
                raise InvalidArgument(str(exc), name="peer", value=peer[:64],
                                      requirement="a contact's alias or a 0x address") from None
        return session.contacts.by_alias(peer).off_chain_address

    def subscribe_notices(self, session_id: bytes, callback: Callable[[Notification], None],
                          wants_updated: Callable[[bytes], bool] | None = None,
                          wants_payments: Callable[[bytes], bool] | None = None,
                          ) -> Callable[[], None]:
        session = self._session(session_id)
        alias_of = self._alias_of(session)

        def paid(records: list[PaymentRecord]) -> None:
            for record in records:
                if wants_payments is None or wants_payments(record.channel_id):
                    callback(payment_view(record, alias_of))

        def observe(notice: Notice) -> None:
            if wants_updated is not None and isinstance(notice, ChannelNotice) and type(
                    notice.event) is ev.NewState and not wants_updated(
                    notice.channel.channel_id):
                return  # an incoming payment nobody subscribed to: build no view of it
            notification = notification_of(notice, alias_of)
            if notification is not None:
                callback(notification)

        session.client.observers.append(observe)
        session.store.payment_listeners.append(paid)
        for notice in session.take_early_notices():
            observe(notice)

        def unsubscribe() -> None:
            if observe in session.client.observers:
                session.client.observers.remove(observe)
            if paid in session.store.payment_listeners:
                session.store.payment_listeners.remove(paid)

        return unsubscribe

    def notice_shelf(self, session_id: bytes) -> StoreShelf:
        return StoreShelf(self._session(session_id).store)


def _listing(session: Session, what: str, units: int) -> None:
    """Take `units` of the session's listing allowance (`Session.listings`); FailedPrecondition,
    saying when to come back, when it has too few. A listing larger than the whole allowance
    passes when the allowance is full."""
    allowance = session.listings
    needed = min(units, allowance.burst)
    if allowance.available() < needed:
        wait = max(allowance.seconds_until(needed), 0.1)
        raise FailedPrecondition(
            f"this session's listings of {what} are over their rate: try again in {wait:.1f} s",
            retryAfter=round(wait, 1))
    allowance.spend(units)


def allowed_page(history: PaymentHistory, allowance: WorkAllowance, query: PaymentQuery,
                 limit: int, cursor: str | None) -> Page:
    """`history.page`, looking at no more records than `allowance` has left (the page ends
    early with a cursor then); FailedPrecondition, saying when to come back, if it has fewer
    than the page may need (`limit`, at most `SCAN_BUDGET`)."""
    budget = allowance.available()
    needed = min(limit, SCAN_BUDGET)
    if budget < needed:
        wait = max(allowance.seconds_until(needed), 0.1)
        raise FailedPrecondition(
            f"this session's history queries are over their rate: try again in {wait:.1f} s",
            retryAfter=round(wait, 1))
    page = history.page(query, limit, cursor, budget=min(budget, SCAN_BUDGET))
    allowance.spend(page.scanned)
    return page
