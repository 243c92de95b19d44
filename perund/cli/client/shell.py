"""The interactive shell of perund-cli.

One prompt_toolkit PromptSession (history in the state dir, Tab completion of commands, peer
aliases, channel IDs and pending proposal/update IDs) and one WebSocket subscribed to the
current session's proposals and updates. Pushes are printed by the socket's reader thread
through `patch_stdout`, above the line being typed. Every command runs in a worker thread:
the prompt waits for it briefly, so quick answers print before the next prompt, and a command
that waits for the peer or the chain goes on in the background, its progress in the bottom
toolbar (or as periodic lines when there is no toolbar: a dumb terminal, or lines piped in).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from perund.api.credentials import CLOSE_REVOKED
from perund.cli.apiclient import ApiClient, ApiError, AuthFailed, NodeUnreachable, PushStream
from perund.cli.client import render
from perund.cli.client.commands import (
    HEX_ID,
    Context,
    Long,
    Outcome,
    answer_proposal,
    answer_update,
    config_path,
)
from perund.cli.client.credentials import is_session_credential
from perund.cli.client.errors import (
    EXIT_OK,
    CliError,
    NotFound,
    UsageError,
    failure_of,
)
from perund.cli.client.handlers import handler_of
from perund.cli.client.parser import (
    ShellExit,
    build_shell_parser,
    command_summaries,
    options,
    positionals,
    subcommand_helps,
    subcommands,
)
from perund.cli.client.progress import changed_shape
from perund.cli.client.render import Style, short_id
from perund.cli.client.settings import check_session_id, node_of, session_of, state_dir, token_of

FOREGROUND_WAIT = 0.5
"""Seconds the prompt waits for a command that waits for the peer or the chain (channel open,
pay, close, ...) before leaving it to run in the background."""

QUICK_WAIT = 5.0
"""Seconds the prompt waits for a quick command (a list, a balance) before the same."""

PROGRESS_EVERY = 10.0
"""Seconds between progress lines when there is no toolbar."""

RECONNECT_EVERY = 2.0


@dataclass
class Pending:
    """A proposal or update that awaits the user's answer."""

    kind: str  # "proposal" | "update"
    id: str
    peer: str
    expiry: float | None
    push: dict[str, Any]
    channel_id: str | None = None


@dataclass
class Job:
    """A command running in a worker thread."""

    number: int
    title: str
    started: float = field(default_factory=time.monotonic)
    status: str = ""
    status_of: Callable[[], str] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    backgrounded: bool = False
    answering: str | None = None
    """The channel whose update this job answers: its `updated` push says nothing new."""
    last_line: tuple[str, float] = ("", 0.0)

    def elapsed(self) -> int:
        """Whole seconds since it started."""
        return int(time.monotonic() - self.started)


