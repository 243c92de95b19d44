"""The perund method table: every API method's schemas, conversion and facade call.

Params arrive validated against their schema (the dispatcher does that); what remains here is
the conversion a schema cannot express (hex → bytes, a currency's decimals, checksums) and the
rendering of results with the currency table. Conversion failures are `InvalidParams`
naming the field, like schema failures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from perund.api.amounts import AmountError, Currencies
from perund.api.credentials import Access, CredentialRegistry, Scope, party_of
from perund.api.facade import NodeFacade
from perund.api.hub import PAYMENTS, PROPOSALS, TOPICS, UPDATES, Hubs
from perund.api.method_spec import CallContext, Method, Param
from perund.api.node_views import PeerView
from perund.api.openrpc import openrpc_document
from perund.api.payment_methods import PAYMENT, payment_methods
from perund.api.result_schemas import (
    CHANNEL_INFO,
    PEER_INFO,
    PROPOSAL_PUSH,
    UPDATE_PUSH,
    channel_list_schema,
    pair_schema,
)
from perund.api.schema import (
    ADDRESS,
    ALIAS,
    AMOUNT,
    BOOLEAN,
    CHANNEL_ID,
    PEER,
    PROPOSAL_ID,
    SECONDS,
    SESSION_ID,
    SUBSCRIPTION_ID,
    TOKEN,
    UPDATE_ID,
    InvalidParams,
    Schema,
    nullable,
    obj,
)
from perund.api.token_methods import token_methods
from perund.api.views import ChannelView, Payment
from perund.channel.memo import MAX_REFERENCE, reference_problem
from perund.channel.types import Address, to_address
from perund.contacts.book import COMM_TYPES, parse_account_address
from perund.errors import (
    FailedPrecondition,
    InsufficientFunds,
    InvalidArgument,
    InvalidConfig,
    PeerNotFunded,
    PeerRejected,
    PeerRequestTimedOut,
    PerundError,
    ResourceExists,
    ResourceNotFound,
    TxTimedOut,
    Unauthorized,
    UserResponseTimedOut,
)
from perund.ratelimit import Allowances
from perund.session.closing import MAX_PEER_WAIT, PEER_WAIT
from perund.session.held_close import ACCEPT_PARAM

MAX_PAYMENTS = 16
"""Payments one `channel_send` may carry (one state update)."""

NOTIFICATION_METHOD = "perund_notification"
"""The method name of WebSocket pushes."""


def _bytes(args: dict[str, Any], name: str) -> bytes:
    # The schema's pattern guarantees 0x + an even number of hex digits.
    return bytes.fromhex(str(args[name])[2:])


# -- param conversion ----------------------------------------------------------------------------

def _open_balances(raw: dict[str, Any], currencies: Currencies) -> dict[Address, tuple[int, int]]:
    if not raw:
        raise InvalidParams("balances", "name at least one currency")
    balances: dict[Address, tuple[int, int]] = {}
    for currency in currencies:  # ETH first, then the table's order, whatever the JSON order
        pair = raw.get(currency.symbol)
        if pair is None:
            continue
        amounts = []
        for side in ("self", "peer"):
            try:
                amounts.append(currency.parse(pair[side]))
            except AmountError as exc:
                raise InvalidParams(f"balances.{currency.symbol}.{side}", str(exc)) from None
        balances[currency.asset] = (amounts[0], amounts[1])
    if all(ours == 0 and peer == 0 for ours, peer in balances.values()):
        raise InvalidParams("balances", "a channel must hold something: not every amount zero")
    return balances


def _max_fee(raw: dict[str, Any] | None, currencies: Currencies) -> dict[Address, int] | None:
    if raw is None:
        return None
    limits: dict[Address, int] = {}
    for currency in currencies:
        text = raw.get(currency.symbol)
        if text is None:
            continue
        try:
            limits[currency.asset] = currency.parse(text)
        except AmountError as exc:
            raise InvalidParams(f"maxFee.{currency.symbol}", str(exc)) from None
    return limits


def _payments(raw: list[dict[str, Any]], currencies: Currencies) -> list[Payment]:
    payments = []
    for index, item in enumerate(raw):
        currency = currencies.by_symbol(item["currency"])
        try:
            amount = currency.parse(item["amount"], allow_zero=False)
        except AmountError as exc:
            raise InvalidParams(f"payments[{index}].amount", str(exc)) from None
        payments.append(Payment(currency.asset, currency.symbol, item["payee"], amount))
    return payments


def _in_units(error: InvalidArgument, currencies: Currencies) -> InvalidArgument:
    """A balance error of the core (amounts in base units) said in the currency's unit:
    "insufficient balance: 5 ETH asked, 1.5 ETH available"."""
    data = error.data
    asset, available, asked = data.get("asset"), data.get("available"), data.get("value")
    if not (isinstance(asset, str) and isinstance(available, str) and isinstance(asked, str)
            and available.isdigit() and asked.isdigit()):
        return error
    currency = currencies.by_asset(to_address(asset))
    if currency is None:
        return error
    shown_asked, shown_available = currency.format(int(asked)), currency.format(int(available))
    return InvalidArgument(
        f"{error.message}: {shown_asked} {currency.symbol} asked, {shown_available} "
        f"{currency.symbol} available", name=data.get("name", "amount"), value=shown_asked,
        requirement=f"at most {shown_available} {currency.symbol}", currency=currency.symbol,
        available=shown_available)


# -- the table -----------------------------------------------------------------------------------

Render = Callable[[Any], Any]


DISCOVER_RATE: Final = 2.0
"""rpc.discover calls a second per party (a session's credentials, or the operator)."""
DISCOVER_BURST: Final = 8
MAX_DISCOVER_PARTIES: Final = 4096
"""Parties whose rpc.discover allowance is kept (`Allowances`)."""


def build_methods(facade: NodeFacade, currencies: Currencies, hubs: Hubs,
                  credentials: CredentialRegistry) -> list[Method]:
    """Every method of the API (rpc.discover included), bound to `facade`; session
    credentials are minted by `session_open` and end with `session_close` in `credentials`."""

    def channel(value: ChannelView) -> Any:
        return value.to_json(currencies)

    def channels(values: list[ChannelView]) -> Any:
        return [v.to_json(currencies) for v in values]

    def with_currencies(value: Any) -> Any:
        return value.to_json(currencies)

    currency_symbols = currencies.symbols()
    pair = pair_schema()
    open_balances = obj({symbol: pair for symbol in currency_symbols}, [],
                        description="per currency: our deposit and the peer's")
    max_fee = obj({symbol: AMOUNT for symbol in currency_symbols}, [],
                  description="with via: the most we pay the intermediary per currency "
                              "(a currency not named: nothing)")
    payment = obj({
        "currency": {"type": "string", "enum": currency_symbols},
        "payee": {**PEER, "description": "\"self\" (a payment request: the peer pays us) or "
                                         "the channel's peer (alias or address)"},
        "amount": AMOUNT,
    }, ["currency", "payee", "amount"])
    session = Param("sessionId", SESSION_ID)
    channel_id = Param("channelId", CHANNEL_ID)

    def method(name: str, summary: str, params: tuple[Param, ...], result: Schema,
               handler: Callable[[dict[str, Any], CallContext], Awaitable[Any]],
               render: Render = lambda value: value,
               errors: tuple[type[PerundError], ...] = (), description: str = "", *,
               access: Access) -> Method:
        if access is not Access.ANYONE:
            errors = (*errors, Unauthorized)
        return Method(name, summary, params, result, handler, render, description,
                      errors=errors, access=access)

    # -- node --
    async def node_get_config(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.node_get_config()

    async def node_time(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.node_time()

    # -- session --
    async def session_open(args: dict[str, Any], ctx: CallContext) -> Any:
        opened = await facade.session_open(args["configFile"])
        # Same reactor turn as the session became ready: no notice can slip past the hub.
        hubs.attach(opened.session_id)
        _, token = credentials.issue(opened.session_id.hex(), Scope.SESSION, "session_open")
        # Answered once the token is on disk: after a crash the session opens again, and its
        # user's token must still be valid (a failure to write it is logged, as a close's).
        with contextlib.suppress(OSError):
            await credentials.saved()
        return {**opened.to_json(currencies), "token": token}

    async def session_list(args: dict[str, Any], ctx: CallContext) -> Any:
        sessions = await facade.session_list()
        caller = ctx.credential
        if caller is None or caller.session_id is None:
            return sessions
        # A session's credential sees its own session only: the others are other users'.
        return [s for s in sessions if s.session_id.hex() == caller.session_id]

    async def session_close(args: dict[str, Any], ctx: CallContext) -> Any:
        session_id = _bytes(args, "sessionId")
        left = await facade.session_close(session_id, bool(args.get("force", False)))
        hubs.detach(session_id)  # its subscribers told first, before their sockets close
        credentials.revoke_session(session_id.hex())
        # Answered once the end of its credentials is on disk (a failure to write it is
        # logged: the session is closed all the same).
        with contextlib.suppress(OSError):
            await credentials.saved()
        return left

    async def session_add_peer(args: dict[str, Any], ctx: CallContext) -> Any:
        peer = args["peer"]
        try:
            address = parse_account_address(peer["offChainAddress"])
        except ValueError as exc:
            raise InvalidParams("peer.offChainAddress", str(exc)) from None
        return await facade.session_add_peer(_bytes(args, "sessionId"), peer["alias"], address,
                                             peer["commAddress"], peer.get("commType", "tcp"))

    async def session_get_peer(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.session_get_peer(_bytes(args, "sessionId"), args["alias"])

    async def session_list_peers(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.session_list_peers(_bytes(args, "sessionId"))

    async def session_balance(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.session_balance(_bytes(args, "sessionId"))

    # -- channel --
    async def channel_open(args: dict[str, Any], ctx: CallContext) -> Any:
        balances = _open_balances(args["balances"], currencies)
        max_fee = _max_fee(args.get("maxFee"), currencies)
        return await facade.channel_open(_bytes(args, "sessionId"), args["peer"], balances,
                                         args.get("challengeDuration"), args.get("via"),
                                         max_fee)

    async def channel_respond_proposal(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.channel_respond_proposal(
            _bytes(args, "sessionId"), _bytes(args, "proposalId"), args["accept"])

    async def channel_list(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.channel_list(_bytes(args, "sessionId"))

    async def channel_list_retired(args: dict[str, Any], ctx: CallContext) -> Any:
        before = _bytes(args, "before") if "before" in args else None
        return await facade.channel_list_retired(_bytes(args, "sessionId"),
                                                 int(args.get("limit", 100)), before)

    def retired_page(value: tuple[list[ChannelView], bytes | None]) -> Any:
        views, next_before = value
        return {"channels": [v.to_json(currencies) for v in views],
                "nextBefore": None if next_before is None else "0x" + next_before.hex()}

    async def channel_get(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.channel_get(_bytes(args, "sessionId"), _bytes(args, "channelId"))

    async def channel_send(args: dict[str, Any], ctx: CallContext) -> Any:
        payments = _payments(args["payments"], currencies)
        reference = args.get("reference")
        problem = None if reference is None else reference_problem(reference)
        if problem is not None:
            raise InvalidArgument(f"reference: {problem}", name="reference",
                                  requirement=problem)
        try:
            return await facade.channel_send(_bytes(args, "sessionId"),
                                             _bytes(args, "channelId"), payments,
                                             args.get("reference"))
        except InvalidArgument as exc:
            raise _in_units(exc, currencies) from None

    async def channel_respond_update(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.channel_respond_update(
            _bytes(args, "sessionId"), _bytes(args, "channelId"), _bytes(args, "updateId"),
            args["accept"])

    async def channel_close(args: dict[str, Any], ctx: CallContext) -> Any:
        force = bool(args.get("force", False))
        peer_wait = args.get("peerWait")
        if force and peer_wait is not None:
            raise InvalidParams("peerWait", "a forced close does not ask the peer: leave it out")
        accept = bool(args.get(ACCEPT_PARAM, False))
        if accept and not force:
            raise InvalidParams(ACCEPT_PARAM, "it accepts the terms of a forced close: give it "
                                              "with force: true")
        return await facade.channel_close(_bytes(args, "sessionId"), _bytes(args, "channelId"),
                                          force, peer_wait, accept)

    # -- subscriptions --
    async def subscribe(args: dict[str, Any], ctx: CallContext) -> Any:
        if ctx.subscriptions is None:
            raise FailedPrecondition("subscriptions need a WebSocket connection (GET /ws)",
                                     transport=ctx.transport)
        topic = args["topic"]
        target = _bytes(args, "channelId") if "channelId" in args else None
        if target is not None and topic == PROPOSALS:
            raise InvalidParams("channelId", "proposals are not of a channel: leave it out")
        hub = hubs.attach(_bytes(args, "sessionId"))
        read_only = ctx.credential is not None and ctx.credential.scope is Scope.READ
        return ctx.subscriptions.subscribe(hub, topic, target, read_only)

    async def unsubscribe(args: dict[str, Any], ctx: CallContext) -> Any:
        if ctx.subscriptions is None:
            raise FailedPrecondition("subscriptions need a WebSocket connection (GET /ws)",
                                     transport=ctx.transport)
        ctx.subscriptions.unsubscribe(args["subscriptionId"])
        return True

    peer_errors = (PeerRequestTimedOut, PeerRejected)
    methods = [
        method("node_getConfig", "The node's chain, contracts, currencies and version.", (),
               obj({"chainUrl": {"type": "string"}, "chainId": {"type": "integer"},
                    "adjudicator": ADDRESS,
                    "assets": {"type": "object", "additionalProperties": obj(
                        {"address": ADDRESS, "decimals": {"type": "integer", "minimum": 0},
                         "disabled": {"type": "string"}},
                        ["address", "decimals"])},
                    "commTypes": {"type": "array", "items": {"type": "string"}},
                    "version": {"type": "string"}, "responseTimeout": SECONDS,
                    "minChallengeDuration": {"type": "integer", "minimum": 1},
                    "maxChallengeDuration": {"type": "integer", "minimum": 1}},
                   ["chainUrl", "chainId", "adjudicator", "assets", "commTypes", "version",
                    "responseTimeout", "minChallengeDuration", "maxChallengeDuration"]),
               node_get_config, with_currencies, access=Access.ANYONE),
        method("node_time", "The node's unix time in seconds; every expiry is on this clock.",
               (), SECONDS, node_time, access=Access.ANYONE),
        method("session_open", "Open the session of a session.yaml (a path on the node).",
               (Param("configFile", {"type": "string", "minLength": 1, "maxLength": 4096,
                                     "description": "path of the session.yaml on the node"}),),
               obj({"sessionId": SESSION_ID, "offChainAddress": ADDRESS,
                    "onChainAddress": ADDRESS, "restoredChannels": channel_list_schema(),
                    "token": TOKEN},
                   ["sessionId", "offChainAddress", "onChainAddress", "restoredChannels",
                    "token"]),
               session_open, errors=(InvalidConfig, ResourceExists), access=Access.OPERATOR,
               description="Operator only. `token` is a credential for this session alone "
                           "(docs/security.md): hand it to the session's user."),
        method("session_list", "The open sessions (after a restart the node opens again those "
               "that were open, under the same IDs); a session's credential sees its own only.",
               (),
               {"type": "array", "items": obj({
                   "sessionId": SESSION_ID,
                   "configFile": {"type": "string", "description": "its session.yaml"},
                   "offChainAddress": ADDRESS, "onChainAddress": ADDRESS,
                   "openChannels": {"type": "integer", "minimum": 0,
                                    "description": "channels not yet settled on-chain"},
                   "intermediary": obj({
                       "lockWindow": {"type": "number", "minimum": 0},
                       "fee": {"type": "object", "additionalProperties": obj(
                           {"base": AMOUNT, "ppm": {"type": "integer", "minimum": 0,
                                                    "maximum": 1_000_000}},
                           ["base", "ppm"])}}, ["lockWindow", "fee"],
                       description="when the session serves as intermediary: its lock window "
                                   "(seconds) and the fee it charges openers per currency")},
                   ["sessionId", "configFile", "offChainAddress", "onChainAddress",
                    "openChannels"])},
               session_list, lambda sessions: [s.to_json() for s in sessions],
               access=Access.ANYONE),
        method("session_close", "Close a session; with open channels only when forced "
               "(they are restored at the next open).",
               (session, Param("force", BOOLEAN, required=False)), channel_list_schema(),
               session_close, channels, (ResourceNotFound, FailedPrecondition),
               access=Access.SESSION),
        method("session_addPeer", "Add a contact (stored; survives a restart).",
               (session, Param("peer", obj({
                   "alias": ALIAS, "offChainAddress": ADDRESS,
                   "commAddress": {"type": "string", "minLength": 1, "maxLength": 300,
                                   "description": "host:port ([ipv6]:port)"},
                   "commType": {"type": "string", "enum": list(COMM_TYPES)}},
                   ["alias", "offChainAddress", "commAddress"]))),
               PEER_INFO, session_add_peer, PeerView.to_json,
               (ResourceNotFound, ResourceExists, InvalidArgument), access=Access.SESSION),
        method("session_getPeer", "One contact, by alias.", (session, Param("alias", ALIAS)),
               PEER_INFO, session_get_peer, PeerView.to_json, (ResourceNotFound,),
               access=Access.SESSION_READ),
        method("session_listPeers", "Every contact of the session.", (session,),
               {"type": "array", "items": PEER_INFO}, session_list_peers,
               lambda peers: [p.to_json() for p in peers], (ResourceNotFound,),
               access=Access.SESSION_READ),
        method("session_balance", "On-chain balances of the session's on-chain account.",
               (session,), obj({"address": ADDRESS, "balances": {
                   "type": "object", "additionalProperties": AMOUNT},
                   "errors": {"type": "object", "additionalProperties": {"type": "string"},
                              "description": "the currencies whose balance could not be "
                                             "read, and why (a token whose balanceOf "
                                             "reverts)"}}, ["address", "balances"]),
               session_balance, with_currencies, (ResourceNotFound,), access=Access.SESSION_READ),
        method("channel_open", "Propose a channel; returns once it is funded and open. With "
               "`via` (an intermediary you and the peer both have a ledger channel with), a "
               "virtual channel, funded by locks in those ledger channels with no transaction.",
               (session, Param("peer", PEER), Param("balances", open_balances),
                # No bounds here: the node's own range (not 1..2**64-1) is the one to state
                # when a duration is refused (perund/channel/proposal.py).
                Param("challengeDuration", {"type": "integer",
                                            "description": "seconds, within the node's range "
                                                           "(its minimum from its reaction "
                                                           "time, at most 30 days); the node's "
                                                           "default if omitted"},
                      required=False),
                Param("via", PEER, required=False,
                      description="the intermediary's alias or address: opens a virtual "
                                  "channel"),
                Param("maxFee", max_fee, required=False,
                      description="with via: the most we pay the intermediary, per currency; "
                                  "its fee is asked first, and a higher one fails the call "
                                  "before the peer is asked")),
               CHANNEL_INFO, channel_open, channel,
               (ResourceNotFound, InvalidArgument, InsufficientFunds, PeerNotFunded, TxTimedOut,
                FailedPrecondition, *peer_errors),
               access=Access.SESSION),
        method("channel_respondProposal", "Accept (returns once funded and open) or reject "
               "(returns null) a pushed proposal before its expiry.",
               (session, Param("proposalId", PROPOSAL_ID), Param("accept", BOOLEAN)),
               nullable(CHANNEL_INFO), channel_respond_proposal,
               lambda value: None if value is None else value.to_json(currencies),
               (ResourceNotFound, UserResponseTimedOut, InsufficientFunds, PeerNotFunded,
                TxTimedOut),
               access=Access.SESSION),
        method("channel_list", "The session's channels.", (session,), channel_list_schema(),
               channel_list, channels, (ResourceNotFound,), access=Access.SESSION_READ),
        method("channel_listRetired", "The session's retired channels (closed for longer "
               "than limits.closed_channel_retention), the last retired first, a page at a "
               "time.",
               (session, Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                               required=False, description="at most this many (default 100)"),
                Param("before", CHANNEL_ID, required=False,
                      description="the nextBefore of the previous page")),
               obj({"channels": channel_list_schema(),
                    "nextBefore": {"type": ["string", "null"],
                                   "description": "null: no channel retired earlier"}},
                   ["channels", "nextBefore"]),
               channel_list_retired, retired_page, (ResourceNotFound,),
               access=Access.SESSION_READ),
        method("channel_get", "One channel.", (session, channel_id), CHANNEL_INFO,
               channel_get, channel, (ResourceNotFound,), access=Access.SESSION_READ),
        method("channel_send", "Pay the peer or request payment (payee \"self\"), all in one "
               "update; returns once the peer signed it.",
               (session, channel_id, Param("payments", {
                   "type": "array", "items": payment, "minItems": 1,
                   "maxItems": MAX_PAYMENTS}),
                Param("reference", {"type": "string", "maxLength": MAX_REFERENCE},
                      required=False, description="e.g. an invoice number: travels with the "
                                                  "update to the peer, into both histories")),
               CHANNEL_INFO, channel_send, channel,
               (ResourceNotFound, InvalidArgument, FailedPrecondition, *peer_errors),
               access=Access.SESSION),
        method("channel_respondUpdate", "Accept or reject a pushed open/final update before "
               "its expiry.",
               (session, channel_id, Param("updateId", UPDATE_ID), Param("accept", BOOLEAN)),
               CHANNEL_INFO, channel_respond_update, channel,
               (ResourceNotFound, UserResponseTimedOut, FailedPrecondition), access=Access.SESSION),
        method("channel_close", "Settle a channel (cooperatively; on-chain without the peer "
               "when forced); returns once concluded on-chain and paid out.",
               (session, channel_id, Param("force", BOOLEAN, required=False),
                Param("peerWait", {"type": "integer", "minimum": 0, "maximum": MAX_PEER_WAIT},
                      required=False,
                      description="seconds to wait for a peer that cannot be reached before "
                                  f"settling on-chain without it (default {PEER_WAIT:g})"),
                Param(ACCEPT_PARAM, BOOLEAN, required=False,
                      description="with force, on a channel held because the chain lost the "
                                  "peer's deposit (depositsBack in its info): accept that each "
                                  "side gets back exactly what it deposited, not its balance "
                                  "(without it such a close is refused, saying what you would "
                                  "get back)")),
               CHANNEL_INFO, channel_close, channel,
               (ResourceNotFound, FailedPrecondition, TxTimedOut), access=Access.SESSION),
        method("subscribe", "WebSocket only: receive pushes of a topic as "
               f"{NOTIFICATION_METHOD} notifications; returns the subscription ID.",
               (session, Param("topic", {"type": "string", "enum": list(TOPICS)}),
                Param("channelId", CHANNEL_ID, required=False,
                      description="updates or payments of this channel only")),
               SUBSCRIPTION_ID, subscribe, errors=(ResourceNotFound, FailedPrecondition),
               description=f"{PROPOSALS} pushes proposal objects, {UPDATES} update objects, "
                           f"{PAYMENTS} each new entry of the payment history once durable; "
                           "proposals and updates that arrived while nobody was subscribed are "
                           "delivered right after this reply (payments are listed by "
                           "payment_list instead).", access=Access.SESSION_READ),
        method("unsubscribe", "WebSocket only: end a subscription of this connection.",
               (Param("subscriptionId", SUBSCRIPTION_ID),), BOOLEAN, unsubscribe,
               errors=(ResourceNotFound, FailedPrecondition), access=Access.ANYONE),
    ]

    methods += token_methods(facade, credentials)
    methods += payment_methods(facade, currencies)
    discover_cache: list[dict[str, Any]] = []
    discover_allowances = Allowances(hubs.clock, DISCOVER_RATE, DISCOVER_BURST,
                                     MAX_DISCOVER_PARTIES)

    async def discover(args: dict[str, Any], ctx: CallContext) -> Any:
        # The document is some 60 KB to encode for a call of a few bytes: a batch of them is
        # a quarter second of the reactor. It never changes while the node runs, so a few a
        # second per party are all anyone needs.
        allowance = discover_allowances.of(party_of(ctx.credential))
        if allowance.available() < 1:
            raise FailedPrecondition(
                f"rpc.discover is answered {DISCOVER_RATE:g} times a second per session: the "
                "document does not change while the node runs (keep the one you have)",
                retryAfter=round(max(allowance.seconds_until(1), 0.1), 1))
        allowance.spend(1)
        if not discover_cache:
            discover_cache.append(openrpc_document(
                methods, description="perund: Ethereum state channels. Pushes (WebSocket): "
                f"{NOTIFICATION_METHOD} with params {{subscription, result}}."))
        return discover_cache[0]

    methods.append(method("rpc.discover", "This OpenRPC document.", (),
                          {"type": "object", "description": "an OpenRPC document"}, discover,
                          access=Access.ANYONE))
    return methods


PUSH_SCHEMAS = {PROPOSALS: PROPOSAL_PUSH, UPDATES: UPDATE_PUSH, PAYMENTS: PAYMENT}
"""The `result` schema of pushes per topic (documented in docs/api.md)."""
