"""Which function runs a parsed command, for the one-shot mode and the shell alike."""

from __future__ import annotations

import argparse

from perund.cli.client.close_commands import CLOSE_HANDLERS
from perund.cli.client.commands import HANDLERS, Handler
from perund.cli.client.history_commands import HISTORY_HANDLERS
from perund.cli.client.token_commands import TOKEN_HANDLERS

_ALL: dict[tuple[str, str | None], Handler] = {**HANDLERS, **CLOSE_HANDLERS, **TOKEN_HANDLERS,
                                               **HISTORY_HANDLERS}


def handler_of(args: argparse.Namespace) -> Handler | None:
    """The shared handler of parsed `args`, if it is a shared command."""
    return _ALL.get((args.command, getattr(args, "action", None)))
