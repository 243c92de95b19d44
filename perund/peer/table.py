"""The peer manager's table of peers and their connections, and which connection is in use.

Simultaneous dials. When both sides dial each other at once, two authenticated connections exist.
Both sides keep the one *dialled by the lower address* (the "preferred" one): a deterministic rule
each side applies on its own. The higher side closes its own dial gracefully (what it wrote is
flushed first and still read by the peer). The lower side never closes the other's dial (it could
still carry messages) and never starts using it while its own dial is in flight, so nothing it
writes is lost when the higher side closes it. A newer connection of the same kind replaces an
older one: a peer dials again only when it believes the old connection dead (a restart, a silent
network failure). When a non-preferred connection arrives while a preferred one is in use, the
lower side pings the preferred one and drops it if no Pong comes back in time (`PeerManager`).

The owner hears `peer_connected` when a connection is chosen while none was, `peer_disconnected`
when the one in use is lost, and `peer_relinked` when another replaces the one in use while it is
up: the higher side's own dial giving way to the lower side's. The higher side cannot tell two
crossed dials from a peer that restarted behind the old connection (a power loss sends no FIN)
and now waits for an answer on its new one; the owner's answer must suit both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from perund.channel.encoding import Signer
from perund.channel.types import Address, hex_address
from perund.errors import FailedPrecondition, PeerDisconnected, PeerUnreachable, PerundError
from perund.listen_address import ListenAddress, parse_listen_address
from perund.peer.admission import Admission, PeerLimits
from perund.peer.deadlines import Deadlines
from perund.peer.records import (
    NO_OWNER,
    PeerManagerOwner,
    PeerRecord,
    PendingRequest,
    Resolver,
    hex_of,
    log,
)
from perund.ratelimit import LineBudget
from perund.wire.limits import BacklogPool
from perund.wire.messages import CorrelationKey, Message, Ping
from perund.wire.protocol import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_FRAME_SIZE, PeerProtocol
from perund.words import duration_text, plural

NODE_STOPPED: Final = "this node stopped"
"""Why a request was cut short when the manager stops with the node (`PeerManager.stop`)."""
SESSION_CLOSED: Final = "the session was closed"
"""Why, when it stops because its session was closed (`session_close`), the node running on."""


class PeerTable:
    """One session's peers, each with its connections and the one in use; the owner they
    report to. `PeerManager` builds on it (this constructor is its constructor)."""

    _ensure_connector: Callable[[PeerRecord], None]
    """Dial `rec` (with backoff) unless a dial is under way: the dialling layer's."""

    def __init__(
        self,
        reactor: IReactorTime,
        signer: Signer,
        resolve: Resolver,
        listen_endpoint: ListenAddress | str | None = None,
        *,
        dial_timeout: float = 10.0,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        keepalive_interval: float | None = 30.0,
        owner: PeerManagerOwner | None = None,
        limits: PeerLimits | None = None,
        name_of: Callable[[Address], str] = hex_address,
    ) -> None:
        """`reactor` must also provide IReactorTCP. `listen_endpoint` is where to listen, a
        `ListenAddress` or its text (`parse_listen_address`: plain TCP only). `name_of` names
        a peer in the errors its users read (a session: the contact's alias and address)."""
        self._reactor = reactor
        self._deadlines = Deadlines(reactor)
        """When the pending requests time out."""
        self.name_of = name_of
        self._signer = signer
        self.address: Address = signer.address
        self._resolve = resolve
        self._listen_endpoint: ListenAddress | None = (
            parse_listen_address(listen_endpoint) if isinstance(listen_endpoint, str)
            else listen_endpoint)
        self.dial_timeout = dial_timeout
        self.handshake_timeout = handshake_timeout
        self.max_frame_size = max_frame_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.keepalive_interval = keepalive_interval
        self._owner: PeerManagerOwner = owner or NO_OWNER
        self._peers: dict[Address, PeerRecord] = {}
        self._attempts: dict[PeerProtocol, Deferred[None]] = {}
        self._protocols: set[PeerProtocol] = set()
        self._hosts: dict[PeerProtocol, str | None] = {}
        self._opened: dict[PeerProtocol, float] = {}
        """When each connection was made (the handshake's eviction shield: `_admit`)."""
        self.backlog_pool = BacklogPool()
        """What this session's connections together hold for peers that do not read
        (`perund.wire.limits.SESSION_BACKLOG`)."""
        self.admission = Admission(reactor, limits or PeerLimits())
        self._replaced_lines = LineBudget(reactor, log, "replaced peer connection")
        self.link_lines = LineBudget(reactor, log, ("peer connection made or lost",
                                                          "peer connections made or lost"),
                                     lines=50)
        """Contacts' connections made and lost (a contact can reconnect in a loop)."""
        self.violation_lines = LineBudget(reactor, log, "dropped peer connection", lines=50)
        """Why connections were dropped (`PeerProtocol`): anyone can open connections and
        break the rules on each, so a few lines per interval, the rest counted."""
        self._port: Any = None
        self._keepalive: LoopingCall | None = None
        self._stopping = False
        self._stop_reason = NODE_STOPPED
        """Why the manager stopped, in the words its users' cut-short requests read."""

    def attach(self, owner: PeerManagerOwner) -> None:
        """Report to `owner` from now on. A manager serves one owner: attaching a second one
        while the first is attached is a FailedPrecondition."""
        if self._owner is not NO_OWNER and self._owner is not owner:
            raise FailedPrecondition("these peer links already serve another owner")
        self._owner = owner

    def detach(self, owner: PeerManagerOwner) -> None:
        """`owner` stops hearing from the manager (what arrives afterwards is ignored)."""
        if self._owner is owner:
            self._owner = NO_OWNER

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

    def _now(self) -> float:
        """The reactor's time."""
        # Any: mypy reads the IReactorTime method as one taking self.
        return float(cast(Any, self._reactor).seconds())

    def _peer(self, peer: Address) -> PeerRecord:
        rec = self._peers.get(peer)
        if rec is None:
            rec = self._peers[peer] = PeerRecord(peer)
        return rec

    def _stranger(self, peer: Address) -> bool:
        """Whether `peer` is unknown to the session (the resolver has no endpoint for it)."""
        return self._resolve(peer) is None

    def _choose(self, rec: PeerRecord) -> PeerProtocol | None:
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

    def _reselect(self, rec: PeerRecord) -> None:
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
        if old is not None and new is not old:
            try:
                self._owner.peer_relinked(rec.address)
            except Exception:
                log.failure("peer_relinked failed for {peer}", peer=hex_of(rec.address))
        if old is None:
            run = rec.dial_failures.reached()
            if run is not None:
                # Its dials' failures were logged sparsely: this line closes them.
                failed, since = run
                log.info("peer {peer} reached again, after {attempts} over {duration}",
                         peer=hex_of(rec.address), failed=failed,
                         attempts=plural(failed, "failed dial"),
                         duration=duration_text(int(self._now() - since)))
            # A stranger's connection is news of nobody we know, and costs it only a fresh key:
            # at info level a stream of them would be a stream of log lines.
            # A contact can reconnect in a loop too: a few lines per interval.
            if not self._stranger(rec.address) and self.link_lines.take():
                log.info("peer {peer} connected", peer=hex_of(rec.address))
            else:
                log.debug("peer {peer} connected", peer=hex_of(rec.address))
            try:
                self._owner.peer_connected(rec.address)
            except Exception:
                log.failure("peer_connected failed for {peer}", peer=hex_of(rec.address))
            waiters, rec.waiters = rec.waiters, []
            for waiter in waiters:
                if rec.current is not None:
                    waiter.callback(rec.current)
                else:  # peer_connected closed it again
                    rec.waiters.append(waiter)
            held, rec.held = rec.held, []
            if rec.current is not None:
                for conn, msg in held:
                    if conn in rec.conns:
                        self._deliver(rec.address, msg)
            # Else the link is gone again, and what came on it with it: handled after the next
            # link's sync, it would pass for that link's (the peer syncs on the next one).
            for conn in rec.conns:
                conn.release()

    def _deliver(self, peer: Address, msg: Message) -> None:
        """Hand a message to the owner (its failure is logged, not raised into the wire)."""
        try:
            self._owner.message_received(peer, msg)
        except Exception:
            log.failure("message_received failed for a {kind} from {peer}",
                        kind=type(msg).__name__, peer=hex_of(peer))

    def _repoint(self, rec: PeerRecord, key: CorrelationKey, entry: PendingRequest,
                 new: PeerProtocol) -> None:
        """Expect `entry`'s response on `new`. A Ping is asked again there: the peer answers
        it on the connection it came by, which we may be about to stop reading."""
        entry.conn = new
        if key[0] == "ping":
            try:
                new.send(Ping(key[1]))
            except PerundError:
                log.info("re-sending a ping to {peer} failed", peer=hex_of(rec.address))

    def _drop(self, rec: PeerRecord, conn: PeerProtocol, why: str) -> None:
        """Forget a connection that is gone, and what it brought that the owner has not had;
        fail the requests written to it."""
        rec.conns.remove(conn)
        if rec.held:
            # The peer sends it again after the next link's sync, where it belongs.
            rec.held = [(c, msg) for c, msg in rec.held if c is not conn]
        lost = [(k, e) for k, e in rec.pending.items() if e.conn is conn]
        for key, entry in lost:
            del rec.pending[key]
            entry.settle()
        for _, entry in lost:
            entry.deferred.errback(
                PeerDisconnected(
                    f"peer {self.name_of(rec.address)}: {why} before the response came",
                    peer=hex_of(rec.address),
                    timeout=None,
                )
            )
        if rec.current is conn:
            rec.current = None
            try:
                self._owner.peer_disconnected(rec.address)
            except Exception:
                log.failure("peer_disconnected failed for {peer}", peer=hex_of(rec.address))

    def _retire(self, rec: PeerRecord, conn: PeerProtocol, why: str, *, abort: bool) -> None:
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

    def _unreachable(self, rec: PeerRecord, why: str) -> PeerUnreachable:
        return PeerUnreachable(
            f"peer {self.name_of(rec.address)} unreachable: {why}",
            peer=hex_of(rec.address),
            timeout=self.dial_timeout,
        )
