"""`history`: the session's payments, newest first, as a table, JSON or a CSV file.

Filters map to `payment_list`'s params; `--all` (and `--csv`) follow the node's cursors to
the end. Times are shown and read in local time; `--since`/`--until` take a date
(`2026-12-04`), a date and time (`2026-12-04T09:30`) or unix seconds.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final

from perund.cli.client import render
from perund.cli.client.commands import Context, Handler, Outcome, Result
from perund.cli.client.errors import UsageError
from perund.cli.client.options import Once, at_least_one
from perund.words import plural

CSV_FIELDS: Final = ("paymentId", "time", "direction", "currency", "amount", "peer",
                     "peerAddress", "channelId", "version", "request", "status", "reference")

PAGE: Final = 1000
DEFAULT_LIMIT: Final = 20
"""Payments shown without --limit or --all."""


def add_history_parser(commands: Any, command: Any) -> None:
    """The `history` command's arguments, on the CLI's parser."""
    history = command(commands, "history", "the session's payments, newest first",
                      "List the payments this session made and received, newest first: a "
                      "table, --json, or every matching one into a CSV file (--csv FILE).")
    history.add_argument("--channel", action=Once, metavar="CHANNEL",
                         help="one channel (ID, prefix, or the peer's alias)")
    history.add_argument("--peer", action=Once, metavar="PEER",
                         help="one peer (alias or 0x address)")
    history.add_argument("--direction", action=Once, choices=("sent", "received"))
    history.add_argument("--currency", action=Once, metavar="SYMBOL",
                         help="one currency, e.g. ETH")
    history.add_argument("--since", action=Once, metavar="TIME",
                         help="at or after TIME (local date/time or unix seconds)")
    history.add_argument("--until", action=Once, metavar="TIME", help="before TIME")
    history.add_argument("--limit", action=Once, metavar="N", type=at_least_one,
                         help=f"show at most N (default {DEFAULT_LIMIT})")
    history.add_argument("--all", action="store_true", help="every matching payment")
    history.add_argument("--csv", action=Once, metavar="FILE",
                         help="write every matching payment to FILE (a new file)")


def _when(text: str, option: str) -> float:
    """A time from `--since`/`--until`: unix seconds, or an ISO date (and time), local."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else \
            datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(f"{option} {text!r}: give a date (2026-12-04), a date and time "
                         "(2026-12-04T09:30) or unix seconds") from None


def _params(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"sessionId": ctx.session_id()}
    if args.channel:
        params["channelId"] = ctx.resolve_channel(args.channel)["channelId"]
    if args.peer:
        params["peer"] = args.peer
    if args.direction:
        params["direction"] = args.direction
    if args.currency:
        params["currency"] = ctx.currency(args.currency)
    if args.since:
        params["since"] = _when(args.since, "--since")
    if args.until:
        params["until"] = _when(args.until, "--until")
    return params


def _payments(ctx: Context, params: dict[str, Any], wanted: int | None) -> Iterator[Any]:
    """Matching payments newest first, following cursors; at most `wanted` (None: all)."""
    cursor, given = None, 0
    while wanted is None or given < wanted:
        limit = PAGE if wanted is None else min(PAGE, wanted - given)
        page = ctx.call("payment_list", **params, limit=limit,
                        **({} if cursor is None else {"cursor": cursor}))
        for payment in page["payments"]:
            yield payment
            given += 1
        cursor = page["nextCursor"]
        if cursor is None:
            return


def _local(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _row(payment: dict[str, Any], ctx: Context) -> list[str]:
    sign = "+" if payment["direction"] == "received" else "-"
    what = "request" if payment["request"] else "payment"
    shown = sign + render.amount(payment["amount"], payment["currency"])
    if payment["status"] != "paid":
        what += f" ({payment['status']})"
        # Nothing moved: a signed amount would read as money that came or went (an audit).
        shown = f"({render.amount(payment['amount'], payment['currency'])})"
    return [str(payment["paymentId"]), _local(float(payment["time"])),
            shown, str(payment["peer"]),
            ctx.style.ident(render.short_id(payment["channelId"])),
            "-" if payment["version"] is None else str(payment["version"]), what,
            render.shown_text(payment["reference"] or "")]


def _cell(value: object) -> object:
    """A reference as a CSV cell a spreadsheet shows as text: one that would start a formula
    (= + - @, or a tab or carriage return before one) gets a leading apostrophe. It is the
    other party's text, and `=HYPERLINK(...)` would otherwise run when the file is opened."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _write_csv(path: str, payments: Iterator[Any]) -> int:
    try:
        # Amounts, peers and references: the user's alone, as the token files are.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists: give a new file name") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    count = 0
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        for payment in payments:
            row = {**payment, "time": datetime.fromtimestamp(float(payment["time"]))
                   .astimezone().isoformat(timespec="seconds")}
            row["reference"] = _cell(row.get("reference"))
            writer.writerow(["" if row[name] is None else row[name] for name in CSV_FIELDS])
            count += 1
    return count


def _check_options(args: argparse.Namespace) -> None:
    """UsageError for options that contradict each other (before the node is asked)."""
    if args.limit is not None and (args.all or args.csv):
        other, does = ("--all", "shows") if args.all else ("--csv", "writes")
        raise UsageError(f"--limit and {other} exclude each other: {other} {does} every "
                         "matching payment")
    if args.since and args.until and \
            _when(args.since, "--since") >= _when(args.until, "--until"):
        raise UsageError(f"--since {args.since} is not before --until {args.until}: no "
                         "payment can match")


def history(ctx: Context, args: argparse.Namespace) -> Result:
    """`history [filters] [--limit N | --all] [--csv FILE]`."""
    _check_options(args)
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    params = _params(ctx, args)
    if args.csv:
        count = _write_csv(args.csv, _payments(ctx, params, None))
        return Outcome({"file": args.csv, "payments": count},
                       f"wrote {plural(count, 'payment')} to {args.csv}")
    payments = list(_payments(ctx, params, None if args.all else limit))
    if not payments:
        return Outcome(payments, "no payments match")
    rows = [_row(p, ctx) for p in payments]
    text = render.table(["ID", "TIME", "AMOUNT", "PEER", "CHANNEL", "VERSION", "WHAT",
                         "REFERENCE"], rows, ctx.style)
    if not args.all and len(payments) == limit:
        text += f"\n(the latest {limit}: --limit N or --all for more)"
    return Outcome(payments, text)


HISTORY_HANDLERS: dict[tuple[str, str | None], Handler] = {("history", None): history}
"""(command, action) → handler of the history command."""
