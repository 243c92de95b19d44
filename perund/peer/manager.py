"""PeerManager: one session's authenticated peer connections.

The manager owns a listener and at most one *current* connection per peer address. Sending to a
peer without one dials on demand (the resolver maps an address to an endpoint string, e.g.
`tcp:host=127.0.0.1:port=5000`); a dial retries with capped exponential backoff until the dial
deadline and then fails with `PeerUnreachable`. `request` correlates a response with its request by
the messages' correlation key, fails with `PeerRequestTimedOut` after its timeout and with
`PeerDisconnected` as soon as the connection it was written to is lost. Its owner (a
`PeerManagerOwner`: the channel client, or a test) receives everything else through
`message_received`, and learns of connections through `peer_connected` (after authentication, on
every (re)connect: the client syncs there) and `peer_disconnected`.

Simultaneous dials are settled by one rule both sides apply, which also says when the
connection in use is probed (perund/peer/table.py); an optional keepalive pings every current
connection periodically.

The manager is built in layers: `records.py` (what is kept of a peer), `table.py` (the peers,
their connections, the one in use), `dialling.py` (dials and reconnects), and here the public
API, the connections' callbacks, admission, requests and their responses, probes, stop.

Threading: everything runs on the reactor thread.
"""

from __future__ import annotations

import errno
import os
from functools import partial
from typing import Any, Final, cast

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from perund.channel.types import Address
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvalidConfig,
    PeerDisconnected,
    PeerRequestTimedOut,
    PerundError,
    PortInUse,
)
from perund.peer.dialling import Dialling, PeerFactory
from perund.peer.records import PeerRecord, PendingRequest, hex_of, log
from perund.peer.table import NODE_STOPPED
from perund.wire.limits import HELLO_TIMEOUT, STRANGER_BACKLOG, STRANGER_FRAME_SIZE
from perund.wire.messages import CorrelationKey, Message, Ping, request_key, response_key
from perund.wire.protocol import PeerProtocol, Role, call_later
from perund.words import seconds_text

STOP_GRACE: Final = 2.0
"""Seconds `stop` lets connections flush before it aborts them."""

SHIELDED_SHARE: Final = 0.5
"""The share of the Hello deadline during which a connection in its handshake that is its
host's only one is not closed for a newcomer (`_admit`): an honest handshake takes a round
trip or two, so it completes within it, and newcomers in a stream cannot close it first."""


