"""The `perund` console script: `perund demo` (more subcommands arrive with the node).

`python -m perund.cli.main demo` is what `make demo` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, cast

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogBeginner, textFileLogObserver

from perund.chain.devchain import DEFAULT_DEV_CHAIN_ID


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `perund`, with one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="perund", description="perund: a state-channel node for Ethereum."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="walk through one channel's life on the embedded dev chain",
        description="Open, fund, update and close a payment channel between two dev accounts "
        "on an in-process chain, checking every balance to the wei.",
    )
    demo.add_argument(
        "--chain-id", type=int, default=DEFAULT_DEV_CHAIN_ID,
        help=f"chain ID of the embedded dev chain (default {DEFAULT_DEV_CHAIN_ID})",
    )
    demo.add_argument(
        "-v", "--verbose", action="store_true", help="also print the node's log to stderr"
    )
    return parser


def _demo(reactor: Any, options: argparse.Namespace) -> Deferred[None]:
    from perund.cli.demo import run_demo

    async def run() -> None:
        status = await run_demo(
            reactor, sys.stdout, options.chain_id, lambda text: print(text, file=sys.stderr)
        )
        if status:
            raise SystemExit(status)

    return Deferred.fromCoroutine(run())


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Parse `argv` (default: the process arguments), run the subcommand, exit with its status."""
    options = build_parser().parse_args(argv)
    if getattr(options, "verbose", False):
        observer = cast(ILogObserver, textFileLogObserver(sys.stderr))
        globalLogBeginner.beginLoggingTo([observer])
    if options.command == "demo":
        task.react(_demo, [options])
    raise SystemExit(2)  # argparse rejects unknown commands before this


if __name__ == "__main__":
    main()
