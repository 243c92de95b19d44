"""Session: one user's keys, contacts, peer listener, store and channels inside the node.

A session is opened from its `session.yaml` (docs/configuration.md): the keystores are
unlocked, the store is opened (and repaired), the contacts are loaded, the peer listener starts,
and every channel not yet settled is restored and resumed: funding continues, in-flight updates
are resolved by syncing with each peer on (re)connection.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from perund.api.amounts import Currencies
from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.chain.chain_view import ChainView
from perund.chain.urls import shown_url
from perund.chain.watcher import ChainWatcher
from perund.channel.changes import ConclusionLost
from perund.channel.fees import FeeSchedule
from perund.channel.phases import TERMINAL
from perund.channel.proposal import Deployment
from perund.channel.records import Channel
from perund.channel.types import ETH, ChannelID, hex_address
from perund.config import NodeConfig
from perund.contacts.book import Contact, ContactBook
from perund.errors import FailedPrecondition, InvalidConfig, StoreError, StoreLocked
from perund.peer.manager import PeerManager
from perund.peer.table import NODE_STOPPED, SESSION_CLOSED
from perund.ratelimit import WorkAllowance
from perund.safe_files import FileRules
from perund.session.chain_check import (
    AssetLabel,
    Shortfall,
    default_label,
    log_lost_conclusion,
    lost_conclusions,
    mismatch,
    shortfalls,
)
from perund.session.client import ChannelClient
from perund.session.config import SessionConfig, SessionKeys, read_session_files, unlock
from perund.session.fee_config import resolve_fee
from perund.session.held_close import HeldCloses
from perund.session.missing_deposits import MissingDeposits, OwnShares
from perund.session.notices import Notice
from perund.session.onchain import ChainSettlement
from perund.session.retirement import Retirement
from perund.session.unconfirmed import UnconfirmedCheck
from perund.session.withdrawals import Withdrawals
from perund.storage.fsync_thread import fsync_thread
from perund.storage.history import SCAN_BUDGET
from perund.storage.store import SessionStore
from perund.words import plural

log = Logger(namespace="perund.session")

EARLY_NOTICES = 512
"""Notices a session keeps from before anyone listened (its restore and first poll); older
ones are dropped first."""

FUNDING_RECHECK_POLLS = 10
"""A funding wait reads the holdings by itself every this many watcher polls, should the
watcher's news of a deposit not come (the chain was unreachable for its poll, say)."""

MIN_CHALLENGE_MARGIN = 3.0
"""The challenge duration must exceed what the node needs to react, this many times over."""


def reaction_time(config: NodeConfig) -> float:
    """Seconds this node may take to answer a dispute, by its configuration: a poll, the
    confirmation depth in blocks, a transaction mined (the chain's answering time aside:
    `perund.challenge_watch`)."""
    chain = config.chain
    return chain.poll_interval + chain.block_time * chain.confirmations + config.timeouts.tx


def min_challenge_duration(config: NodeConfig) -> int:
    """The shortest challenge duration this node accepts (docs/specification.md §4): its
    reaction time with margin."""
    return max(1, int(MIN_CHALLENGE_MARGIN * reaction_time(config)))


MIN_CONCLUDE_GRACE = 5.0
"""The least time the side that need not conclude a channel gives the other to do it."""


def conclude_grace_for(config: NodeConfig) -> float:
    """How long the side that need not conclude a channel waits for the other's transaction
    before it sends its own: two blocks for it to be mined and a poll to see it. Seeing it
    ends the wait, so a long grace costs time only when the other side does not conclude."""
    chain = config.chain
    return max(MIN_CONCLUDE_GRACE, 2 * chain.block_time + chain.poll_interval)


