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

Simultaneous dials. When both sides dial each other at once, two authenticated connections exist.
Both sides keep the one *dialled by the lower address* (the "preferred" one): a deterministic rule
each side applies on its own. The higher side closes its own dial gracefully (what it wrote is
flushed first and still read by the peer). The lower side never closes the other's dial (it could
still carry messages) and never starts using it while its own dial is in flight, so nothing it
writes is lost when the higher side closes it. A newer connection of the same kind replaces an
older one: a peer dials again only when it believes the old connection dead (a restart, a silent
network failure). When a non-preferred connection arrives while a preferred one is in use, the
lower side pings the preferred one and drops it if no Pong comes back in time; an optional
keepalive pings every current connection periodically.

Threading: everything runs on the reactor thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel.encoding import Signer
from perund.channel.types import Address
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvalidConfig,
    PeerDisconnected,
    PeerRequestTimedOut,
    PeerUnreachable,
    PerundError,
)
from perund.peer.admission import Admission, PeerLimits
from perund.wire.messages import CorrelationKey, Message, Ping, request_key, response_key
from perund.wire.protocol import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_FRAME_SIZE,
    PeerProtocol,
    Role,
    call_later,
)

log = Logger(namespace="perund.peer")

Resolver = Callable[[Address], str | None]
"""Maps a peer's address to a client endpoint string, or None if the peer is unknown."""

STOP_GRACE: Final = 2.0
"""Seconds `stop` lets connections flush before it aborts them."""


def _hex(address: bytes) -> str:
    return "0x" + address.hex()


class PeerManagerOwner(Protocol):
    """What a PeerManager reports to (the channel client, or a test), as a PeerProtocol reports
    to its PeerProtocolOwner. Each call comes on the reactor thread; what it raises is logged."""

    def peer_connected(self, peer: Address) -> None:
        """`peer` became reachable: after authentication, on every reconnect."""

    def message_received(self, peer: Address, msg: Message) -> None:
        """A message from `peer` that is not a response to one of our requests."""

    def peer_disconnected(self, peer: Address) -> None:
        """The connection in use for `peer` is lost."""


class _NoOwner:
    """The owner of a manager nobody attached to: ignores everything."""

    def peer_connected(self, peer: Address) -> None:
        pass

    def message_received(self, peer: Address, msg: Message) -> None:
        log.info("no handler: ignored a {kind} from {peer}", kind=type(msg).__name__,
                 peer=_hex(peer))

    def peer_disconnected(self, peer: Address) -> None:
        pass


_NO_OWNER: Final = _NoOwner()


class _Pending:
    """A request waiting for its response, and the connection it was written to."""

    __slots__ = ("conn", "deferred")

    def __init__(self, conn: PeerProtocol, forget: Callable[[], None]) -> None:
        self.conn = conn
        self.deferred: Deferred[Message] = Deferred(lambda _: forget())


@dataclass(eq=False)
class _Peer:
    """Everything the manager tracks about one peer address."""

    address: Address
    conns: list[PeerProtocol] = field(default_factory=list)
    """Authenticated, open connections, oldest first (normally one)."""
    current: PeerProtocol | None = None
    """The connection messages to this peer are written to."""
    waiters: list[Deferred[PeerProtocol]] = field(default_factory=list)
    """Sends waiting for a connection."""
    connector: Deferred[None] | None = None
    attempt_in_flight: bool = False
    keep: bool = False
    pending: dict[CorrelationKey, _Pending] = field(default_factory=dict)
    probing: bool = False


class _PeerFactory(Factory):
    """Builds PeerProtocols for the listener (role LISTENER) or for one dial (role DIALER)."""

    noisy = False  # one "Starting factory" line per dial is noise; the manager logs what matters

    def __init__(self, manager: PeerManager, role: Role, expected: Address | None) -> None:
        self._manager = manager
        self._role = role
        self._expected = expected

    def buildProtocol(self, addr: object) -> PeerProtocol | None:
        return self._manager._build_protocol(self._role, self._expected,
                                             getattr(addr, "host", None))


