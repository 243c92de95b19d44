"""What perund-cli shows a person: colours (only where they work), tables, channels, pushes.

Everything here turns the node's JSON values into text; nothing talks to the node.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from perund.channel.memo import unshowable
from perund.words import duration_text, utc_text

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
          "magenta": "35", "cyan": "36"}


def colour_wanted(stream: TextIO, no_color: bool = False,
                  env: Mapping[str, str] | None = None) -> bool:
    """Colours only on a terminal, and not when refused: --no-color, NO_COLOR (any value, see
    no-color.org) or TERM=dumb."""
    env = os.environ if env is None else env
    if no_color or "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """ANSI colours when `enabled`, plain text otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, *names: str) -> str:
        """`text` in the named styles ("green", "bold", ...)."""
        if not self.enabled or not names:
            return text
        codes = ";".join(_CODES[name] for name in names)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def ok(self, text: str) -> str:
        """Success."""
        return self.paint(text, "green")

    def warn(self, text: str) -> str:
        """Needs attention."""
        return self.paint(text, "yellow")

    def bad(self, text: str) -> str:
        """Failure."""
        return self.paint(text, "red", "bold")

    def dim(self, text: str) -> str:
        """Secondary details."""
        return self.paint(text, "dim")

    def ident(self, text: str) -> str:
        """IDs and addresses."""
        return self.paint(text, "cyan")

    def notice(self, text: str) -> str:
        """The head of a push."""
        return self.paint(text, "magenta", "bold")


def shown_text(text: str) -> str:
    """Text another party chose (a payment's reference, a peer's reason), safe to print: each
    `unshowable` character (a control character, a line break, a direction mark) becomes its
    escape (`\\x1b`), so it can neither redraw the terminal nor forge a line of output."""
    return "".join(char.encode("unicode_escape").decode("ascii") if unshowable(char) else char
                   for char in text)


