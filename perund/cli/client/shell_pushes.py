"""The shell's WebSocket: subscribed to the current session's proposals and updates, its
pushes turned into what the shell knows and printed; reconnected when the node goes away, the
session found again after a node restart."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from perund.api.credentials import CLOSE_REVOKED
from perund.cli.apiclient import ApiClient, ApiError, AuthFailed, NodeUnreachable, PushStream
from perund.cli.client import render
from perund.cli.client.errors import failure_of
from perund.cli.client.render import Style, short_id
from perund.cli.client.shell_state import Pending, ShellState

RECONNECT_EVERY = 2.0
"""Seconds between attempts to open the socket again after the node closed it."""


class PushListener(ShellState):
    """The shell's state kept current by the node's pushes over one WebSocket."""

    def __init__(self, api: ApiClient, style: Style, node_label: str, interactive: bool) -> None:
        super().__init__(api, style, node_label, interactive)
        self.stream: PushStream | None = None
        self.subscriptions: set[str] = set()
        self.dropped: set[str] = set()

    def use(self, session: str, label: str | None) -> None:
        """Make `session` current: subscribe to its pushes, load its peers and channels."""
        peers = self.api.result("session_listPeers", {"sessionId": session})
        with self.lock:
            self.ctx.session = session
            self.revoked_with_session = None
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
            with self.lock:
                ended, self.revoked_with_session = self.revoked_with_session, None
            if ended is not None and ended[1]:
                return  # the session's own credential: the shell went back to its own
            if ended is not None:
                self.say(self.style.bad(
                    f"this shell's credential was session {ended[0]}'s and ended with it: no "
                    "more calls; start perund-cli again with the operator's token (or another "
                    "session's credential)"))
                return
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
        if push.get("type") == "sessionClosed":
            self._session_closed(str(push.get("sessionId")))
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
        if kind == "closed" and channel_id in self.told_closed:
            return  # our own `channel close` said so already
        if kind == "closed":
            # Said once, whatever the channel list shows (it may have learnt of the end
            # first: after a restart, its outcome is news all the same).
            with self.lock:
                self.told_closed.add(channel_id)
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

    def _session_closed(self, session: str) -> None:
        """The node closed the current session (`session_close`, from this shell or another
        client): its subscriptions ended with it. Say so once, leave it, and go back to the
        shell's own credential if it acted with the session's (that one ended too)."""
        with self.lock:
            if session != self.ctx.session:
                return  # an earlier session's, left already
            own = any(j.closes == session for j in self.jobs if not j.done.is_set())
            label, config = self.label, self.session_config
            self.ended_sessions.add(session)
            self.session_ended.set()
            for job in self.jobs:
                if job.session == session and job.closes != session:
                    job.status = "ending: the session was closed"
            # No unsubscribe: the subscriptions ended with the session, and this runs in the
            # socket's reader thread, which a call on the socket would wait for.
            self.dropped |= self.subscriptions
            self.subscriptions = set()
            self.ctx.session = None
            self.label = None
            self.pending.clear()
            self.channels.clear()
            self.peers = []
            back = self.api is not self.ctx.opener
            # The node ends the session's credentials next, this socket's too when it is one.
            self.revoked_with_session = (session, back)
        if not own:
            reopen = f"`session open {config}`" if config else "`session open CONFIG`"
            self.say(self.style.warn(
                f"session {session} ({label}) was closed by another client: its pushes and "
                f"calls end here. {reopen} opens it again (with the operator's token), "
                "`use SESSION` picks another open session, `exit` leaves"))
        if back:
            threading.Thread(target=self._back_to_own_credential, daemon=True,
                             name="perund-cli-credential").start()

    def _back_to_own_credential(self) -> None:
        """Calls and the socket with the credential the shell started with (the session's
        own credential, which `session open` switched to, ended with the session)."""
        api, old = self.ctx.opener, self.stream
        with self.lock:
            self.api = api
            self.ctx.api = api
            self.subscriptions.clear()
        try:
            self.connect_stream()
        except (NodeUnreachable, AuthFailed):
            self.stream = None
            self.say(self.style.warn("the node's WebSocket could not be opened again with "
                                     "this shell's credential: no pushes"))
        if old is not None:
            old.close()

    def _left_session(self) -> None:
        self._drop_subscriptions(self.stream)
        with self.lock:
            self.ctx.session = None
            self.label = None
            self.pending.clear()
            self.channels.clear()
            self.peers = []


def _close_code(error: BaseException | None) -> int | None:
    """The close code the node gave, when the socket ended by a close frame."""
    received = getattr(error, "rcvd", None)
    code = getattr(received, "code", None)
    return code if isinstance(code, int) else None
