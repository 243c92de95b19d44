"""The command line of perund-cli: one argparse tree for the one-shot commands and the shell.

The shell parses each typed line with the same sub-commands (plus its own: use, accept,
reject, pending, jobs, help, exit), through a parser that raises instead of exiting.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any, NoReturn

from perund.cli.client.errors import UsageError
from perund.cli.client.history_commands import add_history_parser
from perund.cli.client.options import Once, at_least_one, wait_seconds

DESCRIPTION = "perund-cli: use a perund node (sessions, peers, channels, payments) over its " \
              "JSON-RPC and WebSocket API. Without a command it starts the interactive shell."

EPILOG = """\
environment: PERUND_NODE (HOST:PORT), PERUND_TOKEN (the token: the operator's, or a
session's own credential), PERUND_TOKEN_FILE, PERUND_SESSION, NO_COLOR. exit codes: 0 ok,
1 the node refused (error code shown), 2 usage, 3 node unreachable, 4 no valid API token,
130 interrupted. See docs/cli.md."""

CHANNEL_HELP = "channel: its ID, an unambiguous prefix of it (0x12ab), or the alias of a peer " \
               "with exactly one open channel"


class ShellExit(Exception):
    """argparse wanted to exit (after --help: status 0) inside the shell."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ShellParser(argparse.ArgumentParser):
    """An ArgumentParser for typed lines: errors raise UsageError, exits raise ShellExit."""

    def error(self, message: str) -> NoReturn:
        hint = f"{self.prog} --help" if self.prog else "help"
        raise UsageError(f"{message} (try: {hint})")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise ShellExit(status)


def _globals(parser: argparse.ArgumentParser, top: bool) -> None:
    """The global options; on sub-commands too, so they may follow the command."""
    default: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("global options") if not top else parser
    group.add_argument("--node", action=Once, metavar="HOST:PORT", default=default,
                       help="the node's API address (default $PERUND_NODE or 127.0.0.1:50001)")
    group.add_argument("--token-file", action=Once, metavar="PATH", default=default,
                       help="file holding the API token (default $PERUND_TOKEN, or the file "
                            "$PERUND_TOKEN_FILE)")
    group.add_argument("--session", action=Once, metavar="ID", default=default,
                       help="the session to act in (default $PERUND_SESSION)")
    group.add_argument("--json", action="store_true", default=False if top else default,
                       help="print the node's JSON result (errors as a JSON object)")
    group.add_argument("--no-color", action="store_true", default=False if top else default,
                       help="no colours (also with NO_COLOR set or TERM=dumb)")


def _currency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--currency", action=Once, default="ETH", metavar="SYM",
                        help="currency symbol, in any letter case (default ETH; `node info` "
                             "lists the node's: ETH and its tokens)")


