"""The `perund` console script: `perund demo`, `perund generate`, `perund deploy`.

`python -m perund.cli.main demo` is what `make demo` runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogBeginner, textFileLogObserver

from perund.chain.devchain import DEFAULT_DEV_CHAIN_ID
from perund.channel.types import hex_address, to_address
from perund.config import CHAIN_URL_ENV


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
        help="write a node config and ready-to-run sessions (alice and bob, or --users)",
        description="Write DIR/perund.yaml and a session folder per user, DIR/alice and DIR/bob "
        "unless --users names others (session.yaml, contacts naming every other user, "
        "keystores of funded dev accounts, a password file) for the embedded dev chain or, "
        "with --chain-url, for anvil.",
    )
    generate.add_argument("directory", metavar="DIR", help="where to write (must not hold a "
                          "perund.yaml yet)")
    generate.add_argument("--chain-url", default="", help="JSON-RPC URL of an anvil node "
                          "(default: the embedded dev chain)")
    generate.add_argument("--chain-id", type=int, default=None, help="expected chain ID")
    generate.add_argument("--adjudicator", default=None,
                          help="address of the Adjudicator deployed on --chain-url")
    generate.add_argument("--asset", action="append", default=[], metavar="SYM:ADDRESS:DECIMALS",
                          help="a token the node's channels may hold, into chain.assets "
                          "(repeatable; the embedded chain's PRN is listed by itself)")
    generate.add_argument("--api-port", type=int, default=50001, help="JSON-RPC port")
    generate.add_argument("--users", default="alice,bob", metavar="NAMES",
                          help="comma-separated user names, 2 to 9 (default alice,bob), e.g. "
                          "alice,ingrid,carol for a virtual channel through ingrid")
    generate.add_argument("--comm-ports", type=_port_list, default=None, metavar="PORTS",
                          help="comma-separated peer ports, one per user in order, e.g. "
                          "5751,5752 (default: 5751 and up)")
    deploy = commands.add_parser(
        "deploy",
        help="deploy the Adjudicator to a chain and write a node config for it",
        description="Deploy this version's Adjudicator from a keystore account to the chain at "
        "--chain-url, wait for --confirmations, check the code at the new address, print it, "
        "and (with --node-config) write a new node config that uses it.",
    )
    from_env = os.environ.get(CHAIN_URL_ENV) or None
    deploy.add_argument("--chain-url", required=from_env is None, default=from_env,
                        help=f"the chain's JSON-RPC URL (else {CHAIN_URL_ENV}: an API key on "
                             "the command line is visible to every local user)")
    deploy.add_argument("--keystore", required=True, help="keystore v3 file of the deploying "
                        "account (it pays the gas)")
    deploy.add_argument("--password-file", default=None, help="the keystore's password file "
                        "(else PERUND_PASSWORD, else asked on the terminal)")
    deploy.add_argument("--chain-id", type=int, default=None,
                        help="the chain ID to expect (refuses another chain)")
    deploy.add_argument("--confirmations", type=int, default=2,
                        help="blocks to wait above the deployment (default 2)")
    deploy.add_argument("--node-config", default=None, metavar="FILE",
                        help="write a new node config using the deployment to FILE")
    deploy.add_argument("--test-token", action="store_true",
                        help="also deploy the test token PRN (18 decimals, anyone may mint it: "
                        "test networks only), mint 1,000,000 PRN to the deployer, and list it "
                        "in the node config")
    deploy.add_argument("--mint-to", action="append", default=[], metavar="ADDRESS",
                        help="with --test-token: mint 1,000,000 PRN to ADDRESS too (repeatable)")
    return parser


def _port_list(text: str) -> tuple[int, ...]:
    """`--comm-ports`: one argument, like `--users` (several would swallow DIR after them)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: comma-separated port numbers, e.g. 5751,5752") from None