@dataclass(frozen=True, slots=True)
class SessionParts:
    """What a session is built from that needs no chain: its config and contacts, its unlocked
    keys and its open store (`Session.prepare`)."""

    config: SessionConfig
    contacts: list[Contact]
    keys: SessionKeys
    store: SessionStore
    fee_schedule: FeeSchedule
    found: list[Shortfall] | None = None
    """What the chain lacks of the store's channels (`Session.check_chain`), once asked."""
    unconcluded: tuple[ChannelID, ...] = ()
    """Closed channels whose conclusion the chain lost (`Session.check_chain`): settled again."""


HISTORY_SCAN_RATE: Final = 20_000.0
"""History records a session's queries may look at per second (a full page's worth at once)."""


LISTING_RATE: Final = 5_000.0
"""Listing units a session's calls may render per second: a contact is one, a channel two
(about 26 and 48 µs of the reactor each), so one user's listings take at most about an
eighth of the reactor however they batch them."""
LISTING_BURST: Final = 20_000
"""Units at once: 10,000 contacts, or 10,000 channels; a larger listing passes when the
allowance is full, and the next then waits for it to refill."""


class Session:
    """One open session: build with `Session.open`, end with `close`."""

    def __init__(self, reactor: Any, session_id: str, config: SessionConfig, account: Account,
                 store: SessionStore, contacts: ContactBook, client: ChannelClient,
                 peers: PeerManager, settlement: ChainSettlement, watcher: ChainWatcher) -> None:
        self._reactor = reactor
        self.id = session_id
        self.config = config
        self.store = store
        self.contacts = contacts
        self.client = client
        self.settlement = settlement
        self.peers = peers
        self.account = account
        self.watcher = watcher
        self.restored: list[Channel] = []
        self.missing_deposits: MissingDeposits | None = None
        self.retirement: Retirement | None = None
        """Retires the channels closed for `limits.closed_channel_retention`."""
        """Channels held because the chain lost their deposits while the session ran."""
        self._early: deque[Notice] | None = deque(maxlen=EARLY_NOTICES)
        client.observers.append(self._keep_early)
        self.withdrawals = Withdrawals(reactor, settlement, settlement.asset_label,
                                       client.payouts)
        """Withdraws the payouts the Adjudicator credited to our account instead of sending."""
        client.observers.append(self.withdrawals.observe)
        self.listings = WorkAllowance(reactor, LISTING_RATE, LISTING_BURST)
        """What this session's `session_listPeers` and `channel_list` may render (units of
        `LISTING_RATE`)."""
        self.history_scans = WorkAllowance(reactor, HISTORY_SCAN_RATE, SCAN_BUDGET)
        """The history records this session's queries may look at: they run on the reactor,
        so one user's queries (a read-only credential's, a batch of a hundred) take a bounded
        share of it, and the other users' payments and the chain watcher go on."""

    def _keep_early(self, notice: Notice) -> None:
        if self._early is not None:
            self._early.append(notice)

    def take_early_notices(self) -> list[Notice]:
        """What the session told before anyone listened (a refutation in its first poll, a
        question from a peer at once); from then on it keeps nothing."""
        early, self._early = self._early, None
        if self._keep_early in self.client.observers:
            self.client.observers.remove(self._keep_early)
        return list(early or ())

    @classmethod
    async def open(cls, reactor: Any, config_file: str | Path, *, chain: ChainBackend,
                   node: NodeConfig, session_id: str | None = None,
                   chain_view: ChainView | None = None,
                   rules: FileRules | None = None,
                   check: Callable[[SessionConfig], None] | None = None,
                   asset_label: AssetLabel = default_label,
                   currencies: Currencies | None = None,
                   parts: Deferred[SessionParts] | None = None) -> Session:
        """Open the session of `config_file`; InvalidConfig names whatever is wrong.

        Its files are read under `rules` (the folders the operator allows) off the reactor
        thread, within `sessions.open_timeout`: a slow disk or a hostile path stalls nobody.
        `check` may refuse the config once it is read, and again before the session is built
        (the node: the same user open twice, a peer port that is not the session's).
        `asset_label` names assets in messages (the node's currency table); `currencies`
        (default: ETH alone) resolve the intermediary fee's symbols and amounts. `parts`: what
        `prepare` made of `config_file` already (a node's start prepares its sessions while
        it connects to the chain); it is closed if the session cannot be built from it.
        """
        if parts is None:
            parts = Deferred.fromCoroutine(cls.prepare(reactor, config_file, node=node,
                                                       rules=rules, check=check,
                                                       currencies=currencies))
        prepared = await parts
        try:
            if check is not None:
                # Again: what `check` compares with may have changed while the parts were
                # made (a node's start prepares them before its API and chain listen).
                check(prepared.config)
            if prepared.found is None:
                prepared = await cls.check_chain(prepared, chain, asset_label)
            return await cls._build(reactor, prepared, chain, node,
                                    session_id or os.urandom(16).hex(), chain_view,
                                    asset_label, currencies)
        except BaseException:
            prepared.store.close()
            raise

    @staticmethod
    async def check_chain(parts: SessionParts, chain: ChainBackend,
                          asset_label: AssetLabel = default_label) -> SessionParts:
        """`parts` with the chain asked whether it still holds what the store's channels hold
        (`shortfalls`). Read-only: a node asks while its API starts. The store is closed if
        the chain cannot be asked."""
        try:
            channels = parts.store.channels()
            found = await shortfalls(chain, channels, asset_label)
            unconcluded = await lost_conclusions(chain, channels)
        except BaseException:
            parts.store.close()
            raise
        return replace(parts, found=found, unconcluded=tuple(unconcluded))

    @classmethod
    async def prepare(cls, reactor: Any, config_file: str | Path, *, node: NodeConfig,
                      rules: FileRules | None = None,
                      check: Callable[[SessionConfig], None] | None = None,
                      currencies: Currencies | None = None) -> SessionParts:
        """What opening the session needs before the chain: its files read, its keys unlocked
        and its store opened (see `open`; the caller closes the store of parts it does not
        use). The keys are unlocked off the reactor thread while the store is read on it."""
        rules = rules or FileRules()
        reading = deferToThread(read_session_files, config_file, rules)
        reading.addTimeout(node.sessions.open_timeout, reactor)
        try:
            config, contacts = await reading
        except defer.TimeoutError:
            raise InvalidConfig(
                f"configFile: {config_file}: its files could not be read within "
                f"{node.sessions.open_timeout:g} s", name="configFile", value=str(config_file),
                requirement="files the node can read at once") from None
        if check is not None:
            check(config)
        fee_schedule = resolve_fee(config.intermediary.fee, currencies or Currencies())
        # scrypt takes up to a second a key: unlock off the reactor thread so other sessions'
        # payments do not stall meanwhile, and the store loads at the same time.
        unlocking: Deferred[SessionKeys] = deferToThread(unlock, config, None, rules)
        try:
            store = SessionStore(config.database, reactor, sync_elsewhere=fsync_thread(reactor),
                                 history_limit=node.limits.payment_history_size)
        except BaseException as exc:
            # The keys' problems come first, as when the store was opened after them.
            await unlocking
            if isinstance(exc, StoreLocked):
                raise FailedPrecondition(
                    f"this session's store {config.database} is open in another process "
                    f"(pid {exc.data.get('holder', '?')}): a session may be open in one node "
                    "only", database=str(config.database)) from None
            if isinstance(exc, StoreError | OSError):
                # The operator's to mend (a damaged file, a folder the node may not write):
                # named, not an internal error with a traceback.
                why = exc.message if isinstance(exc, StoreError) else \
                    f"{exc.strerror or type(exc).__name__}" + (
                        f": {exc.filename}" if exc.filename else "")
                raise InvalidConfig(
                    f"database: {config.database}: the store cannot be opened: {why}",
                    name="database", value=str(config.database),
                    requirement="a store folder the node can open, read and write") from None
            raise
        try:
            keys = await unlocking
        except BaseException:
            store.close()
            raise
        return SessionParts(config, contacts, keys, store, fee_schedule)

    @classmethod
    async def _build(cls, reactor: Any, parts: SessionParts, chain: ChainBackend,
                     node: NodeConfig, session_id: str, chain_view: ChainView | None,
                     asset_label: AssetLabel, currencies: Currencies | None = None) -> Session:
        config, keys, store = parts.config, parts.keys, parts.store
        if chain.chain_id is None or chain.adjudicator is None:
            raise FailedPrecondition("the node is not connected to the chain yet")
        signer = keys.signer()
        account = keys.account()
        contacts = ContactBook(parts.contacts, store=store, own_address=signer.address)
        peers = PeerManager(reactor, signer, contacts.endpoint, config.comm_listen,
                            dial_timeout=node.timeouts.peer_dial, limits=node.limits.peer(),
                            name_of=contacts.describe)
        settlement = ChainSettlement(reactor, chain, account,
                                     poll_interval=node.chain.poll_interval,
                                     funding_timeout=node.timeouts.funding,
                                     conclude_grace=conclude_grace_for(node),
                                     confirmations=node.chain.confirmations,
                                     # The watcher reports deposits: reading the holdings
                                     # on a timer is only the fallback.
                                     funding_recheck=FUNDING_RECHECK_POLLS
                                     * node.chain.poll_interval, asset_label=asset_label,
                                     # A token the node disabled gets no deposit of ours.
                                     refused_asset=None if currencies is None
                                     else currencies.disabled)
        deployment = Deployment(chain.chain_id, chain.adjudicator, min_challenge_duration(node))
        client = ChannelClient(
            reactor, signer=signer, receiver=account.address, peers=peers,
            deployment=deployment, store=store, funder=settlement, settler=settlement,
            is_contact=contacts.knows, response_timeout=node.timeouts.response,
            request_timeout=node.timeouts.peer_request, confirm_updates=config.confirm_updates,
            dispute_after=config.dispute_after, intermediary=config.intermediary,
            fee_schedule=parts.fee_schedule, asset_label=asset_label,
        )
        # Our share of each channel, kept from its funding on: should the chain lose our
        # deposit after the channel opened, the same share is deposited again.
        shares = OwnShares(store)
        settlement.record_share = shares.record
        client.observers.append(shares.observe)
        missing = MissingDeposits(reactor, chain, lambda: client.channels.values(),
                                  session_id=session_id, label=asset_label, shares=shares,
                                  redeposit=settlement.deposit_again, channel=client.channels.get)
        client.holds = HeldCloses(missing, asset_label, client.channels.get)

        def deposit_seen(channel_id: ChannelID) -> None:
            settlement.deposit_seen(channel_id)
            missing.deposit_seen(channel_id)

        async def rewound() -> None:
            await _settle_lost_conclusions(session_id, chain, client)
            await missing.check()

        unconfirmed = UnconfirmedCheck(chain, settlement.unconfirmed,
                                       channels=lambda: client.channels,
                                       chain_input=client.chain_input,
                                       resettle=client.resettle, session_id=session_id)

        async def passed(cursor: int) -> None:
            settlement.cursor_moved()
            await unconfirmed.passed(cursor)

        watcher = ChainWatcher(reactor, chain_view or chain, store, client,
                               poll_interval=node.chain.poll_interval,
                               confirmations=node.chain.confirmations,
                               on_deposit=deposit_seen,
                               on_event=client.intermediary.chain_event,
                               # The embedded dev chain mines a block per transaction only.
                               mine=None if node.chain.url else chain.mine,
                               on_rewind=rewound, on_passed=passed)
        settlement.confirmed_block = lambda: watcher.cursor
        session = cls(reactor, session_id, config, account, store, contacts, client, peers,
                      settlement, watcher)
        session.missing_deposits = missing
        # Before anything is resumed: does the chain still hold what the channels hold?
        found = parts.found or []
        lost: dict[ChannelID, str] = {}
        if found:
            if not node.accept_lost_channels:
                raise mismatch(str(config.path), shown_url(chain.url), found)
            for shortfall in found:
                lost[shortfall.channel_id] = shortfall.describe()
        for channel_id in parts.unconcluded:
            log_lost_conclusion(session_id, channel_id)
        await peers.listen()
        session.restored = [c for c in client.restore(lost, parts.unconcluded)
                            if c.phase not in TERMINAL]
        shares.prune(lambda cid: cid in client.channels
                     and client.channels[cid].phase not in TERMINAL)
        try:
            # The first poll runs now: a dispute that began while the node was down is
            # answered before the session is reported open.
            await watcher.start()
        except BaseException:
            client.stop()
            await peers.stop()
            raise
        session.retirement = Retirement(reactor, chain=chain, client=client, store=store,
                                        retention=node.limits.closed_channel_retention,
                                        session_id=session_id)
        session.retirement.start()
        # A payout the contract credited while the node was down, or never withdrew.
        session.withdrawals.check([ETH, *(token.address for token in node.chain.assets.values())])
        log.info("session {session_id} open: off-chain {address}, on-chain {account}, "
                 "{channels} restored, peers on {listen}", session_id=session_id,
                 channels=plural(len(session.restored), "channel"),
                 address=hex_address(signer.address), account=hex_address(account.address),
                 restored=len(session.restored), listen=config.comm_listen)
        return session

    def open_channels(self) -> list[Channel]:
        """Channels not yet settled on-chain."""
        return [c for c in self.client.channels.values() if c.phase not in TERMINAL]

    def close(self, force: bool = False, node_stopping: bool = False) -> Deferred[list[Channel]]:
        """Close the session: refused while channels are open unless `force`; with `force`
        they stay persisted and are restored at the next open. Fires with the open channels.
        `node_stopping`: the node stops (else the session alone closes), as the requests it
        cuts short are told."""
        return Deferred.fromCoroutine(self._close(force, node_stopping))

    async def _close(self, force: bool, node_stopping: bool) -> list[Channel]:
        still_open = self.open_channels()
        if still_open and not force:
            raise FailedPrecondition(
                f"session has {plural(len(still_open), 'open channel')}: close "
                f"{'it' if len(still_open) == 1 else 'them'} or use force",
                openChannels=["0x" + c.channel_id.hex() for c in still_open],
            )
        await self.watcher.stop()
        if self.missing_deposits is not None:
            self.missing_deposits.stop()
        if self.retirement is not None:
            self.retirement.stop()
        self.withdrawals.stop()
        self.client.stop()
        await self.peers.stop(NODE_STOPPED if node_stopping else SESSION_CLOSED)
        try:
            flushed = self.store.flush()
            if flushed is not None:
                await flushed
            self.store.close()
        except StoreError as exc:
            # A broken store (a full disk) was reported when it broke; it is released all the
            # same, and the next open repairs it.
            with contextlib.suppress(StoreError):
                self.store.close()  # idempotent; releases the lock whatever it raises
            log.error("session {session_id}: its store could not make the last writes durable "
                      "({error})", session_id=self.id, error=exc)
        log.info("session {session_id} closed ({channels} left open)",
                 session_id=self.id, count=len(still_open),
                 channels=plural(len(still_open), "channel"))
        return still_open


async def _settle_lost_conclusions(session_id: str, chain: ChainBackend,
                                   client: ChannelClient) -> None:
    """While the session runs, the watcher found blocks it had read replaced or gone: the
    closed channels whose conclusion went with them settle again, as at a start."""
    for channel_id in await lost_conclusions(chain, list(client.channels.values())):
        log_lost_conclusion(session_id, channel_id)
        client.chain_input(channel_id, ConclusionLost())