class PeerManager:
    """One session's peer connections: listen, dial on demand, send, request, reconnect."""

    def __init__(
        self,
        reactor: IReactorTime,
        signer: Signer,
        resolve: Resolver,
        listen_endpoint: str | None = None,
        *,
        dial_timeout: float = 10.0,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        keepalive_interval: float | None = 30.0,
        owner: PeerManagerOwner | None = None,
        limits: PeerLimits | None = None,
    ) -> None:
        """`reactor` must also provide IReactorTCP (or whatever the endpoint strings need)."""
        self._reactor = reactor
        self._signer = signer
        self.address: Address = signer.address
        self._resolve = resolve
        self._listen_endpoint = listen_endpoint
        self.dial_timeout = dial_timeout
        self.handshake_timeout = handshake_timeout
        self.max_frame_size = max_frame_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.keepalive_interval = keepalive_interval
        self._owner: PeerManagerOwner = owner or _NO_OWNER
        self._peers: dict[Address, _Peer] = {}
        self._attempts: dict[PeerProtocol, Deferred[None]] = {}
        self._protocols: set[PeerProtocol] = set()
        self._hosts: dict[PeerProtocol, str | None] = {}
        self.admission = Admission(reactor, limits or PeerLimits())
        self._port: Any = None
        self._keepalive: LoopingCall | None = None
        self._stopping = False

    # -- public API -----------------------------------------------------------------------

    async def _listen(self) -> int | None:
        if self._listen_endpoint is None:
            raise FailedPrecondition("this PeerManager has no listen endpoint")
        endpoint = _server_endpoint(self._reactor, self._listen_endpoint)
        try:
            self._port = await endpoint.listen(_PeerFactory(self, Role.LISTENER, None))
        except CannotListenError as exc:
            raise InvalidConfig(f"cannot listen for peers on {self._listen_endpoint}: "
                                f"{exc.socketError}", name="comm.listen",
                                value=self._listen_endpoint) from exc
        log.info(
            "listening for peers on {endpoint} as {address}",
            endpoint=self._listen_endpoint,
            address=_hex(self.address),
        )
        return self.port

    def listen(self) -> Deferred[int | None]:
        """Start the listener; fires with the bound TCP port (None for non-TCP endpoints)."""
        return Deferred.fromCoroutine(self._listen())

    @property
    def port(self) -> int | None:
        """The bound TCP port of the listener, once listening."""
        if self._port is None:
            return None
        port = getattr(self._port.getHost(), "port", None)
        return port if isinstance(port, int) else None

    def attach(self, owner: PeerManagerOwner) -> None:
        """Report to `owner` from now on. A manager serves one owner: attaching a second one
        while the first is attached is a FailedPrecondition."""
        if self._owner is not _NO_OWNER and self._owner is not owner:
            raise FailedPrecondition("these peer links already serve another owner")
        self._owner = owner

    def detach(self, owner: PeerManagerOwner) -> None:
        """`owner` stops hearing from the manager (what arrives afterwards is ignored)."""
        if self._owner is owner:
            self._owner = _NO_OWNER

    def is_connected(self, peer: Address) -> bool:
        """Whether an authenticated connection to `peer` is in use right now."""
        rec = self._peers.get(peer)
        return rec is not None and rec.current is not None

    def connected_peers(self) -> list[Address]:
        """Addresses with an authenticated connection in use."""
        return [a for a, rec in self._peers.items() if rec.current is not None]

    def current_connection(self, peer: Address) -> PeerProtocol | None:
        """The authenticated connection messages to `peer` are written to, if any."""
        rec = self._peers.get(peer)
        return rec.current if rec is not None else None

    def connection_count(self, peer: Address) -> int:
        """How many authenticated connections to `peer` are open (normally 0 or 1)."""
        rec = self._peers.get(peer)
        return len(rec.conns) if rec is not None else 0

    def send(self, peer: Address, msg: Message) -> Deferred[None]:
        """Write `msg` to `peer`, dialling first if needed; fires once written.

        Fails with `PeerUnreachable` when no connection could be made before the dial deadline.
        """
        rec = self._peers.get(peer)
        if rec is not None:
            conn = rec.current
            if conn is not None:
                try:
                    conn.send(msg)
                except PerundError as exc:
                    return fail(exc)
                return succeed(None)
        return self._connection(peer).addCallback(lambda conn: conn.send(msg))

    respond = send
    """Answer a request: a plain send (the response carries the request's correlation key)."""

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

    def stop(self) -> Deferred[None]:
        """Close the listener and every connection, fail pending requests and dials."""
        return Deferred.fromCoroutine(self._stop())

    # -- PeerProtocolOwner ----------------------------------------------------------------

    def peer_authenticated(self, conn: PeerProtocol) -> None:
        """A connection completed its handshake: register it and pick the one to use."""
        peer = conn.peer_address
        assert peer is not None
        if self.admission.cut_off_until(peer) is not None:
            conn.abort()  # it sent too many refused messages: not now
            return
        if conn.role is Role.LISTENER and peer not in self._peers and self._stranger(peer) \
                and not self._admit_stranger(conn):
            conn.abort()
            return
        rec = self._peer(peer)
        lower = min(self.address, peer)
        preferred = conn.dialled_by == lower
        for old in list(rec.conns):
            if (old.dialled_by == lower) == preferred:
                # The same side dialled again: it considers the old connection dead.
                log.info("peer {peer}: a newer connection replaces an older one", peer=_hex(peer))
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
        key = response_key(msg)
        if key is not None:
            rec = self._peers.get(peer)
            if rec is not None:
                entry = rec.pending.pop(key, None)
                if entry is not None:
                    entry.deferred.callback(msg)
                    return
        try:
            self._owner.message_received(peer, msg)
        except Exception:
            log.failure(
                "message_received failed for a {kind} from {peer}",
                kind=type(msg).__name__,
                peer=_hex(peer),
            )

    def peer_connection_lost(self, conn: PeerProtocol, reason: Failure) -> None:
        """A connection closed: fail what waited on it, pick another, reconnect if asked to."""
        self._protocols.discard(conn)
        self._hosts.pop(conn, None)
        attempt = self._attempts.pop(conn, None)
        if attempt is not None:
            attempt.errback(ConnectionError("the connection closed during the handshake"))
        peer = conn.peer_address
        if peer is None:
            return
        rec = self._peers.get(peer)
        if rec is None or conn not in rec.conns:
            return  # retired or replaced: already accounted for
        log.info(
            "connection to peer {peer} lost: {why}", peer=_hex(peer), why=reason.getErrorMessage()
        )
        self._drop(rec, conn, "the connection was lost")
        self._reselect(rec)
        if rec.current is None and rec.keep and not self._stopping:
            self._ensure_connector(rec)
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
        )
        self._protocols.add(conn)
        self._hosts[conn] = host
        return conn

    def _stranger(self, peer: Address) -> bool:
        """Whether `peer` is unknown to the session (the resolver has no endpoint for it)."""
        return self._resolve(peer) is None

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
        the process's file descriptors (the store, the chain, real peers need them)."""
        handshaking = [c for c in self._protocols if c.peer_address is None
                       and c.role is Role.LISTENER]
        from_host = [c for c in self._protocols if self._hosts.get(c) == host]
        return self.admission.admit_incoming(
            host, len(handshaking), sum(1 for c in handshaking if self._hosts.get(c) == host),
            len(from_host))

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

    def _peer(self, peer: Address) -> _Peer:
        rec = self._peers.get(peer)
        if rec is None:
            rec = self._peers[peer] = _Peer(peer)
        return rec

    def _choose(self, rec: _Peer) -> PeerProtocol | None:
        """The connection to use: the newest preferred one, else the one in use, else any."""
        if not rec.conns:
            return None
        lower = min(self.address, rec.address)
        for conn in reversed(rec.conns):
            if conn.dialled_by == lower:
                return conn
        if rec.current is not None:
            return rec.current
        if self.address == lower and rec.attempt_in_flight:
            # Our own (preferred) dial is under way: the higher side will close its dial once
            # ours arrives, so nothing may be written to its dial meanwhile.
            return None
        return rec.conns[-1]

    def _reselect(self, rec: _Peer) -> None:
        """Apply `_choose`; retire superseded dials; tell the owner and waiting sends."""
        new = self._choose(rec)
        old = rec.current
        rec.current = new
        if new is None:
            return
        if old is not None and new is not old:
            for key, entry in rec.pending.items():
                if entry.conn is old:
                    self._repoint(rec, key, entry, new)
        lower = min(self.address, rec.address)
        if self.address != lower and new.dialled_by == lower:
            for conn in [c for c in rec.conns if c is not new]:
                # Our own dial lost the tie-break: close it after flushing what it carries. The
                # responses to what we sent on it arrive on the connection in use.
                rec.conns.remove(conn)
                for key, entry in rec.pending.items():
                    if entry.conn is conn:
                        self._repoint(rec, key, entry, new)
                conn.close()
        if old is None:
            log.info("peer {peer} connected", peer=_hex(rec.address))
            try:
                self._owner.peer_connected(rec.address)
            except Exception:
                log.failure("peer_connected failed for {peer}", peer=_hex(rec.address))
            waiters, rec.waiters = rec.waiters, []
            for waiter in waiters:
                if rec.current is not None:
                    waiter.callback(rec.current)
                else:  # peer_connected closed it again
                    rec.waiters.append(waiter)

    def _repoint(self, rec: _Peer, key: CorrelationKey, entry: _Pending,
                 new: PeerProtocol) -> None:
        """Expect `entry`'s response on `new`. A Ping is asked again there: the peer answers
        it on the connection it came by, which we may be about to stop reading."""
        entry.conn = new
        if key[0] == "ping":
            try:
                new.send(Ping(key[1]))
            except PerundError:
                log.info("re-sending a ping to {peer} failed", peer=_hex(rec.address))

    def _drop(self, rec: _Peer, conn: PeerProtocol, why: str) -> None:
        """Forget a connection that is gone; fail the requests written to it."""
        rec.conns.remove(conn)
        lost = [(k, e) for k, e in rec.pending.items() if e.conn is conn]
        for key, _ in lost:
            del rec.pending[key]
        for _, entry in lost:
            entry.deferred.errback(
                PeerDisconnected(
                    f"peer {_hex(rec.address)}: {why} before the response came",
                    peer=_hex(rec.address),
                    timeout=None,
                )
            )
        if rec.current is conn:
            rec.current = None
            try:
                self._owner.peer_disconnected(rec.address)
            except Exception:
                log.failure("peer_disconnected failed for {peer}", peer=_hex(rec.address))

    def _retire(self, rec: _Peer, conn: PeerProtocol, why: str, *, abort: bool) -> None:
        """Close a connection on our own initiative and account for it at once (not only when
        `connectionLost` arrives), so that nothing is written to it in between."""
        if conn in rec.conns:
            self._drop(rec, conn, why)
        if abort:
            conn.abort()
        else:
            conn.close()
        self._reselect(rec)
        if rec.current is None and rec.keep and not self._stopping:
            self._ensure_connector(rec)

    def _unreachable(self, rec: _Peer, why: str) -> PeerUnreachable:
        return PeerUnreachable(
            f"peer {_hex(rec.address)} unreachable: {why}",
            peer=_hex(rec.address),
            timeout=self.dial_timeout,
        )

    def _connection(self, peer: Address) -> Deferred[PeerProtocol]:
        """The connection to use for `peer`, once there is one (dialling if needed)."""
        if peer == self.address:
            return fail(InvalidArgument("cannot connect to ourselves", name="peer"))
        until = self.admission.cut_off_until(peer)
        if until is not None:
            return fail(PeerUnreachable(
                f"peer {_hex(peer)} is cut off until {until:.0f} (it sent too many refused "
                "messages)", peer=_hex(peer), timeout=None))
        rec = self._peer(peer)
        if rec.current is not None:
            return succeed(rec.current)
        if self._stopping:
            return fail(self._unreachable(rec, "the peer manager is stopping"))

        def forget(d: Deferred[PeerProtocol]) -> None:
            if d in rec.waiters:
                rec.waiters.remove(d)

        waiter: Deferred[PeerProtocol] = Deferred(forget)
        rec.waiters.append(waiter)

        def timed_out(_: object, timeout: float) -> PeerProtocol:
            raise self._unreachable(rec, f"no authenticated connection within {timeout:g} s")

        waiter.addTimeout(self.dial_timeout, self._reactor, onTimeoutCancel=timed_out)
        self._ensure_connector(rec)
        return waiter

    def _issue(
        self,
        rec: _Peer,
        conn: PeerProtocol,
        msg: Message,
        key: CorrelationKey,
        timeout: float,
    ) -> Deferred[Message]:
        """Write a request to `conn` and return the Deferred of its response."""
        if key in rec.pending:
            return fail(FailedPrecondition("a request with the same correlation key is pending"))

        def forget() -> None:
            if rec.pending.get(key) is entry:
                del rec.pending[key]

        entry = _Pending(conn, forget)
        rec.pending[key] = entry
        try:
            conn.send(msg)
        except PerundError as exc:
            del rec.pending[key]
            return fail(exc)
        peer = _hex(rec.address)

        def timed_out(_: object, timeout: float) -> Message:
            raise PeerRequestTimedOut(
                f"peer {peer} did not answer a {type(msg).__name__} within {timeout:g} s",
                peer=peer,
                timeout=timeout,
            )

        return entry.deferred.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)

    def _ensure_connector(self, rec: _Peer) -> None:
        if rec.connector is not None or self._stopping:
            return
        d = Deferred.fromCoroutine(self._connect_loop(rec))
        if not d.called:
            rec.connector = d
        d.addErrback(self._connector_failed, rec)

    def _connector_failed(self, failure: Failure, rec: _Peer) -> None:
        if not isinstance(failure.value, CancelledError):
            log.failure("dialler for {peer} failed", failure, peer=_hex(rec.address))

    async def _connect_loop(self, rec: _Peer) -> None:
        """Dial until connected, with capped exponential backoff, while anyone wants it."""
        delay = self.backoff_initial
        try:
            while not self._stopping and rec.current is None and (rec.keep or rec.waiters):
                try:
                    endpoint = self._resolve(rec.address)
                except Exception:
                    log.failure("resolving peer {peer} failed", peer=_hex(rec.address))
                    endpoint = None
                if endpoint is None:
                    waiters, rec.waiters = rec.waiters, []
                    for waiter in waiters:
                        waiter.errback(self._unreachable(rec, "no endpoint is known for it"))
                    if not rec.keep:
                        return
                else:
                    rec.attempt_in_flight = True
                    try:
                        await self._attempt(rec.address, endpoint)
                    except CancelledError:
                        raise
                    except Exception as exc:
                        log.info(
                            "dialling peer {peer} at {endpoint} failed: {error}",
                            peer=_hex(rec.address),
                            endpoint=endpoint,
                            error=str(exc) or type(exc).__name__,
                        )
                    finally:
                        rec.attempt_in_flight = False
                    # A connection from the peer held back during our dial may be used now.
                    self._reselect(rec)
                    if rec.current is not None:
                        return
                await deferLater(self._reactor, delay)
                delay = min(delay * 2, self.backoff_max)
        finally:
            rec.connector = None

    async def _attempt(self, peer: Address, endpoint_description: str) -> None:
        """One dial: connect, then wait for the handshake to complete (or fail)."""
        endpoint = _client_endpoint(self._reactor, endpoint_description)
        connecting = cast(
            "Deferred[PeerProtocol]", endpoint.connect(_PeerFactory(self, Role.DIALER, peer))
        )
        conn = await connecting.addTimeout(self.handshake_timeout, self._reactor)
        if conn.peer_address is not None:
            return
        if conn.closed:
            raise ConnectionError("the connection closed during the handshake")

        def cancel(_: Deferred[None]) -> None:
            self._attempts.pop(conn, None)
            conn.abort()

        handshake: Deferred[None] = Deferred(cancel)
        self._attempts[conn] = handshake
        await handshake

    def _probe(self, rec: _Peer, conn: PeerProtocol) -> None:
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
                    peer=_hex(rec.address),
                )
                self._retire(rec, conn, "no answer to a ping", abort=True)

        self._issue(rec, conn, ping, key, timeout).addBoth(done)

    def _keepalive_tick(self) -> None:
        for rec in list(self._peers.values()):
            if rec.current is not None and not rec.probing:
                self._probe(rec, rec.current)

    async def _stop(self) -> None:
        self._stopping = True
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        for rec in self._peers.values():
            if rec.connector is not None:
                rec.connector.cancel()
            waiters, rec.waiters = rec.waiters, []
            for waiter in waiters:
                waiter.errback(self._unreachable(rec, "the peer manager is stopping"))
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


def _server_endpoint(reactor: IReactorTime, description: str) -> Any:
    from twisted.internet.endpoints import serverFromString

    return serverFromString(reactor, description)  # type: ignore[no-untyped-call]


def _client_endpoint(reactor: IReactorTime, description: str) -> Any:
    from twisted.internet.endpoints import clientFromString

    return clientFromString(reactor, description)  # type: ignore[no-untyped-call]
