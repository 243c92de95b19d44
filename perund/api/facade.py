"""NodeFacade: the one object the API calls, implemented by the node.

Arguments are Python values: IDs as `bytes` (session 16, channel/proposal/update 32), addresses
as `Address`, amounts as `int` base units per asset address. The API has already validated and
converted them (currency symbols → asset addresses, decimal strings → wei), so a facade
only decides what the node does. Errors are `PerundError`s (`perund.errors`): an unknown session,
channel, proposal or update is `ResourceNotFound`, a request the node cannot honour in the
current state `FailedPrecondition`, a late answer `UserResponseTimedOut`, and so on; anything
else that escapes is reported to the client as 401 Internal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from perund.api.node_info import NodeInfo
from perund.api.views import (
    AccountBalance,
    ChannelView,
    Notification,
    Payment,
    PaymentPage,
    PaymentView,
    PeerView,
    SessionInfo,
    SessionOpened,
)
from perund.channel.types import Address
from perund.storage.history import PaymentQuery


class NoticeShelf(Protocol):
    """Where a session's hub keeps, across restarts, the pushes nobody has taken yet: records
    by a rising key, each the UTF-8 JSON of one push with its routing and expiry."""

    def kept(self) -> dict[int, bytes]:
        """Every record kept."""
        ...

    def keep(self, key: int, record: bytes) -> None:
        """Keep `record` under `key`."""
        ...

    def drop(self, key: int) -> None:
        """Forget the record under `key` (nothing if there is none)."""
        ...


class NodeFacade(Protocol):
    """What the node offers its users; one coroutine per API method."""

    async def node_get_config(self) -> NodeInfo:
        """`node_getConfig`: chain, adjudicator, comm types, version."""
        ...

    async def node_time(self) -> float:
        """`node_time`: the node's unix time (the clock of every expiry)."""
        ...

    async def session_open(self, config_file: str) -> SessionOpened:
        """`session_open`: open the session of a `session.yaml`, restoring its channels."""
        ...

    async def session_list(self) -> list[SessionInfo]:
        """`session_list`: the open sessions (the node opens again at start those that were
        open when it stopped, under new IDs)."""
        ...

    async def session_close(self, session_id: bytes, force: bool) -> list[ChannelView]:
        """`session_close`: the channels left open (only with `force`; without it, open
        channels are `FailedPrecondition` listing them)."""
        ...

    async def session_add_peer(self, session_id: bytes, alias: str, off_chain_address: Address,
                               comm_address: str, comm_type: str) -> PeerView:
        """`session_addPeer`: add and persist a contact."""
        ...

    async def session_get_peer(self, session_id: bytes, alias: str) -> PeerView:
        """`session_getPeer`: the contact named `alias`."""
        ...

    async def session_list_peers(self, session_id: bytes) -> list[PeerView]:
        """`session_listPeers`: every contact of the session."""
        ...

    async def session_balance(self, session_id: bytes) -> AccountBalance:
        """`session_balance`: on-chain balances of the session's on-chain account."""
        ...

    async def channel_open(self, session_id: bytes, peer: str,
                           balances: Mapping[Address, tuple[int, int]],
                           challenge_duration: int | None,
                           via: str | None = None,
                           max_fee: Mapping[Address, int] | None = None) -> ChannelView:
        """`channel_open`: propose a channel to `peer` (alias or 0x address);
        `balances[asset] = (ours, the peer's)` in base units, ETH first then in the currency
        table's order; `challenge_duration` in seconds, None for the node's default; `via`
        (alias or address of an intermediary) for a virtual channel, paying the intermediary
        at most `max_fee[asset]` (none where not named). Returns once the channel is funded
        and open."""
        ...

    async def channel_respond_proposal(self, session_id: bytes, proposal_id: bytes,
                                       accept: bool) -> ChannelView | None:
        """`channel_respondProposal`: the channel once funded (accept), or None (reject)."""
        ...

    async def channel_list(self, session_id: bytes) -> list[ChannelView]:
        """`channel_list`: the session's channels."""
        ...

    async def channel_get(self, session_id: bytes, channel_id: bytes) -> ChannelView:
        """`channel_get`: one channel."""
        ...

    async def channel_list_retired(self, session_id: bytes, limit: int, before: bytes | None,
                                   ) -> tuple[list[ChannelView], bytes | None]:
        """`channel_listRetired`: at most `limit` retired channels, the last retired first
        (after `before`, a retired channel's ID), and the `before` of the next page (None:
        no more)."""
        ...

    async def channel_send(self, session_id: bytes, channel_id: bytes,
                           payments: Sequence[Payment],
                           reference: str | None = None) -> ChannelView:
        """`channel_send`: one update carrying every payment (payee `"self"`: a request);
        returns the channel after the peer countersigned. `reference` travels with it."""
        ...

    async def channel_respond_update(self, session_id: bytes, channel_id: bytes,
                                     update_id: bytes, accept: bool) -> ChannelView:
        """`channel_respondUpdate`: answer an `open`/`final` update push before its expiry."""
        ...

    async def channel_close(self, session_id: bytes, channel_id: bytes,
                            force: bool, peer_wait: int | None = None) -> ChannelView:
        """`channel_close`: settle (cooperatively, or on-chain without the peer when `force`);
        returns once concluded on-chain and paid out. A peer that cannot be reached is waited
        for `peer_wait` seconds (None: the node's default) before settling without it."""
        ...

    async def payment_list(self, session_id: bytes, query: PaymentQuery, peer: str | None,
                           limit: int, cursor: str | None) -> PaymentPage:
        """`payment_list`: a page of the session's payment history, newest first; `peer` (an
        alias or a 0x address) narrows `query` to one peer."""
        ...

    async def payment_get(self, session_id: bytes, payment_id: int) -> PaymentView:
        """`payment_get`: one entry of the history; `ResourceNotFound` if there is none."""
        ...

    def subscribe_notices(self, session_id: bytes, callback: Callable[[Notification], None],
                          wants_updated: Callable[[bytes], bool] | None = None,
                          wants_payments: Callable[[bytes], bool] | None = None,
                          ) -> Callable[[], None]:
        """Call `callback` with every notification of the session until the returned function
        is called; `ResourceNotFound` for an unknown session. The API's hub subscribes once
        per session, right when `session_open` returns, and caches what nobody listens to.

        `wants_updated(channel_id)`, if given, is asked before an `updated` notification (one
        per incoming payment) is built; False skips it, since nobody would receive it.
        `wants_payments(channel_id)` likewise for the history's entries (once durable)."""
        ...

    def notice_shelf(self, session_id: bytes) -> NoticeShelf:
        """Where the hub of `session_id` keeps, across restarts, the pushes nobody took yet
        (the session's store); `ResourceNotFound` for an unknown session."""
        ...
