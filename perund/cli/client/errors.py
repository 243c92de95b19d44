"""Exit codes of perund-cli and the one line (or JSON object) that reports a failure.

Every failure becomes one line on stderr (`error: channel 0x12… not found (201)`) or, with
`--json`, one JSON object on stdout; never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perund.cli.apiclient import ApiError, AuthFailed, NodeUnreachable
from perund.cli.client.render import shown_text
from perund.words import plural, seconds_text

EXIT_OK = 0
EXIT_NODE_ERROR = 1
"""The node answered with an error (or the CLI found what the node would refuse: an unknown
channel prefix)."""
EXIT_USAGE = 2
"""Bad command line (argparse), or a command that needs something not given (a session)."""
EXIT_UNREACHABLE = 3
"""No answer from the node: nothing listens at --node, the connection broke, or the answer did
not come in time."""
EXIT_AUTH = 4
"""No usable API token: none given, the token file is unreadable, or the node refused it."""
EXIT_INTERRUPTED = 130
"""Interrupted by ^C (what a shell reports for SIGINT)."""


class CliError(Exception):
    """A failure the CLI reports itself; `exit_code` is one of the EXIT_ constants."""

    exit_code = EXIT_NODE_ERROR
    kind = "node"

    def __init__(self, message: str, code: int | None = None,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data or {}


class UsageError(CliError):
    """The command cannot run as given (exit 2)."""

    exit_code = EXIT_USAGE
    kind = "usage"


class TokenError(CliError):
    """No token to send (exit 4)."""

    exit_code = EXIT_AUTH
    kind = "auth"


class NotFound(CliError):
    """A channel, proposal or update reference matches nothing: reported like the node's 201."""

    def __init__(self, what: str, ref: str) -> None:
        super().__init__(f"{what} {ref} not found", code=201,
                         data={"category": "client", "type": what, "id": ref})


@dataclass(frozen=True)
class Failure:
    """How one failure is reported."""

    exit_code: int
    message: str
    kind: str
    code: int | None = None
    data: dict[str, Any] | None = None

    @property
    def line(self) -> str:
        """The text after `error: `: the message and the node's error code. Escaped: a
        message may quote a peer's reason, which the peer chose."""
        return shown_text(self.message) + (f" ({self.code})" if self.code is not None else "")

    def to_json(self) -> dict[str, Any]:
        """The `--json` form: `{"error": {kind, code, message, data}}`."""
        return {"error": {"kind": self.kind, "code": self.code, "message": self.message,
                          "data": self.data or {}}}


# The node names the offending param in API terms; the CLI user typed options.
_FIELD_NAMES = (
    ("payments[", None),
    ("balances.", None),
    ("challengeDuration", "--challenge-duration"),
    ("maxFee", "--max-fee"),
    ("peer.offChainAddress", "address"),
    ("peer.alias", "alias"),
    ("peer.commAddress", "comm address"),
    ("proposalId", "proposal id"),
    ("updateId", "update id"),
    ("channelId", "channel id"),
    ("sessionId", "session id"),
    ("configFile", "config file"),
)


_PAYMENT_FIELDS = {"amount": "amount", "currency": "--currency", "payee": "payee"}


def _field_name(field: str) -> str:
    for prefix, name in _FIELD_NAMES:
        if field.startswith(prefix):
            if name is not None:
                return name
            parts = field.split(".")
            if prefix == "payments[":  # payments[0].currency -> --currency
                return _PAYMENT_FIELDS.get(parts[-1], "amount")
            # balances.ETH.self -> --self (ETH)
            return f"--{parts[-1]} ({parts[1]})" if len(parts) == 3 else "balances"
    return field


def _hex_id(value: Any) -> str:
    text = str(value)
    if text and not text.startswith("0x") and all(c in "0123456789abcdefABCDEF" for c in text):
        return "0x" + text
    return text


def describe_api_error(error: dict[str, Any]) -> str:
    """One line for a JSON-RPC error object, without the code."""
    code = error.get("code")
    message = str(error.get("message") or "error")
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    assert isinstance(data, dict)
    if code == -32602 and "field" in data:
        field, requirement = str(data["field"]), str(data.get("requirement", message))
        parts = field.split(".")
        if len(parts) == 2 and parts[0] == "balances" and "allowed:" in requirement:
            # balances.BTC: a currency the node does not have (--currency BTC)
            known = requirement.split("allowed:", 1)[1].rstrip(")").strip()
            return f"unknown currency {parts[1]}: this node has {known}"
        return f"invalid {_field_name(field)}: {requirement}"
    if code == 201 and "type" in data:
        return f"{data['type']} {_hex_id(data.get('id', ''))} not found".replace("  ", " ")
    if code == 202 and "type" in data:
        return f"{message}: {data['type']} {_hex_id(data.get('id', ''))}"
    if code == 204 and isinstance(data.get("openChannels"), list) and data["openChannels"]:
        # The node's message says the same in API terms ("use force"): said once, as typed.
        count = len(data["openChannels"])
        return f"the session has {plural(count, 'open channel')}: close " \
               f"{'them' if count != 1 else 'it'} first, or use --force to leave " \
               f"{'them' if count != 1 else 'it'} open on-chain"
    if code == 203 and isinstance(data.get("value"), str) and not data["value"].isdigit() \
            and data["value"] not in message:
        # A readable value says more than the rule (base-unit numbers do not).
        return f"{message}: {data['value']}"
    if code == -32601:
        return f"the node does not know the method {data.get('method', '')}".rstrip()
    details = [f"{key} {_detail_texts(data[key])[0]}" for key in ("reason", "txHash", "timeout")
               if data.get(key) is not None  # a lost connection has no timeout: null
               and not any(text in message for text in _detail_texts(data[key]))]
    return message + (f" ({', '.join(details)})" if details else "")


def _detail_texts(value: Any) -> tuple[str, ...]:
    """A detail of the node's error as words, the way to show it first: a number of seconds
    as the node words it (`1 min 10 s`), then as an older node did (`70 s`), either of which
    in the message means it says the detail already."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return seconds_text(value), f"{value:g} s"
    return (str(value),)


def failure_of(exc: BaseException, node: str) -> Failure:
    """How to report `exc` (raised while talking to the node at `node`)."""
    if isinstance(exc, ApiError):
        return Failure(EXIT_NODE_ERROR, describe_api_error(exc.error), "node",
                       exc.code, exc.error.get("data") if isinstance(exc.error.get("data"),
                                                                       dict) else None)
    if isinstance(exc, AuthFailed):
        return Failure(EXIT_AUTH, f"the node at {node} refused the API token (is it the token "
                       "file of this node?)", "auth")
    if isinstance(exc, NodeUnreachable):
        return Failure(EXIT_UNREACHABLE, f"cannot reach the node at {node}: {exc}", "unreachable")
    if isinstance(exc, CliError):
        return Failure(exc.exit_code, exc.message, exc.kind, exc.code, exc.data)
    if isinstance(exc, KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, "interrupted", "interrupted")
    raise exc