def add_commands(commands: Any, interactive: bool) -> None:
    """Add every sub-command to `commands` (an argparse sub-parsers action)."""

    def command(parent: Any, name: str, help_text: str, description: str = "",
                leaf: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=description or help_text)
        if leaf and not interactive:
            _globals(parser, top=False)
        return parser

    def group(name: str, help_text: str) -> Any:
        parser = command(commands, name, help_text, leaf=False)
        return parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    node = group("node", "the node: its chain, contracts and clock")
    command(node, "info", "chain, Adjudicator, currencies and version of the node")
    command(node, "time", "the node's clock (proposal and update expiries are on it)")

    session = group("session", "open or close a session (a user's keys, peers and channels)")
    opening = command(session, "open", "open the session of a session.yaml",
                      "Open the session described by CONFIG (a path the node can read; a "
                      "relative path that exists here is sent as an absolute one). In the "
                      "shell it becomes the current session.")
    opening.add_argument("config", metavar="CONFIG", help="path of the session.yaml")
    opening.add_argument("--token-out", action=Once, metavar="FILE",
                         help="write the session's own credential to FILE (mode 0600)")
    if not interactive:
        opening.add_argument("-q", "--quiet", action="store_true",
                             help="print only the session ID (for scripts)")
    command(session, "list", "the sessions open on the node",
            "List the sessions open on the node: ID, session file, open channels (with a "
            "session's own credential: that session only). After a restart the node opens "
            "again the sessions that were open, under the same IDs.")
    closing = command(session, "close", "close the session",
                      "Close the session. With open channels the node refuses unless --force: "
                      "then they stay open on-chain and come back at the next open.")
    closing.add_argument("--force", action="store_true", help="close even with open channels")

    peer = group("peer", "the session's contacts")
    command(peer, "list", "every peer of the session")
    adding = command(peer, "add", "add a peer (kept across restarts)")
    adding.add_argument("alias", metavar="ALIAS", help="the name to call it by")
    adding.add_argument("address", metavar="ADDRESS", help="its off-chain address (0x…)")
    adding.add_argument("comm_address", metavar="COMMADDR", help="where it listens (host:port)")
    adding.add_argument("--comm-type", action=Once, default="tcp", help="transport (default tcp)")
    getting = command(peer, "get", "one peer")
    getting.add_argument("alias", metavar="ALIAS", help="the peer's alias")

    channel = group("channel", "open, list, inspect and close channels")
    opening = command(channel, "open", "propose a channel; returns once funded on-chain",
                      "Propose a channel to PEER; waits (showing progress) until the peer "
                      "accepted and both deposits are on-chain.")
    opening.add_argument("peer", metavar="PEER", help="the peer's alias or off-chain address")
    opening.add_argument("--self", dest="ours", action=Once, required=True, metavar="AMOUNT",
                         help="what you deposit, e.g. 1.5")
    opening.add_argument("--peer", dest="theirs", action=Once, default="0", metavar="AMOUNT",
                         help="what the peer deposits (default 0)")
    _currency(opening)
    opening.add_argument("--challenge-duration", action=Once, metavar="SECONDS",
                         help="dispute window: seconds, or with a unit: 90s, 10m, 2h, 1d "
                              "(default: the node's, 1 h)")
    opening.add_argument("--via", action=Once, metavar="INTERMEDIARY",
                         help="open a virtual channel through this intermediary (alias or "
                              "address), funded by your ledger channels with it: no deposit, "
                              "no transaction")
    opening.add_argument("--max-fee", action=Once, metavar="AMOUNT",
                         help="with --via: the most you pay the intermediary, in the channel's "
                              "currency (default 0: a fee it charges fails the open, naming it)")
    listing = command(channel, "list", "the session's channels",
                      "The open channels and those closed within the node's "
                      "limits.closed_channel_retention (7 days); with --retired, the ones "
                      "closed for longer, the last retired first.")
    listing.add_argument("--retired", action="store_true",
                         help="the retired channels instead (up to --limit)")
    listing.add_argument("--limit", action=Once, type=at_least_one, metavar="N",
                         help="with --retired: at most N channels (default 100)")
    info = command(channel, "info", "every detail of one channel")
    info.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
    closing = command(channel, "close", "settle a channel on-chain and pay out",
                      "Close the channel: cooperatively (the peer signs a final state), or "
                      "with --force through a dispute on-chain without the peer (this waits "
                      "for the challenge period). A peer that cannot be reached is waited "
                      "for (5 minutes, or --peer-wait), then the channel is disputed. Waits "
                      "until paid out, showing progress.")
    closing.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
    how = closing.add_mutually_exclusive_group()
    how.add_argument("--force", action="store_true",
                     help="settle on-chain without the peer (waits the challenge period); "
                          "for a virtual channel this takes its ledger channels on-chain "
                          "too, and for a channel held because the chain lost the peer's "
                          "deposit each side gets back its deposit, not its balance: the CLI "
                          "asks first")
    closing.add_argument("--yes", action="store_true",
                         help="with --force on a virtual or a held channel: do it without "
                              "asking (what a script or the shell must give)")
    how.add_argument("--peer-wait", action=Once, type=wait_seconds, metavar="WAIT",
                     help="how long to wait for a peer that cannot be reached before "
                          "disputing: seconds, or e.g. 90s, 10m, 1h (default 5m, at most 1d)")

    for name, what in (("pay", "pay the peer of a channel, off-chain"),
                       ("request", "ask the peer of a channel to pay you (it may refuse)")):
        paying = command(commands, name, what)
        paying.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
        paying.add_argument("amount", metavar="AMOUNT", help="e.g. 0.25")
        _currency(paying)
        paying.add_argument("--reference", action=Once, metavar="TEXT",
                            help="e.g. an invoice number: sent to the peer, kept in both "
                                 "histories (at most 128 characters)")

    command(commands, "balance", "the on-chain balances of the session's account")
    add_history_parser(commands, command)

    token = group("token", "the session's credentials: list, create, revoke, rotate")
    command(token, "list", "the session's credentials (never their tokens)")
    creating = command(token, "create", "mint a credential of the session",
                       "Mint a credential of the current session: a session credential (every "
                       "method of the session) or, with --read, a read-only one (lists, "
                       "balances, pushes; no payments, answers or closes).")
    creating.add_argument("--read", action="store_true", help="read-only")
    creating.add_argument("--label", action=Once, metavar="TEXT",
                          help="what it is for (shown by list)")
    creating.add_argument("--out", action=Once, metavar="FILE",
                          help="write the token to FILE (mode 0600)")
    revoking = command(token, "revoke", "end a credential at once")
    revoking.add_argument("token", metavar="ID", help="the credential's ID or a prefix")
    rotating = command(token, "rotate", "replace a credential (default: the one in use)",
                       "Replace a credential by a new one of the same scope and label; the old "
                       "one ends. Without ID: the credential this CLI acts with.")
    rotating.add_argument("token", metavar="ID", nargs="?", help="the credential's ID")
    rotating.add_argument("--out", action=Once, metavar="FILE",
                          help="write the token to FILE (mode 0600)")

    proposal = group("proposal", "answer a channel proposal (see `watch` or the shell)")
    for verb in ("accept", "reject"):
        answering = command(proposal, verb, f"{verb} a proposal")
        answering.add_argument("proposal", metavar="PROPOSAL", help="the proposal's ID")

    update = group("update", "answer an update: a payment request or a final state")
    for verb in ("accept", "reject"):
        answering = command(update, verb, f"{verb} an update")
        answering.add_argument("channel", metavar="CHANNEL", help=CHANNEL_HELP)
        answering.add_argument("update", metavar="UPDATE", help="the update's ID")

    if interactive:
        use = command(commands, "use", "act in a session that is open on the node already")
        use.add_argument("session", metavar="SESSION", help="the session ID")
        for verb in ("accept", "reject"):
            answering = command(commands, verb,
                                f"{verb} the latest proposal or update awaiting an answer",
                                f"{verb.capitalize()} a pending proposal or update: the latest "
                                "one, or the one whose ID (or ID prefix) is given.")
            answering.add_argument("id", metavar="ID", nargs="?",
                                   help="proposal or update ID or prefix (default: the latest)")
        command(commands, "pending", "proposals and updates awaiting your answer")
        command(commands, "jobs", "commands still running (waiting for the chain or the peer)")
        helping = command(commands, "help", "list the commands, or explain one")
        helping.add_argument("topic", metavar="COMMAND", nargs="*", help="a command")
        command(commands, "exit", "leave the shell (the session stays open on the node)")
        command(commands, "quit", "leave the shell (the session stays open on the node)")
    else:
        watch = command(commands, "watch", "print proposals and updates as they arrive",
                        "Subscribe to the session's proposals and updates and print each push "
                        "until ^C (or --count pushes).")
        watch.add_argument("--count", action=Once, type=at_least_one, metavar="N",
                           help="exit after N notifications")
        watch.add_argument("--topic", choices=("proposals", "updates", "payments"),
                           action="append",
                           help="only this topic (repeatable; default proposals and updates)")
        command(commands, "shell", "the interactive shell (the default without a command)")