def visible_len(text: str) -> int:
    """Length of `text` on screen (without colour codes)."""
    return len(_ANSI.sub("", text))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], style: Style) -> str:
    """Left-aligned columns under bold headers, two spaces apart."""
    widths = [visible_len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [cell + " " * (widths[i] - visible_len(cell)) for i, cell in enumerate(cells)]
        return "  ".join(padded).rstrip()

    head = "  ".join(style.paint(h.ljust(widths[i]), "bold") for i, h in enumerate(headers))
    return "\n".join([head.rstrip(), *(line(row) for row in rows)])


def fields(pairs: Sequence[tuple[str, str]], style: Style) -> str:
    """`name  value` lines with the names aligned."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{style.dim(name.ljust(width))}  {value}" for name, value in pairs)


def short_id(value: str) -> str:
    """0x1234abcd… (the first four bytes): enough to read and to type as a prefix."""
    return value if len(value) <= 12 else value[:10] + "…"


def amount(value: str, currency: str) -> str:
    """`1.5 ETH`."""
    return f"{value} {currency}"


def balances_pair(balances: Mapping[str, Mapping[str, str]], peer: str) -> str:
    """`you 1.5 ETH, bob 0.5 ETH` (each currency)."""
    ours = ", ".join(amount(pair["self"], cur) for cur, pair in balances.items())
    theirs = ", ".join(amount(pair["peer"], cur) for cur, pair in balances.items())
    return f"you {ours or '0'}, {peer} {theirs or '0'}"


def payout_text(channel: Mapping[str, Any], style: Style, labelled: bool = True) -> str:
    """How a closed channel paid out, as the chain reported it: `paid out: you 1.5 ETH, bob
    0.5 ETH` when the chain's payout to us matches the state (without `paid out: ` unless
    `labelled`: a table row has its own label), a warning when it fell short, and a hint when
    the node did not see the conclusion's payouts. What the Adjudicator credited instead of
    sending is owed, not paid: `you 0 EVL, bob 7 EVL; 13 EVL owed to you (credited ...)`."""
    peer = str(channel.get("peer"))
    balances = channel.get("balances") or {}
    if channel.get("kind") == "virtual" and not channel.get("paidOut"):
        # Folded back into the ledger channels: nothing was paid on-chain to be seen.
        via = channel.get("via")
        return (("folded: " if labelled else "") + balances_pair(balances, peer)
                + f" (back in your ledger channel{' with ' + str(via) if via else ''})")
    paid = channel.get("paidOut")
    if paid is None:
        return (f"{balances_pair(balances, peer)} (this node did not see the payout: "
                "`balance` shows your account)")
    credited = channel.get("credited") or {}

    def due(cur: str) -> Decimal:
        return Decimal(paid.get(cur, "0")) + Decimal(credited.get(cur, "0"))

    short = [cur for cur, pair in balances.items() if due(cur) < Decimal(pair["self"])]
    if short:
        got = ", ".join(amount(str(due(cur)), cur) for cur in balances)
        owed = ", ".join(amount(pair["self"], cur) for cur, pair in balances.items())
        return style.bad(f"the chain paid you only {got} where the state gives you {owed}"
                         + (f"; {credit_text(channel)}" if credited else ""))
    if not credited:
        return ("paid out: " if labelled else "") + balances_pair(balances, peer)
    # Ours as sent: the credited part is told apart, as owed (or withdrawn since).
    sent = {cur: {"self": paid.get(cur, "0"), "peer": pair["peer"]}
            for cur, pair in balances.items()}
    return (("paid out: " if labelled else "") + balances_pair(sent, peer) + "; "
            + credit_text(channel, style))


def credit_text(channel: Mapping[str, Any], style: Style | None = None) -> str:
    """What the Adjudicator credited us instead of sending: owed until a withdraw gets it (the
    node's, or one from our account: the contract pays a credit to its receiver only), or
    withdrawn since, and when."""
    credited = channel.get("credited") or {}
    withdrawn = channel.get("withdrawn") or {}
    owed = [amount(v, cur) for cur, v in credited.items() if cur not in withdrawn]
    done = [f"{amount(v, cur)} credited, withdrawn {utc_text(withdrawn[cur])}"
            for cur, v in credited.items() if cur in withdrawn]
    parts = []
    if owed:
        text = (f"{', '.join(owed)} owed to you, not paid yet: the Adjudicator could not send "
                "it (your account or the token refused the transfer) and holds it; the node "
                "withdraws it, and tries again while it is refused")
        parts.append(style.warn(text) if style is not None else text)
    parts += done
    return "; ".join(parts)


def seconds_text(seconds: float) -> str:
    """`45 s`, `12 min 3 s`, `2 h 5 min`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 // 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 // 3600 else f"{s // 86400} d"


def challenge_bounds(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The `challenge durations` field of `node info` (`node_getConfig`): the range
    `--challenge-duration` must lie in, exactly (a node too old to say it: no field)."""
    low, high = info.get("minChallengeDuration"), info.get("maxChallengeDuration")
    if not isinstance(low, int) or not isinstance(high, int):
        return []
    return [("challenge durations", f"{duration_text(low)} to {duration_text(high)}")]


def clock(unix: float) -> str:
    """A node time (unix seconds) as local HH:MM:SS."""
    return time.strftime("%H:%M:%S", time.localtime(unix))


def phase_text(phase: str, style: Style) -> str:
    """The phase, coloured by what it asks of the user."""
    if phase == "open":
        return style.ok(phase)
    if phase in ("closing", "disputed", "funding", "proposing", "updating"):
        return style.warn(phase)
    if phase == "chainLost":
        return style.bad("lost")
    return style.dim(phase)


UNFUNDED = ("proposing", "funding")
"""Phases whose balances are what the deposits will be, not money in the channel yet."""


def self_change(before: Mapping[str, Mapping[str, str]] | None,
                after: Mapping[str, Mapping[str, str]]) -> dict[str, Decimal]:
    """Per currency, how much our balance changes from `before` to `after` (nonzero only)."""
    if not before:
        return {}
    change: dict[str, Decimal] = {}
    for currency, pair in after.items():
        try:
            delta = Decimal(pair["self"]) - Decimal(before.get(currency, {}).get("self", "0"))
        except (InvalidOperation, KeyError):
            continue
        if delta:
            change[currency] = delta
    return change


def decimal_text(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 0.25, 3."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def channel_rows(channels: Sequence[Mapping[str, Any]], style: Style) -> str:
    """The channel table."""
    if not channels:
        return "no channels"
    rows = []
    for c in channels:
        balances = c.get("balances", {})
        ours = ", ".join(amount(p["self"], cur) for cur, p in balances.items())
        theirs = ", ".join(amount(p["peer"], cur) for cur, p in balances.items())
        if c["phase"] in UNFUNDED:  # not money in the channel yet: say so
            verb = "lock" if c.get("kind") == "virtual" else "deposit"
            ours, theirs = f"({ours} to {verb})", f"({theirs} to {verb})"
        peer = str(c["peer"]) + (f" via {c.get('via')}" if c.get("kind") == "virtual" else "")
        rows.append([style.ident(short_id(c["channelId"])), peer,
                     phase_text(c["phase"], style), str(c["version"]), ours, theirs])
    return table(["CHANNEL", "PEER", "PHASE", "VERSION", "YOURS", "PEER'S"], rows, style)


def channel_details(c: Mapping[str, Any], style: Style, node_now: float | None = None) -> str:
    """Every field of one channel, aligned."""
    peer = str(c["peer"])
    pairs = [
        ("channel", style.ident(c["channelId"])),
        ("peer", peer if peer == c.get("peerAddress") else f"{peer} ({c.get('peerAddress')})"),
        ("phase", phase_text(c["phase"], style) + (" (final state)" if c.get("isFinal") else "")),
        ("version", str(c["version"])),
        ("balances", balances_pair(c.get("balances", {}), peer)
         + ("" if c["phase"] not in UNFUNDED
            else " (to be locked in the ledger channels: not funded yet)"
            if c.get("kind") == "virtual"
            else " (to be deposited: the channel is not funded yet)")),
        ("challenge", seconds_text(c["challengeDuration"])),
    ]
    if c.get("kind") == "virtual":
        pairs.append(("kind", f"virtual, via {c.get('via')}, funded by "
                              + " and ".join(short_id(p) for p in c.get("fundedBy", ()))))
    elif c.get("funds"):
        pairs.append(("funds", "virtual channels " + ", ".join(short_id(v) for v in c["funds"])))
    for symbol, fee in sorted(c.get("fees", {}).items()):
        pairs.append((f"fees {symbol}", f"earned {fee['earned']}, paid {fee['paid']} "
                                        "(as intermediary / to intermediaries)"))
    if c.get("paidOut") is not None:
        pairs.append(("paid out", payout_text(c, style, labelled=False)))
    missing = c.get("depositsMissing")
    if missing:
        lacks = "; ".join(f"{amount(d['expected'], cur)} expected, {amount(d['held'], cur)} held"
                          for cur, d in sorted(missing.items()))
        back = c.get("depositsBack")
        until = "no payment or close until they are back" if not back else (
            "no payment until they are back; a forced close gets you back your deposit, not "
            "your balance: " + ", ".join(amount(v, cur) for cur, v in sorted(back.items())))
        pairs.append(("held", style.warn(f"the chain lost its deposits ({lacks}): {until}")))
    on_chain = c.get("onChain")
    if on_chain:
        text = f"version {on_chain['version']} registered, challenge period ends " \
               f"{clock(on_chain['timeout'])}"
        if node_now is not None:
            text += f" (in {seconds_text(on_chain['timeout'] - node_now)})" \
                if on_chain["timeout"] > node_now else " (over)"
        pairs.append(("on-chain", style.warn(text)))
    return fields(pairs, style)


def peer_rows(peers: Sequence[Mapping[str, Any]], style: Style) -> str:
    """The peer table."""
    if not peers:
        return "no peers"
    rows = [[p["alias"], style.ident(p["offChainAddress"]), p["commAddress"], p["commType"]]
            for p in peers]
    return table(["ALIAS", "OFF-CHAIN ADDRESS", "COMM ADDRESS", "TYPE"], rows, style)


def balance_rows(balance: Mapping[str, Any], style: Style) -> str:
    """The on-chain balances of the session's account."""
    rows = [[currency, value] for currency, value in balance.get("balances", {}).items()]
    rows += [[currency, style.bad(f"unknown: {why}")]
             for currency, why in (balance.get("errors") or {}).items()]
    head = f"on-chain account {style.ident(str(balance.get('address')))}"
    return head + "\n" + table(["CURRENCY", "BALANCE"], rows, style)


def _expiry_text(expiry: Any, node_now: float | None) -> str:
    if not isinstance(expiry, (int, float)):
        return ""
    if node_now is None:
        return f" before {clock(expiry)}"
    return f" within {seconds_text(expiry - node_now)}"


def describe_push(push: Mapping[str, Any], style: Style,
                  before: Mapping[str, Mapping[str, str]] | None = None,
                  node_now: float | None = None, answer: str = "answer") -> str:
    """One push as a line a person reads. `before` is the channel's balances as we knew them
    (to say how much a request asks); `answer` is how to answer pushes that need one
    ("accept or reject" in the shell)."""
    if "paymentId" in push:
        head = style.notice(f"payment {push['paymentId']}")
        sign = "+" if push.get("direction") == "received" else "-"
        what = "request " if push.get("request") else ""
        return (f"{head} {what}{sign}{amount(str(push.get('amount')), str(push.get('currency')))}"
                f" {'from' if sign == '+' else 'to'} {push.get('peer')} on channel "
                f"{style.ident(short_id(str(push.get('channelId'))))} "
                f"{style.dim('(version ' + str(push.get('version')) + ')')}")
    if "proposalId" in push:
        peer = str(push.get("peer"))
        head = style.notice(f"proposal {short_id(str(push['proposalId']))}")
        if push.get("type") == "gone":
            return f"{head} from {peer} is gone unanswered: {push.get('reason')}"
        text = (f"{head} {peer} proposes a channel: "
                f"{balances_pair(push.get('balances', {}), peer)}, challenge "
                f"{seconds_text(push.get('challengeDuration', 0))}")
        when = _expiry_text(push.get("expiry"), node_now)
        return text + f"; {answer}{when}"
    kind_of_push = push.get("type")
    channel = push.get("channel") if isinstance(push.get("channel"), Mapping) else {}
    assert isinstance(channel, Mapping)
    peer = str(channel.get("peer", "the peer"))
    channel_id = str(push.get("channelId") or channel.get("channelId") or "")
    on = f"channel {style.ident(short_id(channel_id))}" if channel_id else "a channel"
    balances = channel.get("balances", {})
    if kind_of_push == "open":
        change = self_change(before, balances)
        kind = push.get("kind")
        asked = ", ".join(amount(decimal_text(-d), cur) for cur, d in change.items() if d < 0)
        given = ", ".join(amount(decimal_text(d), cur) for cur, d in change.items() if d > 0)
        if kind == "request":
            what = f"requests {asked}" if asked and not given else "requests a payment"
        elif kind == "payment":
            what = f"pays you {given}" if given and not asked else "sends a payment"
        else:
            what = f"proposes a {kind or 'new state'}"
        head = style.notice(f"update {short_id(str(push.get('updateId')))}")
        when = _expiry_text(push.get("expiry"), node_now)
        return (f"{head} {peer} {what} on {on}: would leave "
                f"{balances_pair(balances, peer)}; {answer}{when}")
    if kind_of_push == "gone":
        head = style.notice(f"update {short_id(str(push.get('updateId')))}")
        return f"{head} from {peer} on {on} is gone unanswered: {push.get('error')}"
    if kind_of_push == "final":
        head = style.notice(f"update {short_id(str(push.get('updateId')))}")
        when = _expiry_text(push.get("expiry"), node_now)
        return (f"{head} {peer} wants to close {on} with the final balances "
                f"{balances_pair(balances, peer)}; {answer}{when}")
    if kind_of_push == "updated":
        change = self_change(before, balances)
        given = ", ".join(amount(decimal_text(d), cur) for cur, d in change.items() if d > 0)
        paid = ", ".join(amount(decimal_text(-d), cur) for cur, d in change.items() if d < 0)
        if given and not paid:
            head = f"{style.notice('payment')} {peer} paid you {given} on {on}"
        elif paid and not given:
            head = f"{style.notice('payment')} you paid {peer} {paid} on {on}"
        else:
            head = f"{style.notice('updated')} {on} with {peer}"
        return (f"{head}: {balances_pair(balances, peer)} "
                f"{style.dim('(version ' + str(channel.get('version')) + ')')}")
    if kind_of_push == "disputed":
        on_chain = channel.get("onChain") or {}
        timeout = on_chain.get("timeout")
        text = f"{style.notice('disputed')} {on} with {peer}: a state is registered on-chain"
        if isinstance(timeout, (int, float)):
            text = (f"{style.notice('disputed')} {on} with {peer}: version "
                    f"{on_chain.get('version')} registered on-chain, the challenge period "
                    f"ends {clock(timeout)}")
            if node_now is not None and timeout > node_now:
                text += f" (in {seconds_text(timeout - node_now)})"
        elif push.get("error"):
            text += f": {push['error']}"
        return text
    if kind_of_push == "chainLost":
        return (f"{style.bad('lost')} {on} with {peer}: the chain does not hold it any more "
                f"({push.get('error')}); nothing more can be done with it")
    if kind_of_push == "closed":
        error = str(push.get("error") or "")
        if error.startswith("closed without touching the chain"):
            return f"{style.notice('closed')} {on} with {peer}: {error}"
        folded = channel.get("kind") == "virtual" and not channel.get("paidOut")
        how = "folded into the ledger channels, no transaction" if folded else "settled on-chain"
        text = (f"{style.notice('closed')} {on} with {peer}: {how}, "
                f"{payout_text(channel, style, labelled=not folded)}")
        if error:
            text += " " + style.warn(f"({error})")
        return text
    # A push this CLI does not know yet (the node gains new kinds): show what it says.
    label = str(kind_of_push or "notification")
    skip = {"type", "channel", "channelId"}
    rest = ", ".join(f"{k} {v}" for k, v in push.items() if k not in skip and v is not None)
    text = f"{style.notice(label)} {on}" if channel_id else style.notice(label)
    if channel:
        text += f" with {peer}: phase {channel.get('phase')}"
        if balances:
            text += f", {balances_pair(balances, peer)}"
    return text + (f" ({rest})" if rest else "")
