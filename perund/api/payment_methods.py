"""The payment history methods: `payment_list` (pages, newest first, filters) and
`payment_get`. Read-only credentials may call both; the `payments` push topic carries each new
entry as it becomes durable (docs/api.md, "Payment history")."""

from __future__ import annotations

import math
from typing import Any

from perund.api.amounts import Currencies
from perund.api.credentials import Access
from perund.api.facade import NodeFacade
from perund.api.method_spec import CallContext, Method, Param
from perund.api.schema import ADDRESS, AMOUNT, CHANNEL_ID, PEER, SECONDS, SESSION_ID, obj
from perund.api.views import PaymentPage, PaymentView
from perund.channel.memo import MAX_REFERENCE
from perund.channel.types import ChannelID
from perund.errors import InvalidArgument, ResourceNotFound, Unauthorized
from perund.storage.history import MAX_LIMIT, PaymentQuery
from perund.storage.payments import DIRECTIONS, STATUSES

PAYMENT_ID = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1,
              "description": "a payment's ID in its session's history (rises)"}

PAYMENT = obj({
    "paymentId": PAYMENT_ID,
    "channelId": CHANNEL_ID,
    "peer": {"type": "string", "description": "the peer's alias, or its address"},
    "peerAddress": ADDRESS,
    "direction": {"type": "string", "enum": list(DIRECTIONS)},
    "currency": {"type": "string"},
    "amount": AMOUNT,
    "version": {"type": ["integer", "null"], "minimum": 0,
                "description": "the channel version the payment produced (null: none)"},
    "time": SECONDS,
    "request": {"type": "boolean", "description": "the party paid asked for it"},
    "status": {"type": "string", "enum": list(STATUSES)},
    "reference": {"type": ["string", "null"], "maxLength": MAX_REFERENCE},
}, ["paymentId", "channelId", "peer", "peerAddress", "direction", "currency", "amount",
    "version", "time", "request", "status", "reference"], description="a payment")

CURSOR = {"type": "string", "maxLength": 64,
          "description": "the nextCursor of the previous page"}


MAX_UNIX_TIME = 2.0**53
"""Beyond any time a history holds; larger values (or integers too large for a float) are
refused rather than compared."""


def payment_methods(facade: NodeFacade, currencies: Currencies) -> list[Method]:
    """The history methods of the API, rendering amounts with `currencies`."""

    def page(value: PaymentPage) -> Any:
        return value.to_json(currencies)

    def one(value: PaymentView) -> Any:
        return value.to_json(currencies)

    async def payment_list(args: dict[str, Any], ctx: CallContext) -> Any:
        asset = None
        if "currency" in args:
            asset = currencies.by_symbol(args["currency"]).asset
        since, until = args.get("since"), args.get("until")
        for name, value in (("since", since), ("until", until)):
            # An integer of hundreds of digits is no float (OverflowError in isfinite).
            if value is not None and not (abs(value) <= MAX_UNIX_TIME and math.isfinite(value)):
                raise InvalidArgument(f"{name} must be a finite unix time", name=name,
                                      requirement="seconds since 1970")
        query = PaymentQuery(
            channel_id=ChannelID(bytes.fromhex(args["channelId"][2:]))
            if "channelId" in args else None,
            direction=args.get("direction"), asset=asset, since=since, until=until)
        return await facade.payment_list(bytes.fromhex(args["sessionId"][2:]), query,
                                         args.get("peer"), int(args.get("limit", 100)),
                                         args.get("cursor"))

    async def payment_get(args: dict[str, Any], ctx: CallContext) -> Any:
        return await facade.payment_get(bytes.fromhex(args["sessionId"][2:]),
                                        int(args["paymentId"]))

    session = Param("sessionId", SESSION_ID)
    return [
        Method("payment_list", "The session's payments, newest first, a page at a time.",
               (session,
                Param("channelId", CHANNEL_ID, required=False),
                Param("peer", PEER, required=False),
                Param("direction", {"type": "string", "enum": list(DIRECTIONS)},
                      required=False),
                Param("currency", {"type": "string", "enum": currencies.symbols()},
                      required=False),
                Param("since", SECONDS, required=False, description="at or after this time"),
                Param("until", SECONDS, required=False, description="before this time"),
                Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                      required=False, description="at most this many (default 100)"),
                Param("cursor", CURSOR, required=False)),
               obj({"payments": {"type": "array", "items": PAYMENT},
                    "nextCursor": {"type": ["string", "null"],
                                   "description": "null: no older payments match"}},
                   ["payments", "nextCursor"]),
               payment_list, page,
               description="A page ends after `limit` payments, or after the node looked at "
                           "10,000 payments, matching or not: follow nextCursor until it is "
                           "null to see them all.",
               errors=(ResourceNotFound, InvalidArgument, Unauthorized),
               access=Access.SESSION_READ),
        Method("payment_get", "One payment of the session's history.",
               (session, Param("paymentId", PAYMENT_ID)), PAYMENT, payment_get, one,
               errors=(ResourceNotFound, Unauthorized), access=Access.SESSION_READ),
    ]
