"""`channel close`: cooperatively, after a wait for a peer that cannot be reached, or forced
through a dispute; what the close waits for while it runs. A forced close of a virtual channel
takes its ledger channels on-chain too, and one of a channel held because the chain lost the
peer's deposit pays each side back its deposit, not its balance: the user is told, and asked
(`--yes` answers)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from perund.cli.client import render
from perund.cli.client.commands import Context, Handler, Long, Outcome, Result
from perund.cli.client.errors import UsageError
from perund.cli.client.render import short_id

DEFAULT_PEER_WAIT = 300
"""Seconds the node waits for a peer that cannot be reached when `channel_close` does not say
(the node's `perund.session.closing.PEER_WAIT`; a test checks they agree)."""


def _close_status(ctx: Context, session: str, channel: dict[str, Any],
                  disputes_from: float | None) -> Callable[[], str]:
    """The progress line of a close; `disputes_from`: when (node time) the node disputes the
    channel if the peer cannot be reached until then (None: a forced close)."""
    peer = channel["peer"]

    def status() -> str:
        c = ctx.quick("channel_get", sessionId=session, channelId=channel["channelId"])
        phase = c["phase"]
        if phase in ("open", "updating"):
            if disputes_from is None:
                return f"waiting for {peer} to sign the final state"
            return (f"waiting for {peer} to sign the final state (a dispute at "
                    f"{render.clock(disputes_from)} if {peer} stays unreachable)")
        if phase == "closing":
            return ("final state signed; concluding on-chain" if c.get("isFinal")
                    else "registering the latest state on-chain")
        if phase == "disputed":
            on_chain = c.get("onChain") or {}
            timeout = on_chain.get("timeout")
            if isinstance(timeout, (int, float)):
                left = timeout - ctx.node_now()
                return (f"disputed: version {on_chain.get('version')} registered on-chain; the "
                        f"challenge period ends {render.clock(timeout)}"
                        f" (in {render.seconds_text(left)})" if left > 0 else
                        "disputed: the challenge period is over; concluding on-chain")
            return "disputed on-chain"
        if phase == "closed":
            return "concluded; paying out"
        return f"phase {phase}"
    return status


def channel_close(ctx: Context, args: argparse.Namespace) -> Result:
    """`channel close CHANNEL [--force [--yes] | --peer-wait WAIT]`: waits until settled and
    paid out. A forced close of a virtual channel is asked about first (`forced_virtual`)."""
    session = ctx.session_id()
    channel = ctx.resolve_channel(args.channel)
    channel_id = channel["channelId"]
    if args.force and channel.get("kind") == "virtual" and not args.yes:
        confirm_force(ctx, forced_virtual(channel))
    # Held with the peer's deposit missing: the node closes it only on the terms accepted.
    deposits_back = bool(args.force and channel.get("depositsBack"))
    if deposits_back and not args.yes:
        confirm_force(ctx, forced_deposits_back(channel), " on these terms")

    def finish(closed: Any) -> Outcome:
        how = "by a final state both signed" if closed.get("isFinal") else "by a dispute"
        return Outcome(closed, f"channel {ctx.style.ident(short_id(channel_id))} with "
                               f"{closed['peer']} is {ctx.style.ok(closed['phase'])} ({how}), "
                               f"{render.payout_text(closed, ctx.style)}")

    wait = None if args.force else (DEFAULT_PEER_WAIT if args.peer_wait is None
                                    else args.peer_wait)
    disputes_from = None if wait is None else ctx.node_now() + wait
    return Long(f"closing channel {short_id(channel_id)} with {channel['peer']}",
                lambda: ctx.call_long("channel_close", sessionId=session, channelId=channel_id,
                                      **_close_how(args, deposits_back)),
                _close_status(ctx, session, channel, disputes_from), finish)


def forced_virtual(channel: dict[str, Any]) -> str:
    """What a forced close of the virtual `channel` does beyond closing it: it goes on-chain
    through the ledger channels that fund it, and those end (docs/protocol.md, "Disputes go
    on-chain on both sides")."""
    peer, via = channel["peer"], channel.get("via") or "the intermediary"
    ledgers = channel.get("fundedBy") or []
    ours = f" ({short_id(ledgers[0])})" if ledgers else ""
    period = render.seconds_text(channel["challengeDuration"]) \
        if isinstance(channel.get("challengeDuration"), int) else "its challenge duration"
    return (f"channel {short_id(channel['channelId'])} is a virtual channel with {peer} via "
            f"{via}: a forced close disputes it on-chain through the ledger channels that "
            f"fund it. Your ledger channel with {via}{ours} is registered and concluded "
            f"on-chain with it and ends there: its transactions' gas is yours, and its funds "
            f"wait out the challenge periods ({period} each). {peer}'s ledger channel with "
            f"{via} goes on-chain and ends too. Paying through {via} again takes a new ledger "
            f"channel. A close without --force folds the channel back into both ledgers "
            f"off-chain, with no transaction")


def confirm_force(ctx: Context, what: str, terms: str = "") -> None:
    """Ask before a forced close that does `what` beyond closing (a virtual channel's ledgers
    go on-chain, a held channel pays deposits back); UsageError when the user says no, or when
    there is no one to ask (no terminal, the shell): `--yes` is then the answer. `terms`: how
    the question names what the user accepts (" on these terms")."""
    if ctx.confirm is None:
        raise UsageError(f"{what}. Nothing was done: give --yes to force the close{terms} (no "
                         "question is asked without a terminal, nor in the shell)")
    if not ctx.confirm(f"{what}.\nForce the close{terms}? [y/N] "):
        raise UsageError("the forced close was not confirmed: nothing was done")


def forced_deposits_back(channel: dict[str, Any]) -> str:
    """What a forced close of `channel`, held because the chain lost the peer's deposit, does:
    each side gets back exactly what it deposited (its `depositsBack`), not its balance
    (docs/chain.md, the Adjudicator's rule for a channel that holds less than its state)."""
    peer = channel["peer"]
    balances = channel.get("balances") or {}
    lacks = "; ".join(f"{render.amount(d['expected'], cur)} expected, "
                      f"{render.amount(d['held'], cur)} held"
                      for cur, d in sorted((channel.get("depositsMissing") or {}).items()))
    parts = []
    for cur, back in sorted(channel["depositsBack"].items()):
        balance = Decimal(str((balances.get(cur) or {}).get("self", "0")))
        diff = render.decimal_text(abs(Decimal(back) - balance))
        if Decimal(back) < balance:
            detail = (f"your balance is {render.amount(str(balance), cur)}: the "
                      f"{render.amount(diff, cur)} {peer} paid you is forfeited")
        elif Decimal(back) > balance:
            detail = (f"your balance is {render.amount(str(balance), cur)}: the "
                      f"{render.amount(diff, cur)} you paid {peer} comes back to you")
        else:
            detail = "your balance"
        parts.append(f"{render.amount(back, cur)} ({detail})")
    period = render.seconds_text(channel["challengeDuration"]) \
        if isinstance(channel.get("challengeDuration"), int) else "its challenge duration"
    return (f"channel {short_id(channel['channelId'])} with {peer} is held: the chain no longer "
            f"holds {peer}'s deposit ({lacks}). A forced close now pays each side back exactly "
            f"what it deposited, not its balance: you get back {'; '.join(parts)}. The close "
            f"is a dispute: its gas is yours, and the funds wait out the challenge period "
            f"({period}). Should {peer} deposit again before the conclusion, the close pays "
            f"the balances instead")


def _close_how(args: argparse.Namespace, deposits_back: bool = False) -> dict[str, Any]:
    """`channel_close`'s `force` or `peerWait`, as the options say; `deposits_back`: the user
    accepted the terms of a held channel (`acceptDepositsBack`)."""
    if args.peer_wait is not None:
        return {"peerWait": args.peer_wait}
    if deposits_back:
        return {"force": True, "acceptDepositsBack": True}
    return {"force": bool(args.force)}


CLOSE_HANDLERS: dict[tuple[str, str | None], Handler] = {("channel", "close"): channel_close}
"""(command, action) → handler of `channel close`."""
