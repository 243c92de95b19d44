"""Tab completion in the shell of perund-cli."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from perund.cli.client.parser import options, positionals, subcommand_helps, subcommands
from perund.cli.client.render import short_id
from perund.cli.client.shell_state import ShellState


class ShellCompleter(Completer):
    """Completion from the shell's parser and what the shell knows (peers, channels, pending
    answers, sessions, the node's currencies). Never asks the node: it must answer at once."""

    def __init__(self, shell: ShellState) -> None:
        self.shell = shell
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        current = ""
        if text and not text[-1].isspace() and words:
            current = words.pop()
        parser: argparse.ArgumentParser = self.shell.parser
        index = 0
        while index < len(words) and words[index] in subcommands(parser):
            parser = subcommands(parser)[words[index]]
            index += 1
        subs = subcommands(parser)
        if subs:
            if index == len(words):
                helps = subcommand_helps(parser)
                for name in subs:
                    if name.startswith(current):
                        yield Completion(name, -len(current), display_meta=helps.get(name) or "")
            return
        if current.startswith("-"):
            for option in options(parser):
                if option.startswith(current):
                    yield Completion(option, -len(current))
            return
        takes_value = {s for a in parser._actions for s in a.option_strings if a.nargs != 0}
        position, skip, option = 0, False, ""
        for word in words[index:]:
            if skip:
                skip = False
            elif word.startswith("-"):
                skip, option = word in takes_value, word
            else:
                position += 1
        if skip and option == "--currency":
            symbols = self.shell.ctx.symbols or []
            for symbol in symbols:
                if symbol.lower().startswith(current.lower()):
                    yield Completion(symbol, -len(current), display_meta="currency")
            return
        dests = positionals(parser)
        if skip or position >= len(dests):
            return
        yield from self.values(parser.prog, dests[position], current, complete_event)

    def values(self, prog: str, dest: str, current: str,
               event: CompleteEvent) -> Iterable[Completion]:
        """Completions of one positional argument."""
        shell = self.shell
        candidates: list[tuple[str, str]] = []
        if dest == "config":
            yield from self.paths.get_completions(Document(current), event)
            return
        if dest in ("peer", "alias") and prog != "peer add":
            candidates = [(alias, "peer") for alias in shell.peers]
        elif dest == "channel":
            with shell.lock:
                channels = list(shell.channels.values())
            for c in channels:
                candidates.append((c["channelId"], f"{c['peer']} {c['phase']}"))
            live: dict[str, list[dict[str, Any]]] = {}
            for c in channels:
                if c["phase"] != "closed":
                    live.setdefault(c["peer"], []).append(c)
            candidates += [(peer, "its channel") for peer, cs in live.items() if len(cs) == 1]
        elif dest in ("proposal", "update", "id"):
            for p in shell.live_pending():
                if dest in (p.kind, "id"):
                    candidates.append((p.id, f"{p.kind} from {p.peer}"))
        elif dest == "session":
            candidates = [(s, "session") for s in shell.known_sessions]
        elif dest == "topic":
            candidates = [(name, "") for name in subcommands(shell.parser)]
        low = current.lower()
        for value, meta in candidates:
            if value.lower().startswith(low) or (low and not low.startswith("0x") and
                                                 value.lower().startswith("0x" + low)):
                yield Completion(value, -len(current), display=short_id(value)
                                 if value.startswith("0x") and len(value) > 20 else value,
                                 display_meta=meta)
