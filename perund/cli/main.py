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
    generate = commands.add_parser(
        "generate",
        help="write a node config and two ready-to-run sessions (alice and bob)",
        description="Write DIR/perund.yaml and DIR/alice, DIR/bob session folders (session.yaml, "
        "contacts naming each other, keystores of funded dev accounts, a password file) for "
        "the embedded dev chain or, with --chain-url, for anvil.",
    )
    generate.add_argument("directory", metavar="DIR", help="where to write (must not hold a "
                          "perund.yaml yet)")
    generate.add_argument("--chain-url", default="", help="JSON-RPC URL of an anvil node "
                          "(default: the embedded dev chain)")
    generate.add_argument("--chain-id", type=int, default=None, help="expected chain ID")
    generate.add_argument("--adjudicator", default=None,
                          help="address of the Adjudicator deployed on --chain-url")
    generate.add_argument("--api-port", type=int, default=50001, help="JSON-RPC port")
    generate.add_argument("--comm-ports", type=int, nargs=2, default=(5751, 5752),
                          metavar=("ALICE", "BOB"), help="the sessions' peer ports")
    return parser


def _generate(options: argparse.Namespace) -> int:
    from perund.cli.generate import generate
    from perund.errors import PerundError

    if options.chain_url and not options.adjudicator:
        print("perund generate: --chain-url needs --adjudicator", file=sys.stderr)
        return 2
    try:
        written = generate(options.directory, chain_url=options.chain_url,
                           chain_id=options.chain_id, adjudicator=options.adjudicator,
                           api_port=options.api_port, comm_ports=tuple(options.comm_ports))
    except PerundError as exc:
        print(f"perund generate: {exc.message}", file=sys.stderr)
        return 1
    print(f"node config   {written.node_config}")
    for user in written.users:
        print(f"{user.name:<6} session {user.session_file}")
        print(f"       on-chain {user.on_chain_address}  off-chain {user.off_chain_address}"
              f"  peers on port {user.comm_port}")
    print(f"start the node: twistd -n perund --config {written.node_config}")
    return 0


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
    if options.command == "generate":
        raise SystemExit(_generate(options))
    raise SystemExit(2)  # argparse rejects unknown commands before this


if __name__ == "__main__":
    main()