class PeerManager(Dialling):
    """One session's peer connections: listen, dial on demand, send, request, reconnect."""

    # -- public API -----------------------------------------------------------------------

    async def _listen(self) -> int | None:
        if self._listen_endpoint is None:
            raise FailedPrecondition("this PeerManager has no listen endpoint")
        endpoint = self._listen_endpoint.server_endpoint(self._reactor)
        try:
            self._port = await endpoint.listen(PeerFactory(self, Role.LISTENER, None))
        except CannotListenError as exc:
            busy = getattr(exc.socketError, "errno", None) == errno.EADDRINUSE
            raise (PortInUse if busy else InvalidConfig)(
                f"comm.listen: cannot listen for peers on {self._listen_endpoint}: "
                f"{exc.socketError}", name="comm.listen",
                value=str(self._listen_endpoint)) from exc
        log.info(
            "listening for peers on {endpoint} as {address}",
            endpoint=self._listen_endpoint,
            address=hex_of(self.address),
        )
        return self.port

    def listen(self) -> Deferred[int | None]:
        """Start the listener; fires with the bound TCP port."""
        return Deferred.fromCoroutine(self._listen())

    @property
    def port(self) -> int | None:
        """The bound TCP port of the listener, once listening."""
        if self._port is None:
            return None
        port = getattr(self._port.getHost(), "port", None)
        return port if isinstance(port, int) else None

    def send(self, peer: Address, msg: Message) -> Deferred[None]:
        """Write `msg` to `peer`, dialling first if needed; fires once written.

        Fails with `PeerUnreachable` when no connection could be made before the dial deadline.
        """
        try:
            if self._write_now(peer, msg):
                return succeed(None)
        except PerundError as exc:
            return fail(exc)
        return self._connection(peer).addCallback(lambda conn: conn.send(msg))

    respond = send
    """Answer a request: a plain send (the response carries the request's correlation key)."""

    def post(self, peer: Address, msg: Message) -> None:
        """`send` a message whose loss changes nothing (the sync on reconnection repairs what
        the peer missed), without a Deferred: a failure is logged (`undelivered`). A payee
        answers every payment this way."""
        try:
            if self._write_now(peer, msg):
                return
        except PerundError as exc:
            log.info("a message to a peer was not delivered: {why}", why=exc.message)
            return
        self.send(peer, msg).addErrback(undelivered)

    def _write_now(self, peer: Address, msg: Message) -> bool:
        """Write `msg` on the connection in use to `peer`, if there is one (whether there
        was); PerundError if that connection refuses it."""
        rec = self._peers.get(peer)
        conn = rec.current if rec is not None else None
        if conn is None:
            return False
        conn.send(msg)
        return True

    def request(self, peer: Address, msg: Message, timeout: float) -> Deferred[Message]:
        """Send a request (Propose, Update, Ping) and fire with the peer's response.

        The timeout counts from when the request is written (the dial before it is bounded by
        the dial deadline). Fails with `PeerRequestTimedOut`, `PeerUnreachable`, or
        `PeerDisconnected` when the connection it was written to is lost first.
        """
        key = request_key(msg)
        if key is None:
            return fail(InvalidArgument(f"{type(msg).__name__} is not a request", name="msg"))
        rec = self._peers.get(peer)
        if rec is not None and rec.current is not None:
            return self._issue(rec, rec.current, msg, key, timeout)
        d = self._connection(peer)
        return d.addCallback(lambda conn: self._issue(self._peer(peer), conn, msg, key, timeout))

    def ping(self, peer: Address, timeout: float) -> Deferred[None]:
        """Round-trip a Ping to `peer` (dialling if needed)."""
        d = self.request(peer, Ping(os.urandom(8)), timeout)
        return d.addCallback(lambda _: None)

    def keep_connected(self, peer: Address, keep: bool) -> None:
        """While `keep` is true, (re)connect to `peer` with backoff whenever it is not connected."""
        rec = self._peer(peer)
        rec.keep = keep
        if keep and rec.current is None:
            self._ensure_connector(rec)

    def disconnect(self, peer: Address) -> Deferred[None]:
        """Close every connection to `peer` (gracefully); fires when they are closed."""
        rec = self._peers.get(peer)
        if rec is None:
            return succeed(None)
        conns = list(rec.conns)
        closed = [c.when_closed() for c in conns]
        for conn in conns:
            self._retire(rec, conn, "we disconnected", abort=False)
        return gatherResults(closed).addCallback(lambda _: None)

    def stop(self, why: str = NODE_STOPPED) -> Deferred[None]:
        """Close the listener and every connection, fail pending requests and dials; `why`
        is what their users read (`SESSION_CLOSED` when only the session ends)."""
        return Deferred.fromCoroutine(self._stop(why))

    # -- PeerProtocolOwner ----------------------------------------------------------------

    def peer_authenticated(self, conn: PeerProtocol) -> None:
        """A connection completed its handshake: register it and pick the one to use."""
        peer = conn.peer_address
        assert peer is not None
        if self.admission.cut_off_until(peer) is not None:
            conn.abort()  # it sent too many refused messages: not now
            return
        if conn.role is Role.LISTENER and self._stranger(peer):
            if peer not in self._peers and not self._admit_stranger(conn):
                conn.abort()
                return
            conn.restrict(STRANGER_FRAME_SIZE, STRANGER_BACKLOG)
        rec = self._peer(peer)
        lower = min(self.address, peer)
        preferred = conn.dialled_by == lower
        for old in list(rec.conns):
            if (old.dialled_by == lower) == preferred:
                # The same side dialled again: it considers the old connection dead. (A peer
                # can do this in a loop: a few lines per interval.)
                if self._replaced_lines.take():
                    log.info("peer {peer}: a newer connection replaces an older one",
                             peer=hex_of(peer))
                self._drop(rec, old, "replaced by a newer connection")
                old.abort()
        rec.conns.append(conn)
        self._reselect(rec)
        current = rec.current
        if (
            not preferred
            and self.address == lower
            and current is not None
            and current is not conn
            and not rec.probing
        ):
            # The peer dialled us although we hold a connection it should prefer: it may have
            # restarted behind that connection's back. Make sure the one in use is alive.
            self._probe(rec, current)
        attempt = self._attempts.pop(conn, None)
        if attempt is not None:
            attempt.callback(None)
        if self.keepalive_interval is not None and self._keepalive is None and not self._stopping:
            self._keepalive = LoopingCall(self._keepalive_tick)
            self._keepalive.clock = self._reactor
            self._keepalive.start(self.keepalive_interval, now=False).addErrback(
                lambda f: log.failure("keepalive failed", f)
            )

    def peer_message(self, conn: PeerProtocol, msg: Message) -> None:
        """An authenticated message: resolve a pending request, or hand it to the owner."""
        peer = conn.peer_address
        assert peer is not None
        rec = self._peers.get(peer)
        key = response_key(msg)
        if key is not None and rec is not None:
            entry = rec.pending.pop(key, None)
            if entry is not None:
                entry.settle()
                entry.deferred.callback(msg)
                return
        if rec is not None and rec.current is None:
            # Our own dial is still under way (`_choose`), so the owner has not heard of this
            # link yet: it must, before anything that came on it. The client syncs when it
            # hears of a link, and a Sync handled before that counts as one from the link it
            # lost: an update of ours abandoned there would then wait for a Sync forever.
            # The connection reads nothing more until then: what the peer sends meanwhile
            # waits in the socket buffers, so a peer that stalls our dial cannot fill memory.
            rec.held.append((conn, msg))
            conn.hold_back()
            return
        self._deliver(peer, msg)

    def peer_connection_lost(self, conn: PeerProtocol, reason: Failure) -> None:
        """A connection closed: fail what waited on it, pick another, reconnect if asked to."""
        self._protocols.discard(conn)
        self._hosts.pop(conn, None)
        self._opened.pop(conn, None)
        attempt = self._attempts.pop(conn, None)
        if attempt is not None:
            attempt.errback(ConnectionError("the connection closed during the handshake"))
        peer = conn.peer_address
        if peer is None:
            return
        rec = self._peers.get(peer)
        if rec is None:
            return
        if conn in rec.conns:  # else retired or replaced: accounted for then
            log.emit(LogLevel.info if not self._stranger(peer) and self.link_lines.take()
                     else LogLevel.debug,
                     "connection to peer {peer} lost: {why}", peer=hex_of(peer),
                     why=reason.getErrorMessage())
            # When we are the ones stopping, say why: the user of a request cut short must not
            # read it as the peer's doing (found by an audit), nor a session closed by another
            # client as the node stopping.
            self._drop(rec, conn,
                       self._stop_reason if self._stopping else "the connection was lost")
            self._reselect(rec)
            if rec.current is None and rec.keep and not self._stopping:
                self._ensure_connector(rec)
        # A stranger's connection retired by us (cut off for refused messages, say) ends here
        # too: its record must not outlive it (an audit: 41,000 throw-away keys, each cut off,
        # left as many records, and every later stranger's admission walked them all).
        if not rec.conns and not rec.keep and not rec.pending and not rec.waiters \
                and rec.connector is None and self._stranger(peer):
            # Someone we do not know, gone: keep nothing of it (fresh keys cost nothing).
            del self._peers[peer]

    # -- internals ------------------------------------------------------------------------

    def _build_protocol(self, role: Role, expected: Address | None,
                        host: str | None = None) -> PeerProtocol | None:
        if self._stopping:
            return None
        if role is Role.LISTENER and not self._admit(host):
            return None  # Twisted closes the connection at once
        conn = PeerProtocol(
            self,
            self._signer,
            self._reactor,
            role,
            expected,
            handshake_timeout=self.handshake_timeout,
            max_frame_size=self.max_frame_size,
            backlog_pool=self.backlog_pool,
        )
        self._protocols.add(conn)
        self._hosts[conn] = host
        self._opened[conn] = self._now()
        return conn

    def _admit_stranger(self, conn: PeerProtocol) -> bool:
        """Whether one more authenticated connection from an unknown address may stay. Anyone
        can make keys and authenticate; what a stranger sends is refused anyway, so only a
        few such connections are kept."""
        strangers = sum(1 for rec in self._peers.values()
                        if rec.conns and not rec.keep and self._stranger(rec.address))
        return self.admission.admit_stranger(conn.peer_address or Address(b""), strangers)

    def _admit(self, host: str | None) -> bool:
        """Whether an incoming connection from `host` may start a handshake: connections are
        capped per host and unauthenticated ones in all, so that a flood of them cannot take
        the process's file descriptors (the store, the chain, real peers need them).

        At the cap in all, a connection in its handshake is closed to let the newcomer in
        (`_handshake_victim`), unless the newcomer's own host is at its cap: connections from
        a few hosts or from many cannot lock real peers out (audits: 16 hosts' 256 silent
        connections, renewed at each deadline, did; so did 256 hosts' one each)."""
        limits = self.admission.limits
        live = [c for c in self._hosts if not c.closed]  # oldest first
        handshaking = [c for c in live if c.peer_address is None and c.role is Role.LISTENER]
        from_host = sum(1 for c in live if self._hosts.get(c) == host)
        handshaking_from_host = sum(1 for c in handshaking if self._hosts.get(c) == host)
        if len(handshaking) >= limits.handshakes:
            victim, why = self._handshake_victim(handshaking)
            ours = victim is not None and self._hosts.get(victim) == host
            # A newcomer its own host's cap refuses anyway closes nobody.
            if victim is not None and handshaking_from_host - ours < limits.handshakes_per_host \
                    and from_host - ours < limits.connections_per_host:
                self.admission.evicted(self._hosts.get(victim), why)
                victim.abort()
                handshaking.remove(victim)
                from_host -= ours
                handshaking_from_host -= ours
        return self.admission.admit_incoming(host, len(handshaking), handshaking_from_host,
                                             from_host)

    def peer_violated(self, peer: Address) -> None:
        """An authenticated connection of `peer` broke the rules and was dropped: counted as
        a refused message (`refused`), so a key that does it in a loop is cut off."""
        self.refused(peer)

    def _handshake_victim(self, handshaking: list[PeerProtocol]) -> tuple[
            PeerProtocol | None, str]:
        """Which of `handshaking` (oldest first) to close for a newcomer, and why: the oldest
        of the host holding the most if it holds two or more (a host's connections give way
        to each other and to others'), else the oldest of all if it is past its shield
        (`SHIELDED_SHARE`), else none.

        The oldest, not one at random: a newcomer must never close a handshake younger than
        the shield, else a stream of newcomers (from as many hosts as slots: a 6to4 prefix is
        65,536 /64s) could close every honest one before it completes; and once past it, the
        oldest has had the longest to complete. So an attacker must win the race for each slot
        as its holder's shield ends; an honest peer that wins one keeps it until it is in."""
        by_host: dict[str | None, list[PeerProtocol]] = {}
        for conn in handshaking:
            by_host.setdefault(self._hosts.get(conn), []).append(conn)
        busiest = max(by_host.values(), key=len, default=[])
        if len(busiest) >= 2:
            return busiest[0], "which held the most"
        shield = min(HELLO_TIMEOUT, self.handshake_timeout) * SHIELDED_SHARE
        oldest = handshaking[0] if handshaking else None
        if oldest is not None and self._now() - self._opened.get(oldest, 0.0) >= shield:
            return oldest, f"the oldest, older than {shield:g} s"
        return None, ""

    def _now(self) -> float:
        """The reactor's time (IReactorTime's methods do not type-check as such)."""
        seconds: float = cast(Any, self._reactor).seconds()
        return seconds

    def refused(self, peer: Address) -> bool:
        """The owner refused a message of `peer`: count it (see perund/peer/admission.py);
        whether to log it. A peer over its limit is cut off: its connections close now."""
        log_it, cut_off = self.admission.refused(peer)
        if cut_off:
            rec = self._peers.get(peer)
            if rec is not None:
                for conn in list(rec.conns):
                    self._retire(rec, conn, "it sent too many refused messages", abort=True)
        return log_it

    def _issue(
        self,
        rec: PeerRecord,
        conn: PeerProtocol,
        msg: Message,
        key: CorrelationKey,
        timeout: float,
    ) -> Deferred[Message]:
        """Write a request to `conn` and return the Deferred of its response."""
        if key in rec.pending:
            return fail(FailedPrecondition("a request with the same correlation key is pending"))

        # No closure over the entry: what refers to it is gone once it is settled, so it is
        # freed at once rather than by the garbage collector (a payer issues thousands a second).
        entry = PendingRequest(conn, partial(self._request_cancelled, rec, key))
        rec.pending[key] = entry
        try:
            conn.send(msg)
        except PerundError as exc:
            del rec.pending[key]
            return fail(exc)
        entry.deadline = self._deadlines.add(timeout, partial(
            self._request_timed_out, rec, key, entry, type(msg).__name__, timeout))
        return entry.deferred

    def _request_cancelled(self, rec: PeerRecord, key: CorrelationKey,
                           cancelled: Deferred[Message]) -> None:
        entry = rec.pending.get(key)
        if entry is not None and entry.deferred is cancelled:
            del rec.pending[key]
            entry.settle()

    def _request_timed_out(self, rec: PeerRecord, key: CorrelationKey, entry: PendingRequest,
                           kind: str, timeout: float) -> None:
        if rec.pending.get(key) is entry:
            del rec.pending[key]
        entry.settle()
        if not entry.deferred.called:
            entry.deferred.errback(PeerRequestTimedOut(
                f"peer {self.name_of(rec.address)} did not answer a {kind} within "
                f"{seconds_text(timeout)}",
                peer=hex_of(rec.address),
                timeout=timeout,
            ))

    def _probe(self, rec: PeerRecord, conn: PeerProtocol) -> None:
        """Ping `conn`; abort it if no Pong comes back within the handshake timeout."""
        ping = Ping(os.urandom(8))
        key = request_key(ping)
        assert key is not None
        rec.probing = True
        timeout = self.handshake_timeout
        if self.keepalive_interval is not None:
            timeout = min(timeout, self.keepalive_interval)

        def done(result: Message | Failure) -> None:
            rec.probing = False
            error = result.value if isinstance(result, Failure) else None
            # A lost connection (PeerDisconnected) is already gone; only silence means dead.
            if isinstance(error, PeerRequestTimedOut) and not isinstance(error, PeerDisconnected):
                log.warn(
                    "peer {peer} did not answer a ping: dropping the connection",
                    peer=hex_of(rec.address),
                )
                self._retire(rec, conn, "no answer to a ping", abort=True)

        self._issue(rec, conn, ping, key, timeout).addBoth(done)

    def _keepalive_tick(self) -> None:
        for rec in list(self._peers.values()):
            if rec.current is not None and not rec.probing:
                self._probe(rec, rec.current)

    async def _stop(self, why: str) -> None:
        self._stopping, self._stop_reason = True, why
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        for rec in self._peers.values():
            if rec.connector is not None:
                rec.connector.cancel()
            waiters, rec.waiters = rec.waiters, []
            for waiter in waiters:
                waiter.errback(self._unreachable(rec, why))
        if self._port is not None:
            port, self._port = self._port, None
            await maybeDeferred(port.stopListening)
        conns = list(self._protocols)
        closed = [c.when_closed() for c in conns]
        for conn in conns:
            conn.close()

        def abort_all() -> None:
            for conn in conns:
                conn.abort()

        grace = call_later(self._reactor, STOP_GRACE, abort_all)
        await gatherResults(closed)
        if grace.active():
            grace.cancel()
        self._deadlines.stop()  # answered requests' deadlines may still hold its timed call


def undelivered(failure: Failure) -> None:
    """The errback of a `send` whose failure changes nothing: the message is lost with the
    link, and the sync on reconnection repairs what the peer missed."""
    # To a peer cut off for refused messages: the cut-off was logged (a line per throw-away
    # key here was a flood an audit found).
    cut_off = isinstance(failure.value, PerundError) and failure.value.data.get("cut_off")
    log.emit(LogLevel.debug if cut_off else LogLevel.info,
             "a message to a peer was not delivered: {why}", why=failure.getErrorMessage())
