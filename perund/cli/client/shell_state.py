"""What the shell of perund-cli knows: the current session, its peers and channels, the
proposals and updates that await the user's answer, the commands running; and its output.

Every thread of the shell (the prompt, the socket's reader, the workers) reads and changes this
state under one lock."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perund.cli.apiclient import ApiClient, ApiError, AuthFailed, NodeUnreachable
from perund.cli.client.commands import HEX_ID, Context
from perund.cli.client.errors import CliError, NotFound, UsageError, failure_of
from perund.cli.client.parser import build_shell_parser
from perund.cli.client.render import Style


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
    session: str | None = None
    """The session current when it started: should another client close it, the job's end is
    told as the session's (not as the node's failure it looks like)."""
    closes: str | None = None
    """The session this job closes (`session close`): its `sessionClosed` push is no news."""
    last_line: tuple[str, float] = ("", 0.0)

    def elapsed(self) -> int:
        """Whole seconds since it started."""
        return int(time.monotonic() - self.started)


class ShellState:
    """The state of one interactive session of perund-cli, shared by its threads."""

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
        self.told_closed: set[str] = set()
        """Channels this shell said are closed (a `channel close` result, a `closed` push): a
        later `closed` push of them is no news. One the shell only listed as closed is."""
        self.ended_sessions: set[str] = set()
        """Sessions closed (by this or another client) while this shell used them."""
        self.session_ended = threading.Event()
        """Set when a session of `ended_sessions` is added."""
        self.revoked_with_session: tuple[str, bool] | None = None
        """The session just closed, and whether the shell's socket had its credential (the shell
        went back to its own): the node's revocation that follows is that close's doing."""
        self._background_numbers = 0
        self.closing = False
        self._print_lock = threading.Lock()
        self.first_failure: int | None = None
        """The exit code of the first command that failed: a shell fed by a pipe exits with
        it, so a script can tell that a line failed."""

    # -- output ----------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Print `text` (from any thread; above the prompt while one is shown)."""
        with self._print_lock:
            print(text, flush=True)

    def error(self, exc: BaseException, title: str = "") -> None:
        """Report a failed command in one line."""
        failure = failure_of(exc, self.node_label)
        if self.first_failure is None:
            self.first_failure = failure.exit_code
        head = f"{title}: " if title else ""
        self.say(f"{self.style.bad('error:')} {head}{failure.line}")

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
