"""Dialling a peer: on demand (a send without a connection waits for one, until the dial
deadline) and, for a peer kept connected, again whenever it is not, with capped exponential
backoff."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from perund.channel.types import Address
from perund.errors import InvalidArgument, PeerUnreachable, PerundError
from perund.peer.dial_failures import RESOLVING, DialLine
from perund.peer.records import PeerRecord, hex_of, log
from perund.peer.table import PeerTable
from perund.wire.protocol import PeerProtocol, Role
from perund.words import duration_text, plural, seconds_text


class PeerFactory(Factory):
    """Builds PeerProtocols for the listener (role LISTENER) or for one dial (role DIALER)."""

    noisy = False  # one "Starting factory" line per dial is noise; the manager logs what matters

    def __init__(self, manager: Dialling, role: Role, expected: Address | None) -> None:
        self._manager = manager
        self._role = role
        self._expected = expected

    def buildProtocol(self, addr: object) -> PeerProtocol | None:
        return self._manager._build_protocol(self._role, self._expected,
                                             host_of(getattr(addr, "host", None)))


def host_of(address: str | None) -> str | None:
    """Whom the per-host limits count a connection from: its IPv4 address, or the /64 of an
    IPv6 one (one machine commonly holds a whole /64, so its addresses cost nothing)."""
    if address is None or ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class Dialling(PeerTable):
    """The peer table, and the dials that fill it. `PeerManager` builds on it."""

    _build_protocol: Callable[[Role, Address | None, str | None], PeerProtocol | None]
    """A connection's protocol, or None to refuse it: the manager's."""

    def _connection(self, peer: Address) -> Deferred[PeerProtocol]:
        """The connection to use for `peer`, once there is one (dialling if needed)."""
        if peer == self.address:
            return fail(InvalidArgument("cannot connect to ourselves", name="peer"))
        left = self.admission.seconds_cut_off(peer)
        if left is not None:
            return fail(PeerUnreachable(
                f"peer {self.name_of(peer)} is cut off for another {duration_text(left)} (it "
                "sent too many refused messages)", peer=hex_of(peer), timeout=None, cut_off=True))
        rec = self._peer(peer)
        if rec.current is not None:
            return succeed(rec.current)
        if self._stopping:
            return fail(self._unreachable(rec, self._stop_reason))

        def forget(d: Deferred[PeerProtocol]) -> None:
            if d in rec.waiters:
                rec.waiters.remove(d)

        waiter: Deferred[PeerProtocol] = Deferred(forget)
        rec.waiters.append(waiter)

        def timed_out(_: object, timeout: float) -> PeerProtocol:
            raise self._unreachable(rec, "no authenticated connection within "
                                         f"{seconds_text(timeout)}")

        waiter.addTimeout(self.dial_timeout, self._reactor, onTimeoutCancel=timed_out)
        self._ensure_connector(rec)
        return waiter

    def _ensure_connector(self, rec: PeerRecord) -> None:
        if rec.connector is not None or self._stopping:
            return
        d = Deferred.fromCoroutine(self._connect_loop(rec))
        if not d.called:
            rec.connector = d
        d.addErrback(self._connector_failed, rec)

    def _connector_failed(self, failure: Failure, rec: PeerRecord) -> None:
        if not isinstance(failure.value, CancelledError):
            log.failure("dialler for {peer} failed", failure, peer=hex_of(rec.address))

    async def _connect_loop(self, rec: PeerRecord) -> None:
        """Dial until connected, with capped exponential backoff, while anyone wants it."""
        delay = self.backoff_initial
        try:
            while not self._stopping and rec.current is None and (rec.keep or rec.waiters):
                why = "no endpoint is known for it"
                try:
                    endpoint = self._resolve(rec.address)
                except Exception as exc:
                    self._resolve_failed(rec, exc)
                    endpoint, why = None, "finding its endpoint failed (the node's log says why)"
                if endpoint is None:
                    waiters, rec.waiters = rec.waiters, []
                    for waiter in waiters:
                        waiter.errback(self._unreachable(rec, why))
                    if not rec.keep:
                        return
                else:
                    rec.attempt_in_flight = True
                    try:
                        await self._attempt(rec.address, endpoint)
                    except CancelledError:
                        raise
                    except Exception as exc:
                        self._dial_failed(rec, endpoint, str(exc) or type(exc).__name__)
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

    def _dial_failed(self, rec: PeerRecord, endpoint: str, error: str) -> None:
        """Log a failed dial, or count it for a later line (perund/peer/dial_failures.py):
        a peer that stays down is dialled every few seconds, for days."""
        line = rec.dial_failures.record(self._now(), endpoint, error)
        if line is None:
            return
        kind, failed = line
        fields = {"peer": hex_of(rec.address), "endpoint": endpoint, "error": error,
                  "failed": failed, "failed_in_run": rec.dial_failures.failed}
        if kind is DialLine.FIRST:
            log.info("dialling peer {peer} at {endpoint} failed: {error} (retrying; while it "
                     "fails so, a line after 1 min, 10 min, then hourly)", **fields)
        elif kind is DialLine.CHANGED:
            log.info("dialling peer {peer} at {endpoint} now fails otherwise: {error} "
                     "({attempts} since the line before)",
                     attempts=plural(failed, "failed attempt"), **fields)
        else:
            since = rec.dial_failures.since or 0.0
            log.info("dialling peer {peer} at {endpoint} still fails, for {duration} now: "
                     "{error} ({attempts} since the line before)",
                     duration=duration_text(int(self._now() - since)),
                     attempts=plural(failed, "failed attempt"), **fields)

    def _resolve_failed(self, rec: PeerRecord, exc: Exception) -> None:
        """Log a resolver that raised, sparsely as a failed dial (it is tried again at every
        dial of a peer kept connected). The session's resolver, its contacts' lookup, raises
        nothing: a `PerundError` is a resolver's reason in words, said without a traceback;
        anything else is a bug, whose traceback is logged once for the peer (called in the
        `except` that caught `exc`: `log.failure` takes the traceback from there)."""
        error = exc.message if isinstance(exc, PerundError) else f"{type(exc).__name__}: {exc}"
        line = rec.dial_failures.record(self._now(), RESOLVING, error)
        if line is None:
            return
        kind, failed = line
        fields: dict[str, Any] = {"peer": hex_of(rec.address), "error": error, "failed": failed,
                                  "failed_in_run": rec.dial_failures.failed}
        if kind is DialLine.STILL:
            since = rec.dial_failures.since or 0.0
            log.warn("finding the endpoint of peer {peer} still fails, for {duration} now: "
                     "{error} ({attempts} since the line before)",
                     duration=duration_text(int(self._now() - since)),
                     attempts=plural(failed, "failed attempt"), **fields)
            return
        retrying = ("a line after 1 min, 10 min, then hourly" if kind is DialLine.FIRST
                    else plural(failed, "failed attempt") + " since the line before")
        if isinstance(exc, PerundError) or rec.dial_failures.traced:
            log.warn("finding the endpoint of peer {peer} failed: {error} (retrying; "
                     "{retrying})", retrying=retrying, **fields)
        else:
            rec.dial_failures.traced = True
            log.failure("finding the endpoint of peer {peer} failed, a bug: {error} "
                        "(retrying; {retrying}; this traceback is logged once)",
                        retrying=retrying, **fields)

    async def _attempt(self, peer: Address, endpoint_description: str) -> None:
        """One dial: connect, then wait for the handshake to complete (or fail)."""
        endpoint = _client_endpoint(self._reactor, endpoint_description)
        connecting = cast(
            "Deferred[PeerProtocol]", endpoint.connect(PeerFactory(self, Role.DIALER, peer))
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


def _client_endpoint(reactor: IReactorTime, description: str) -> Any:
    from twisted.internet.endpoints import clientFromString

    return clientFromString(reactor, description)  # type: ignore[no-untyped-call]