def _generate(options: argparse.Namespace) -> int:
    from perund.cli.generate import generate
    from perund.errors import PerundError

    if options.chain_url and not options.adjudicator:
        print("perund generate: --chain-url needs --adjudicator", file=sys.stderr)
        return 2
    assets: dict[str, tuple[str, int]] = {}
    for text in options.asset:
        symbol, _, rest = text.partition(":")
        address, _, decimals = rest.partition(":")
        if not symbol or not address or not decimals.isdigit():
            print(f"perund generate: --asset {text}: SYMBOL:ADDRESS:DECIMALS, e.g. "
                  "USDC:0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238:6", file=sys.stderr)
            return 2
        assets[symbol] = (address, int(decimals))
    try:
        written = generate(options.directory, chain_url=options.chain_url,
                           chain_id=options.chain_id, adjudicator=options.adjudicator,
                           api_port=options.api_port, comm_ports=options.comm_ports,
                           users=[name.strip() for name in options.users.split(",")],
                           assets=assets)
    except PerundError as exc:
        print(f"perund generate: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        from perund.safe_files import os_reason

        where = f" {exc.filename}" if exc.filename else ""
        print(f"perund generate: cannot write{where}: {os_reason(exc)}", file=sys.stderr)
        return 1
    print(f"node config   {written.node_config}")
    width = max(6, *(len(user.name) for user in written.users))
    for user in written.users:
        print(f"{user.name:<{width}} session {user.session_file}")
        print(f"{'':<{width}} on-chain {user.on_chain_address}  off-chain "
              f"{user.off_chain_address}  peers on port {user.comm_port}")
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


def _deploy(reactor: Any, options: argparse.Namespace) -> Deferred[None]:
    from perund.cli.deploy import (
        ask_on_terminal,
        check_node_config_target,
        deploy,
        password_for,
        unlock_account,
        write_node_config,
    )
    from perund.errors import PerundError
    from perund.safe_files import os_reason

    async def run() -> None:
        try:
            if options.confirmations < 0:
                raise SystemExit("perund deploy: --confirmations must be 0 or more")
            if options.mint_to and not options.test_token:
                raise SystemExit("perund deploy: --mint-to needs --test-token")
            mint_to = []
            for text in options.mint_to:
                try:
                    mint_to.append(to_address(text))
                except ValueError:
                    raise SystemExit(f"perund deploy: --mint-to {text[:64]}: not a 0x "
                                     "address") from None
            if options.node_config:
                check_node_config_target(Path(options.node_config))
            password = password_for(options.password_file, dict(os.environ), ask_on_terminal())
            account = unlock_account(options.keystore, password)
            done = await deploy(reactor, sys.stdout, chain_url=options.chain_url,
                                account=account, chain_id=options.chain_id,
                                confirmations=options.confirmations,
                                test_token=options.test_token, mint_to=mint_to)
        except PerundError as exc:
            print(f"perund deploy: {exc.message}", file=sys.stderr)
            raise SystemExit(1) from None
        # What was deployed is printed first: it exists whatever happens to the config file.
        print(f"chain        {done.chain_id}")
        print(f"adjudicator  {hex_address(done.adjudicator)}")
        print(f"transaction  0x{done.tx_hash.hex()} (block {done.block}, gas {done.gas_used:,})")
        if done.test_token is not None:
            print(f"test token   {hex_address(done.test_token)} (PRN, 18 decimals)")
        sys.stdout.flush()
        if options.node_config:
            try:
                write_node_config(Path(options.node_config), options.chain_url, done,
                                  options.confirmations)
            except (PerundError, OSError) as exc:
                why = exc.message if isinstance(exc, PerundError) else os_reason(exc)
                print(f"perund deploy: the contracts are deployed (above), but the node config "
                      f"{options.node_config} could not be written: {why}", file=sys.stderr)
                raise SystemExit(1) from None
            print(f"node config  {options.node_config}: name your users' folders under "
                  "sessions.config_dirs, then twistd -n perund --config "
                  f"{options.node_config}")

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
    if options.command == "deploy":
        task.react(_deploy, [options])
    raise SystemExit(2)  # argparse rejects unknown commands before this


if __name__ == "__main__":
    main()
