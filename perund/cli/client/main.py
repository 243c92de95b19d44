"""`perund-cli`: one-shot commands for scripts, or the interactive shell without a command.

Results go to stdout (text, or the node's JSON with --json); progress and remarks go to stderr;
a failure is one `error: ...` line on stderr (with --json: a JSON error object on stdout) and
an exit code from `perund.cli.client.errors`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from perund.cli.apiclient import ApiClient, ApiError, AuthFailed, NodeUnreachable
from perund.cli.client import render
from perund.cli.client.commands import Context, Long, Outcome
from perund.cli.client.errors import (
    EXIT_INTERRUPTED,
    EXIT_NODE_ERROR,
    EXIT_OK,
    CliError,
    UsageError,
    failure_of,
)
from perund.cli.client.handlers import handler_of
from perund.cli.client.options import given_twice
from perund.cli.client.parser import build_parser
from perund.cli.client.progress import ProgressLine, wait_with_progress
from perund.cli.client.render import Style, colour_wanted
from perund.cli.client.settings import node_of, session_of, token_file_of, token_of

HTTP_TIMEOUT = 60.0
"""Seconds a quick call may take; calls that wait for the peer or the chain have no limit."""


def connect(args: argparse.Namespace, style: Style) -> Context:
    """The Context of the global options and the environment."""
    node = node_of(args.node, os.environ)
    token = token_of(args.token_file, os.environ)
    api = ApiClient(node.port, token, node.host, timeout=HTTP_TIMEOUT)
    ctx = Context(api, style, str(node), session_of(args.session, os.environ),
                  token_file_of(args.token_file, os.environ))
    if sys.stdin.isatty() and sys.stderr.isatty():
        # A script's stdin is no answer: without a terminal, a question is refused instead.
        ctx.confirm = ask_on_terminal
    return ctx


def ask_on_terminal(question: str) -> bool:
    """Ask `question` on stderr; whether the line typed on stdin says yes (^D: no)."""
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _node_label(args: argparse.Namespace) -> str:
    try:
        return str(node_of(args.node, os.environ))
    except CliError:
        return str(args.node)


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def run_once(args: argparse.Namespace, style: Style) -> int:
    """Run one command; its exit code."""
    try:
        ctx = connect(args, style)
        if args.command == "watch":
            return watch(ctx, args)
        handler = handler_of(args)
        if handler is None:  # argparse only lets known commands through
            raise UsageError(f"unknown command {args.command}")
        result = handler(ctx, args)
        if isinstance(result, Long):
            progress = ProgressLine(sys.stderr, sys.stderr.isatty(),
                                    Style(colour_wanted(sys.stderr, args.no_color)))
            result = result.finish(wait_with_progress(result.title, result.call, result.status,
                                                      progress))
        assert isinstance(result, Outcome)
        for note in result.notes:
            print(note, file=sys.stderr)
        if args.json:
            print_json(result.value)
        else:
            print(result.text)
        return EXIT_OK
    except (ApiError, NodeUnreachable, AuthFailed, CliError, KeyboardInterrupt) as exc:
        failure = failure_of(exc, _node_label(args))
        if args.json:
            print_json(failure.to_json())
        else:
            message = failure.line
            if isinstance(exc, KeyboardInterrupt):
                message += "; what the node was asked to do goes on there"
            print(f"{style.bad('error:')} {message}", file=sys.stderr)
        return failure.exit_code


def watch(ctx: Context, args: argparse.Namespace) -> int:
    """Print the session's pushes until ^C or --count of them."""
    import queue

    session = ctx.session_id()
    pushes: queue.Queue[tuple[str, Any] | BaseException | None] = queue.Queue()
    stream = ctx.api.push_stream(lambda sub, result: pushes.put((sub, result)),
                                 lambda error: pushes.put(error))
    try:
        for topic in args.topic or ("proposals", "updates"):
            stream.call("subscribe", sessionId=session, topic=topic)
        if not args.json:
            print(f"watching session {session} on {ctx.node_label} (^C to stop)",
                  file=sys.stderr, flush=True)
        seen = 0
        known: dict[str, Any] = {}
        while args.count is None or seen < args.count:
            item = pushes.get()
            if item is None or isinstance(item, BaseException):
                raise NodeUnreachable("the node closed the WebSocket")
            _, result = item
            if result.get("type") == "sessionClosed":
                # Every subscription hears it (one per topic): the first ends the watch, as
                # a new watch of the session would be refused (201).
                if args.json:
                    print(json.dumps(result, ensure_ascii=False), flush=True)
                else:
                    print(f"{ctx.style.bad('error:')} session {session} was closed (session "
                          "close, perhaps by another client): nothing more comes from it "
                          "(201)", file=sys.stderr, flush=True)
                return EXIT_NODE_ERROR
            seen += 1
            if args.json:
                print(json.dumps(result, ensure_ascii=False), flush=True)
                continue
            channel_id = str(result.get("channelId") or "")
            kind = result.get("type")
            before = known.get(channel_id)
            if kind == "open":
                # The state the update would replace: the node's current one.
                try:
                    before = ctx.call("channel_get", sessionId=session,
                                      channelId=channel_id)["balances"]
                except (ApiError, NodeUnreachable):
                    before = None
            line = render.describe_push(result, ctx.style, before, _now(ctx))
            if kind in ("updated", "disputed", "closed") and isinstance(result.get("channel"),
                                                                         dict):
                known[channel_id] = result["channel"].get("balances", {})
            print(line + _answer_hint(result, channel_id), flush=True)
        return EXIT_OK
    except KeyboardInterrupt:
        # Like every command ended by ^C (docs/cli.md, exit codes): a script that stops a
        # watch can tell that from a watch that got its --count pushes.
        return EXIT_INTERRUPTED
    finally:
        stream.close()


def _answer_hint(push: dict[str, Any], channel_id: str) -> str:
    """The command that answers `push`, on a line of its own; "" for a push that needs no
    answer, or can no longer have one (a proposal or update that is gone)."""
    if push.get("type") == "gone":
        return ""
    if "proposalId" in push:
        return f"\n  perund-cli proposal accept {push['proposalId']}"
    if push.get("updateId"):
        return f"\n  perund-cli update accept {channel_id} {push['updateId']}"
    return ""


def _now(ctx: Context) -> float | None:
    try:
        return ctx.node_now()
    except (ApiError, NodeUnreachable):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse `argv` (default: the process's), run, return the exit code."""
    given = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in given
    try:
        parser = build_parser(usage_errors_raise=wants_json)
        twice = given_twice(given)
        if twice is not None:
            # Before and after the command: which one was meant (which session!) is unknown.
            parser.error(f"argument {twice}: given twice: give it once")
        args = parser.parse_args(given)
    except UsageError as exc:  # only with --json: the error as an object on stdout
        failure = failure_of(exc, "-")
        print_json(failure.to_json())
        return failure.exit_code
    style = Style(colour_wanted(sys.stdout, args.no_color))
    try:
        if args.command in (None, "shell"):
            from perund.cli.client.prompt import run_shell

            return run_shell(args, style)
        return run_once(args, style)
    except Exception as exc:  # a bug in the CLI: one line, unless asked for the traceback
        if os.environ.get("PERUND_CLI_DEBUG"):
            raise
        print(f"error: perund-cli failed: {type(exc).__name__}: {exc} (set PERUND_CLI_DEBUG=1 "
              "for the traceback)", file=sys.stderr)
        return EXIT_NODE_ERROR


if __name__ == "__main__":
    sys.exit(main())
