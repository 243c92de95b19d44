"""The JSON schemas of what the API's channel and session methods return, and of the pushes
(`perund.api.methods` lists the methods)."""

from __future__ import annotations

from perund.api.schema import (
    ADDRESS,
    ALIAS,
    AMOUNT,
    BOOLEAN,
    CHANNEL_ID,
    PROPOSAL_ID,
    SECONDS,
    UPDATE_ID,
    Schema,
    nullable,
    obj,
)
from perund.api.views import UPDATE_TYPES
from perund.contacts.book import COMM_TYPES
from perund.session.held_close import ACCEPT_PARAM


def pair_schema() -> Schema:
    """`{self, peer}`: our amount and the peer's."""
    return obj({"self": AMOUNT, "peer": AMOUNT}, ["self", "peer"])


def _balances_schema() -> Schema:
    """`{currency: {self, peer}}` in results (any currency the channel holds)."""
    return {"type": "object", "additionalProperties": pair_schema(),
            "description": "per currency: our balance and the peer's"}


CHANNEL_INFO = obj({
    "channelId": CHANNEL_ID,
    "peer": {"type": "string", "description": "the peer's alias, or its address"},
    "peerAddress": ADDRESS,
    "phase": {"type": "string", "enum": ["proposing", "funding", "open", "updating", "closing",
                                         "disputed", "closed", "chainLost"]},
    "version": {"type": "integer", "minimum": 0},
    "isFinal": BOOLEAN,
    "balances": _balances_schema(),
    "challengeDuration": {"type": "integer", "minimum": 1},
    "onChain": obj({"version": {"type": "integer", "minimum": 0},
                    "timeout": {"type": "integer", "minimum": 0}}, ["version", "timeout"],
                   description="the registered state, while disputed"),
    "paidOut": {"type": "object", "additionalProperties": AMOUNT,
                "description": "closed: what the chain sent your account per currency at the "
                               "conclusion, from its PaidOut events (known when this node saw "
                               "it); without what it credited instead"},
    "credited": {"type": "object", "additionalProperties": AMOUNT,
                 "description": "closed: what of your payout the Adjudicator could not send "
                                "(your account or the token refused it) and holds for you: "
                                "owed, not paid, until withdrawn; the node withdraws it, again "
                                "and again while it is refused"},
    "withdrawn": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                  "description": "closed: per credited currency, when (unix seconds) the "
                                 "node saw its credit withdrawn; a credited currency not "
                                 "listed here is still owed"},
    "depositsMissing": {"type": "object", "additionalProperties": obj(
        {"expected": AMOUNT, "held": AMOUNT}, ["expected", "held"]),
        "description": "while the channel is held because the chain lost its deposits (a "
                       "reorganisation deeper than chain.confirmations): per currency, what "
                       "the chain should hold of the channel and what it holds; absent "
                       "otherwise"},
    "depositsBack": {"type": "object", "additionalProperties": AMOUNT,
                     "description": "while the channel is held because only the peer's deposit "
                                    "is missing: what a forced close would pay your account "
                                    "now, per currency (the contract pays each side of a channel "
                                    "that holds less than its state exactly what it deposited, "
                                    f"not its balance); such a close needs {ACCEPT_PARAM}"},
    "kind": {"type": "string", "enum": ["ledger", "virtual"],
             "description": "a ledger channel holds deposits on-chain; a virtual one is "
                            "funded by locks in two ledger channels with an intermediary"},
    "fundedBy": {"type": "array", "items": CHANNEL_ID, "minItems": 2, "maxItems": 2,
                 "description": "virtual: the ledger channels that fund it, yours first"},
    "via": {"type": ["string", "null"], "description": "virtual: the intermediary"},
    "funds": {"type": "array", "items": CHANNEL_ID,
              "description": "ledger: the virtual channels it locks funds for"},
    "fees": {"type": "object", "additionalProperties": obj(
        {"earned": AMOUNT, "paid": AMOUNT}, ["earned", "paid"]),
        "description": "ledger: intermediary fees per currency, earned (we are the "
                       "intermediary) and paid (we opened virtual channels through it)"},
}, ["channelId", "peer", "peerAddress", "phase", "version", "isFinal", "balances",
    "challengeDuration", "kind"], description="channel info")

PEER_INFO = obj({"alias": ALIAS, "offChainAddress": ADDRESS,
                 "commAddress": {"type": "string", "description": "host:port"},
                 "commType": {"type": "string", "enum": list(COMM_TYPES)}},
                ["alias", "offChainAddress", "commAddress", "commType"])

PROPOSAL_PUSH = {"oneOf": [
    obj({
        "type": {"const": "proposed"},
        "proposalId": PROPOSAL_ID, "peer": {"type": "string"}, "peerAddress": ADDRESS,
        "balances": _balances_schema(), "challengeDuration": {"type": "integer", "minimum": 1},
        "expiry": SECONDS, "kind": {"type": "string", "enum": ["ledger", "virtual"]},
        "via": {"type": "string", "description": "virtual: the intermediary"},
    }, ["type", "proposalId", "peer", "peerAddress", "balances", "challengeDuration", "expiry",
        "kind"]),
    obj({
        "type": {"const": "gone"},
        "proposalId": PROPOSAL_ID, "peer": {"type": "string"}, "peerAddress": ADDRESS,
        "reason": {"type": "string"},
    }, ["type", "proposalId", "peer", "peerAddress", "reason"],
        description="a proposal not answered before the node stopped"),
]}

UPDATE_PUSH = obj({
    "updateId": nullable(UPDATE_ID), "channelId": CHANNEL_ID,
    "type": {"type": "string", "enum": list(UPDATE_TYPES)},
    "kind": {"type": ["string", "null"], "enum": ["payment", "request", "final", None]},
    "channel": CHANNEL_INFO, "expiry": nullable(SECONDS),
    "error": {"type": ["string", "null"]},
}, ["updateId", "channelId", "type", "kind", "channel", "expiry", "error"])


def channel_list_schema() -> Schema:
    """A list of channel infos."""
    return {"type": "array", "items": CHANNEL_INFO}