class UsageErrorParser(argparse.ArgumentParser):
    """A one-shot parser whose usage errors raise UsageError (for --json, which reports them
    as an object on stdout like every other error) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (try: {self.prog} --help)")


def build_parser(usage_errors_raise: bool = False) -> argparse.ArgumentParser:
    """The one-shot parser: global options, then a command (`usage_errors_raise`: see
    `UsageErrorParser`)."""
    kind = UsageErrorParser if usage_errors_raise else argparse.ArgumentParser
    parser = kind(prog="perund-cli", description=DESCRIPTION, epilog=EPILOG,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    _globals(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_commands(commands, interactive=False)
    return parser


def build_shell_parser() -> ShellParser:
    """The parser of lines typed in the shell."""
    parser = ShellParser(prog="", add_help=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(commands, interactive=True)
    for sub in walk(parser):
        sub.prog = sub.prog.strip()
    return parser


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every sub-parser under `parser`, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from walk(sub)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The direct sub-commands of `parser` by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def subcommand_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The one-line help of each direct sub-command of `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {c.dest: c.help or "" for c in action._choices_actions}
    return {}


def positionals(parser: argparse.ArgumentParser) -> list[str]:
    """The dests of `parser`'s positional arguments, in order."""
    return [a.dest for a in parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def options(parser: argparse.ArgumentParser) -> list[str]:
    """The long option strings of `parser`."""
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def command_summaries(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(command line, help) of every leaf command, for `help`."""
    found: list[tuple[str, str]] = []

    def visit(p: argparse.ArgumentParser, prefix: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                for name, sub in action.choices.items():
                    if subcommands(sub):
                        visit(sub, f"{prefix}{name} ")
                    else:
                        args = " ".join(a.metavar or a.dest.upper() if a.nargs is None
                                        else f"[{a.metavar}]"
                                        for a in sub._actions if not a.option_strings)
                        required = [f"{a.option_strings[-1]} {a.metavar or a.dest.upper()}"
                                    for a in sub._actions if a.option_strings and a.required]
                        optional = [a for a in sub._actions if a.option_strings and
                                    not a.required and a.dest != "help" and
                                    a.default is not argparse.SUPPRESS]
                        args = " ".join(part for part in [args, *required] +
                                        (["[options]"] if optional else []) if part)
                        found.append((f"{prefix}{name} {args}".strip(), helps.get(name) or ""))

    visit(parser, "")
    return found