class Shell:
    """The state of one interactive session of perund-cli."""

    def __init__(self, api: ApiClient, style: Style, node_label: str, interactive: bool) -> None:
        self.api = api
        self.style = style
        self.node_label = node_label
        self.interactive = interactive
        self.toolbar_visible = False
        self.ctx = Context(api, style, node_label, None)
        self.ctx.pending_resolver = self.resolve_pending
        self.parser = build_shell_parser()
        self.label: str | None = None
        self.lock = threading.RLock()
        self.pending: list[Pending] = []
        self.channels: dict[str, dict[str, Any]] = {}
        self.peers: list[str] = []
        self.known_sessions: list[str] = []
        self.session_config: str | None = None
        """The session file of the current session, when this shell opened it: should the
        session not be open after a node restart, the shell opens it again by it."""
        self.jobs: list[Job] = []
        self._background_numbers = 0
        self.stream: PushStream | None = None
        self.subscriptions: set[str] = set()
        self.dropped: set[str] = set()
        self.closing = False
        self._print_lock = threading.Lock()

    # -- output ----------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Print `text` (from any thread; above the prompt while one is shown)."""
        with self._print_lock:
            print(text, flush=True)

    def error(self, exc: BaseException, title: str = "") -> None:
        """Report a failed command in one line."""
        failure = failure_of(exc, self.node_label)
        head = f"{title}: " if title else ""
        self.say(f"{self.style.bad('error:')} {head}{failure.line}")

    # -- session and pushes ----------------------------------------------------------------------

    def use(self, session: str, label: str | None) -> None:
        """Make `session` current: subscribe to its pushes, load its peers and channels."""
        peers = self.api.result("session_listPeers", {"sessionId": session})
        with self.lock:
            self.ctx.session = session
            self.label = label or short_id(session)
            self.peers = [p["alias"] for p in peers]
            self.pending.clear()
            if session not in self.known_sessions:
                self.known_sessions.append(session)
        self.refresh_channels()
        self.subscribe()

    def connect_stream(self) -> None:
        """Open the WebSocket for pushes (NodeUnreachable or AuthFailed if it cannot)."""
        self.stream = self.api.push_stream(self.on_push, self.on_stream_closed)

    def switch_credential(self, token: str) -> None:
        """Act with `token` from now on (the session's own credential `session open` returned,
        or the new one of a rotation): calls and the push socket both."""
        api = ApiClient(self.api.port, token, self.api.host, timeout=self.api.timeout)
        old = self.stream
        with self.lock:
            self.api = api
            self.ctx.api = api
            self.subscriptions.clear()  # they were the old socket's
        self.connect_stream()
        if old is not None:
            old.close()

    def subscribe(self) -> None:
        """Subscribe the socket to the current session's proposals and updates."""
        stream, session = self.stream, self.ctx.session
        if stream is None or session is None:
            return
        self._drop_subscriptions(stream)
        for topic in ("proposals", "updates"):
            self.subscriptions.add(str(stream.call("subscribe", sessionId=session, topic=topic)))

    def _drop_subscriptions(self, stream: PushStream | None) -> None:
        # Pushes of a subscription are ignored from now on (its session is no longer ours);
        # a new subscription's pushes are taken even before its ID is known here, because
        # the node may send cached ones right after the reply.
        with self.lock:
            old, self.subscriptions = set(self.subscriptions), set()
            self.dropped |= old
        for subscription in old:
            with contextlib.suppress(ApiError, NodeUnreachable):  # gone with its session
                if stream is not None:
                    stream.call("unsubscribe", subscriptionId=subscription)

    def on_stream_closed(self, error: BaseException | None) -> None:
        """The node closed the socket (it stopped?): reconnect in the background."""
        if self.closing:
            return
        if _close_code(error) == CLOSE_REVOKED:
            self.say(self.style.bad("the node revoked this shell's credential: no more pushes "
                                    "or calls; start perund-cli again with a valid one"))
            return
        self.say(self.style.warn("the node's WebSocket closed: no pushes until it is back; "
                                 "reconnecting…"))
        threading.Thread(target=self._reconnect, name="perund-cli-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        while not self.closing:
            time.sleep(RECONNECT_EVERY)
            try:
                self.connect_stream()
            except (NodeUnreachable, AuthFailed):
                continue
            self.say(self.style.ok("reconnected to the node's WebSocket"))
            with self.lock:
                self.subscriptions.clear()  # they were the old socket's
            try:
                self.subscribe()
            except ApiError as exc:
                session, config, label = self.ctx.session, self.session_config, self.label
                self._left_session()
                if config is not None and self._find_again(config, label):
                    return
                self.say(self.style.warn(f"session {session} is not open on the node any more "
                                         f"({failure_of(exc, self.node_label).line}): "
                                         "`session open CONFIG` opens it again"))
            except NodeUnreachable:
                continue
            return

    def _find_again(self, config: str, label: str | None) -> bool:
        """After a node restart: the node opened the session again under a new ID (or opens
        it now); use that. False if it cannot be opened."""
        try:
            opened = self.ctx.opener.result("session_open", {"configFile": config})
            session = str(opened["sessionId"])
        except ApiError as exc:
            data = exc.error.get("data") or {}
            if exc.code != 202 or not isinstance(data, dict) or data.get("type") != "session":
                return False
            session = "0x" + str(data.get("id", "")).removeprefix("0x")
        except NodeUnreachable:
            return False
        self.use(session, label)
        self.session_config = config
        self.say(self.style.ok(f"the node restarted; session {self.style.ident(session)} "
                               f"({self.label}) is open again: using it"))
        return True

    def on_push(self, subscription: str, push: Any) -> None:
        """A push of the current session: remember what needs an answer, print it."""
        if subscription in self.dropped or not isinstance(push, dict):
            return
        now = self._node_now()
        hint = "accept or reject"
        if "proposalId" in push and push.get("type") == "gone":
            with self.lock:
                self.pending = [p for p in self.pending if p.id != push["proposalId"]]
            self.say(render.describe_push(push, self.style, None, now))
            return
        if "proposalId" in push:
            with self.lock:
                self.pending.append(Pending("proposal", str(push["proposalId"]),
                                            str(push.get("peer")), push.get("expiry"), push))
            self.say(render.describe_push(push, self.style, None, now, hint))
            return
        channel_id = str(push.get("channelId") or "")
        kind = push.get("type")
        known = self.channels.get(channel_id)
        if kind == "updated" and known is not None and isinstance(push.get("channel"), dict) \
                and known.get("version", -1) >= push["channel"].get("version", 0):
            return  # a state this shell showed already (the answer to our own command)
        with self.lock:
            answering = any(j.answering == channel_id for j in self.jobs)
        if kind == "updated" and answering:
            return  # the state our own answer made: the answer's result shows it
        if kind == "closed" and known is not None and known.get("phase") == "closed":
            return  # our own `channel close` said so already
        before = self._balances_now(channel_id) if kind == "open" else \
            (known or {}).get("balances")
        if kind in ("open", "final") and push.get("updateId"):
            channel = push.get("channel") or {}
            with self.lock:
                self.pending.append(Pending("update", str(push["updateId"]),
                                            str(channel.get("peer")), push.get("expiry"), push,
                                            channel_id))
            self.say(render.describe_push(push, self.style, before, now, hint))
        else:
            if kind == "closed":
                with self.lock:
                    self.pending = [p for p in self.pending if p.channel_id != channel_id]
            if kind == "gone":
                with self.lock:
                    self.pending = [p for p in self.pending if p.id != push.get("updateId")]
            self.say(render.describe_push(push, self.style, before, now))
            if kind in ("updated", "disputed", "closed") and isinstance(push.get("channel"),
                                                                         dict):
                with self.lock:
                    self.channels[channel_id] = push["channel"]
        if channel_id:
            threading.Thread(target=self.refresh_channels, daemon=True).start()

    def _balances_now(self, channel_id: str) -> Any:
        """The channel's balances before a pushed update (incoming payments are not pushed,
        so the cache may be behind): asked of the node, the cache if that fails."""
        session = self.ctx.session
        if session is not None and channel_id:
            with contextlib.suppress(ApiError, NodeUnreachable, AuthFailed):
                channel = self.ctx.quick("channel_get", sessionId=session, channelId=channel_id)
                return channel.get("balances")
        return self.channels.get(channel_id, {}).get("balances")

    def _node_now(self) -> float | None:
        try:
            return self.ctx.node_now()
        except (ApiError, NodeUnreachable, AuthFailed):
            return None

    def refresh_channels(self) -> None:
        """Reload the channel cache (completion, balances before an update)."""
        if self.ctx.session is None:
            return
        try:
            channels = self.ctx.channels()
        except (ApiError, NodeUnreachable, AuthFailed, CliError):
            return
        with self.lock:
            self.channels = {c["channelId"]: c for c in channels}

    def live_pending(self) -> list[Pending]:
        """Pending answers that have not expired, oldest first."""
        now = self._node_now()
        with self.lock:
            if now is not None:
                self.pending = [p for p in self.pending
                                if not isinstance(p.expiry, (int, float)) or p.expiry > now]
            return list(self.pending)

    def resolve_pending(self, kind: str, ref: str) -> str:
        """The full ID of the pending `kind` that `ref` (an ID or prefix) names."""
        text = ref.strip().lower()
        prefix = text if text.startswith("0x") else "0x" + text
        matches = [p for p in self.live_pending() if p.kind == kind and p.id.startswith(prefix)]
        if len(matches) == 1:
            return matches[0].id
        if len(matches) > 1:
            raise UsageError(f"{kind} prefix {ref} is ambiguous")
        if HEX_ID.match(text) and len(prefix) == 66:
            return prefix  # not seen here (pushed before this shell started): ask the node
        raise NotFound(kind, ref)

    def _take(self, ref: str | None) -> Pending:
        live = self.live_pending()
        if ref is None:
            if not live:
                raise UsageError("nothing awaits your answer")
            chosen = live[-1]
        else:
            text = ref.strip().lower()
            prefix = text if text.startswith("0x") else "0x" + text
            matches = [p for p in live if p.id.startswith(prefix)]
            if not matches:
                raise NotFound("proposal or update", ref)
            if len(matches) > 1:
                raise UsageError(f"prefix {ref} is ambiguous")
            chosen = matches[0]
        with self.lock:
            if chosen in self.pending:
                self.pending.remove(chosen)
        return chosen

    # -- commands --------------------------------------------------------------------------------

    def execute(self, line: str) -> Job | bool:
        """Run one typed line: False to leave the shell, True when it is done, or the Job
        running it (see `wait_foreground`)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.say(f"{self.style.bad('error:')} {exc}")
            return True
        if not words:
            return True
        if words[0] in ("?",):
            words[0] = "help"
        try:
            args = self.parser.parse_args(words)
        except ShellExit:
            return True  # --help was printed
        except UsageError as exc:
            self.error(exc)
            return True
        command = args.command
        if command in ("exit", "quit"):
            return False
        if command == "help":
            self.help(args.topic)
            return True
        if command == "pending":
            self.show_pending()
            return True
        if command == "jobs":
            self.show_jobs()
            return True
        return self.start(args)

    def start(self, args: argparse.Namespace) -> Job:
        """Run a node command in a worker thread."""
        job = Job(0, " ".join(str(v) for v in (args.command, getattr(args, "action", None))
                              if v))
        with self.lock:
            self.jobs.append(job)
        threading.Thread(target=self._work, args=(job, args), name="perund-cli-job",
                         daemon=True).start()
        return job

    def wait_foreground(self, job: Job) -> None:
        """Wait for `job` briefly (until done when lines are piped in); then leave it to run
        in the background."""
        if not self.interactive:
            job.done.wait()
            return
        deadline = time.monotonic() + QUICK_WAIT
        while not job.done.wait(FOREGROUND_WAIT):
            # A quick call answers within a moment: its output before the next prompt reads
            # better. One that waits for the peer or the chain goes to the background at once.
            if job.status_of is None and time.monotonic() < deadline:
                continue
            with self.lock:
                self._background_numbers += 1
                job.number = self._background_numbers
            job.backgrounded = True
            where = "progress in the toolbar" if self.toolbar_visible else "`jobs` lists it"
            self.say(self.style.dim(f"[{job.number}] {job.title}: in the background ({where})"))
            return

    def _work(self, job: Job, args: argparse.Namespace) -> None:
        try:
            result = self._dispatch(args, job)
            if isinstance(result, Long):
                job.title, job.status_of = result.title, result.status
                job.status = "starting"
                value = result.call()
                result = result.finish(value)
            self._show(result, args)
        except (ApiError, NodeUnreachable, AuthFailed, CliError) as exc:
            # A long command may fail long after it was typed: say which one.
            self.error(exc, job.title if job.status_of is not None else "")
        except Exception as exc:  # a bug: keep the shell alive, say what failed
            self.say(f"{self.style.bad('error:')} {job.title}: {type(exc).__name__}: {exc}")
        finally:
            job.done.set()
            with self.lock:
                if job in self.jobs:
                    self.jobs.remove(job)

    def _dispatch(self, args: argparse.Namespace, job: Job) -> Outcome | Long:
        if args.command == "use":
            session = check_session_id(args.session)
            self.use(session, None)
            return Outcome(session, f"using session {self.style.ident(session)}")
        if args.command in ("accept", "reject"):
            chosen = self._take(args.id)
            accept = args.command == "accept"
            if chosen.kind == "proposal":
                return answer_proposal(self.ctx, chosen.id, accept, chosen.peer)
            assert chosen.channel_id is not None
            job.answering = chosen.channel_id
            return answer_update(self.ctx, chosen.channel_id, chosen.id, accept)
        handler = handler_of(args)
        if handler is None:
            raise UsageError(f"unknown command {args.command}")
        args.in_shell = True
        return handler(self.ctx, args)

    def _show(self, outcome: Outcome, args: argparse.Namespace) -> None:
        if outcome.credential:
            self.switch_credential(outcome.credential)
        if outcome.session is not None:
            self.use(outcome.session, outcome.session_label)
            opened = (args.command, getattr(args, "action", None)) == ("session", "open")
            self.session_config = config_path(args.config) if opened else None
        if (args.command, getattr(args, "action", None)) == ("session", "close"):
            self._left_session()
        for note in outcome.notes:
            self.say(self.style.dim(note))
        self.say(outcome.text)
        value = outcome.value
        if isinstance(value, dict) and "channelId" in value:
            with self.lock:
                self.channels[value["channelId"]] = value
        elif isinstance(value, list) and all(isinstance(v, dict) and "channelId" in v
                                              for v in value) and value:
            with self.lock:
                self.channels.update({v["channelId"]: v for v in value})
        if (args.command, getattr(args, "action", None)) == ("peer", "add"):
            with self.lock:
                self.peers.append(str(value.get("alias")))

    def _left_session(self) -> None:
        self._drop_subscriptions(self.stream)
        with self.lock:
            self.ctx.session = None
            self.label = None
            self.pending.clear()
            self.channels.clear()
            self.peers = []

    def help(self, topic: list[str]) -> None:
        """`help` and `help COMMAND`."""
        if topic:
            parser: argparse.ArgumentParser = self.parser
            for word in topic:
                subs = subcommands(parser)
                if word not in subs:
                    self.say(f"{self.style.bad('error:')} no command {' '.join(topic)}")
                    return
                parser = subs[word]
            self.say(parser.format_help().rstrip())
            return
        rows = [[self.style.paint(cmd, "bold"), text]
                for cmd, text in command_summaries(self.parser)]
        self.say("commands (Tab completes; `help COMMAND` or `COMMAND --help` explains one):\n"
                 + render.table(["COMMAND", "WHAT"], rows, self.style) +
                 "\nCHANNEL may be an ID prefix (0x12ab) or the alias of a peer with one open "
                 "channel. Proposals and updates pushed by the node are printed as they come; "
                 "`accept` / `reject` answer the latest.")

    def show_pending(self) -> None:
        """`pending`: what awaits an answer."""
        live = self.live_pending()
        if not live:
            self.say("nothing awaits your answer")
            return
        now = self._node_now()
        rows = []
        for p in live:
            expires = "" if not isinstance(p.expiry, (int, float)) or now is None else \
                render.seconds_text(p.expiry - now)
            what = p.push.get("kind") or p.push.get("type") or "channel"
            rows.append([p.kind, self.style.ident(short_id(p.id)), p.peer,
                         short_id(p.channel_id) if p.channel_id else "", str(what), expires])
        self.say(render.table(["KIND", "ID", "FROM", "CHANNEL", "WHAT", "EXPIRES IN"], rows,
                              self.style))

    def show_jobs(self) -> None:
        """`jobs`: commands still running."""
        with self.lock:
            jobs = [j for j in self.jobs if not j.done.is_set()]
        if not jobs:
            self.say("no commands running")
            return
        self.say(render.table(["JOB", "COMMAND", "WAITING FOR", "FOR"], [
            [str(j.number or "-"), j.title, j.status or "the node", f"{j.elapsed()} s"]
            for j in jobs
        ], self.style))

    # -- progress --------------------------------------------------------------------------------

    def poll_progress(self) -> None:
        """Every second: ask what each long job waits for; print it when there is no toolbar."""
        while not self.closing:
            time.sleep(1.0)
            with self.lock:
                jobs = [j for j in self.jobs if j.status_of is not None and not j.done.is_set()]
            for job in jobs:
                assert job.status_of is not None
                try:
                    job.status = job.status_of()
                except Exception:
                    continue  # the node is busy: keep the last status
                if self.toolbar_visible or job.done.is_set():
                    continue
                if not job.backgrounded and self.interactive:
                    continue
                text, when = job.last_line
                now = time.monotonic()
                if changed_shape(job.status) != text or now - when >= PROGRESS_EVERY:
                    job.last_line = (changed_shape(job.status), now)
                    number = f"[{job.number}] " if job.number else ""
                    self.say(self.style.dim(f"… {number}{job.title}: {job.status} "
                                            f"({job.elapsed()} s)"))

    def toolbar(self) -> str:
        """The bottom toolbar: where we are, what awaits an answer, what is running."""
        with self.lock:
            live = [c for c in self.channels.values() if c["phase"] != "closed"]
            waiting = len(self.pending)
            jobs = [j for j in self.jobs if j.status_of is not None and not j.done.is_set()]
        # The node's address only while there is room for it.
        parts = [] if jobs else [self.node_label]
        parts.append(f"session {self.label}" if self.label else "no session")
        if self.label:
            parts.append(f"{len(live)} channel{'' if len(live) == 1 else 's'}")
        if waiting:
            parts.append(f"{waiting} awaiting your answer")
        for job in jobs:
            parts.append(f"{job.title}: {job.status} ({job.elapsed()} s)")
        return " " + " · ".join(parts)

    def prompt_text(self) -> str:
        """`alice> `, or `perund> ` without a session."""
        return f"{self.label or 'perund'}> "


class ShellCompleter(Completer):
    """Completion from the shell's parser and what the shell knows (peers, channels, pending
    answers, sessions, the node's currencies). Never asks the node: it must answer at once."""

    def __init__(self, shell: Shell) -> None:
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


def _history() -> Any:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    folder = state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / "cli_history"
        path.touch(mode=0o600, exist_ok=True)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()  # a read-only home: history for this run only


def _close_code(error: BaseException | None) -> int | None:
    """The close code the node gave, when the socket ended by a close frame."""
    received = getattr(error, "rcvd", None)
    code = getattr(received, "code", None)
    return code if isinstance(code, int) else None


def run_shell(args: argparse.Namespace, style: Style) -> int:
    """Run the shell until `exit` or ^D; the exit code."""
    label = str(args.node)
    try:
        node = node_of(args.node, os.environ)
        label = str(node)
        token = token_of(args.token_file, os.environ)
        session = session_of(args.session, os.environ)
        api = ApiClient(node.port, token, node.host, timeout=60.0)
        info = api.call("node_getConfig")
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        shell = Shell(api, style, label, interactive)
        shell.ctx.symbols = list(info.get("assets", {}))  # for `--currency` and its completion
        shell.connect_stream()
        if session is None and is_session_credential(token):
            session = shell.ctx.session_id()  # the credential's own session
        if session is not None:
            shell.use(session, None)
    except (ApiError, NodeUnreachable, AuthFailed, CliError) as exc:
        failure = failure_of(exc, label)
        print(f"{style.bad('error:')} {failure.line}", file=sys.stderr)
        return failure.exit_code
    threading.Thread(target=shell.poll_progress, name="perund-cli-progress", daemon=True).start()
    banner = (f"perund-cli: node {label} (perund {info.get('version')}, chain "
              f"{info.get('chainId')}); `help` lists the commands"
              + (", Tab completes, ^D leaves" if interactive else ""))
    try:
        if interactive:
            _prompt_loop(shell, banner)
        else:
            shell.say(banner)
            for line in sys.stdin:
                job = shell.execute(line)
                if job is False:
                    break
                if isinstance(job, Job):
                    shell.wait_foreground(job)
    finally:
        shell.closing = True
        if shell.stream is not None:
            shell.stream.close()
    return EXIT_OK


def _prompt_loop(shell: Shell, banner: str) -> None:
    import asyncio

    asyncio.run(_prompt_main(shell, banner))


async def _prompt_main(shell: Shell, banner: str) -> None:
    # One event loop for the whole shell (prompt_async, not prompt): what other threads print
    # through patch_stdout is scheduled on the running loop, and a loop per prompt would drop
    # what arrives while one prompt ends and the next begins.
    import asyncio

    from prompt_toolkit import PromptSession
    from prompt_toolkit.output.color_depth import ColorDepth
    from prompt_toolkit.patch_stdout import patch_stdout
    from prompt_toolkit.utils import is_dumb_terminal

    # prompt_toolkit draws the toolbar only where it can ask the cursor position: not on a
    # dumb terminal, nor with PROMPT_TOOLKIT_NO_CPR. There, progress goes out as lines.
    shell.toolbar_visible = not is_dumb_terminal() and os.environ.get("PROMPT_TOOLKIT_NO_CPR") \
        != "1"
    session: PromptSession[str] = PromptSession(
        history=_history(), completer=ShellCompleter(shell), complete_while_typing=False,
        bottom_toolbar=shell.toolbar if shell.toolbar_visible else None,
        refresh_interval=1.0,
        color_depth=None if shell.style.enabled else ColorDepth.MONOCHROME)
    print(banner, flush=True)
    with patch_stdout(raw=True):
        while True:
            try:
                line = await session.prompt_async(shell.prompt_text)
            except KeyboardInterrupt:
                continue  # ^C clears the line, as in a shell
            except EOFError:
                break
            job = shell.execute(line)
            if job is False:
                break
            if isinstance(job, Job):
                await asyncio.to_thread(shell.wait_foreground, job)
    with shell.lock:
        running = [j for j in shell.jobs if not j.done.is_set()]
    note = (f"; {len(running)} command{'s go' if len(running) > 1 else ' goes'} on at the node"
            if running else "")
    print(f"bye: the session stays open on the node{note}")
