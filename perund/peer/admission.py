"""Who may hold a connection to a session's peer port, and who has lost that right for a while.

Anyone can connect, and anyone can make keys and authenticate, so what one remote host or one
peer may hold is bounded (limits in the node config, docs/security.md):

- connections in their handshake: `handshakes` in all, `handshakes_per_host` from one host
  (they last at most the handshake timeout; at the cap in all a newcomer may close one,
  `PeerManager._admit`);
- connections of any kind from one host: `connections_per_host`;
- authenticated connections from addresses the session does not know: `strangers`;
- a peer, contact or not, whose messages the session keeps refusing (`refusals` within
  `refusal_window`) is cut off: its connections are closed and refused, and no message goes to
  it, for `refusal_window`. A refused message costs the node a signature check and a log line;
  a peer that sends them in bulk is treated as the flood it is.

Refusals are logged here, few per peer and window: the rest are counted in the line that cuts
the peer off. Since keys cost nothing, refusals and cut-offs are also logged at most a few lines
per interval over all peers (`LineBudget`), the rest counted. Every refusal of connections is one
warning per interval, however many come.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from perund.channel.types import Address
from perund.ratelimit import LineBudget, RateLimitedWarning
from perund.words import plural

log = Logger(namespace="perund.peer")


@dataclass(frozen=True)
class PeerLimits:
    """What one host or peer may hold of a session's peer port."""

    handshakes: int = 256
    handshakes_per_host: int = 16
    connections_per_host: int = 32
    strangers: int = 64
    refusals: int = 100
    refusal_window: float = 60.0
    logged_refusals: int = 5
    """Refused messages of one peer logged per window; the rest are counted (tests that read
    every refusal's reason in the log raise it)."""


@dataclass
class _Tally:
    started: float
    count: int = 0


class Admission:
    """Decides about connections and refused messages; the manager counts connections."""

    def __init__(self, clock: Any, limits: PeerLimits) -> None:
        self._clock = clock
        self.limits = limits
        # Both are kept in the order their entries expire (each lasts one window from when
        # it is made, and a renewed entry moves to the end), so the expired ones are found at
        # the front: pruning costs O(1) per entry, however many are live (rebuilding them cost
        # 1.2 ms per cut-off at 25,000 live ones). OrderedDict, not dict: a dict's first
        # entry is found by skipping the slots of those deleted before it, O(n) again.
        self._tallies: OrderedDict[Address, _Tally] = OrderedDict()
        self._cut_off: OrderedDict[Address, float] = OrderedDict()
        self._refusing = RateLimitedWarning(clock, log)
        self._evicting = RateLimitedWarning(clock, log)
        self._refusal_lines = LineBudget(clock, log, "refused peer message")
        self._cut_off_lines = LineBudget(clock, log, ("cut-off of a peer", "cut-offs of peers"))

    def admit_incoming(self, host: str | None, handshaking: int, handshaking_from_host: int,
                       from_host: int) -> bool:
        """Whether a new incoming connection from `host` may start its handshake, given the
        connections in their handshake (all, and from `host`) and all from `host`."""
        limits = self.limits
        if handshaking < limits.handshakes \
                and handshaking_from_host < limits.handshakes_per_host \
                and from_host < limits.connections_per_host:
            return True
        self.warn("refused {counted}: {handshaking} in their handshake "
                  "({handshaking_from_host} from {host}), {from_host} from {host} in all "
                  "(limits.peer_handshakes, limits.peer_handshakes_per_host, "
                  "limits.peer_connections_per_host)", counted="incoming peer connection",
                  handshaking=handshaking,
                  handshaking_from_host=handshaking_from_host, from_host=from_host, host=host)
        return False

    def evicted(self, host: str | None, why: str) -> None:
        """A connection in its handshake from `host` was closed to let a new one in, chosen
        for `why` (at most one warning per interval)."""
        self._evicting.warn("closed {counted} in their handshake to let new ones in "
                            "(limits.peer_handshakes); the latest from {host}, {why}",
                            counted="incoming peer connection", host=host, why=why)

    def admit_stranger(self, peer: Address, strangers: int) -> bool:
        """Whether one more authenticated connection from an unknown address may stay."""
        if strangers < self.limits.strangers:
            return True
        self.warn("refused {counted} (the last {peer}): {connected} connected "
                  "(limits.peer_strangers)",
                  counted=("connection of an unknown peer", "connections of unknown peers"),
                  peer="0x" + peer.hex(), count=strangers,
                  connected=plural(strangers, "unknown peer is", "unknown peers are"))
        return False

    def cut_off_until(self, peer: Address) -> float | None:
        """Until when `peer` is cut off for refused messages, or None."""
        until = self._cut_off.get(peer)
        if until is None:
            return None
        if until <= self._clock.seconds():
            del self._cut_off[peer]
            return None
        return until

    def seconds_cut_off(self, peer: Address) -> int | None:
        """Whole seconds (at least 1) `peer` stays cut off, or None: for messages."""
        until = self.cut_off_until(peer)
        return None if until is None else max(1, math.ceil(until - self._clock.seconds()))

    def refused(self, peer: Address) -> tuple[bool, bool]:
        """Count a message of `peer` that was refused: `(log it, cut the peer off now)`."""
        now = self._clock.seconds()
        window = self.limits.refusal_window
        tally = self._tallies.get(peer)
        if tally is None or now - tally.started >= window:
            self._forget_old(now)
            self._tallies.pop(peer, None)  # a new window goes to the end
            tally = self._tallies[peer] = _Tally(now)
        tally.count += 1
        if tally.count < self.limits.refusals:
            return tally.count <= self.limits.logged_refusals and self._refusal_lines.take(), False
        del self._tallies[peer]
        # Throw-away keys are never looked up again: their entries go once expired.
        self._forget_cut_offs(now)
        self._cut_off.pop(peer, None)
        self._cut_off[peer] = now + window
        if self._cut_off_lines.take():
            log.warn("peer {peer} sent {messages} that were refused within {window} s "
                     "(limits.peer_refusals): its connections are closed and refused for "
                     "{window} s", peer="0x" + peer.hex(), count=tally.count, window=window,
                     messages=plural(tally.count, "message"))
        return False, True

    def warn(self, template: str, counted: str | tuple[str, str] = "time",
             **fields: object) -> None:
        """Log a refusal of connections, at most once per interval."""
        self._refusing.warn(template, counted, **fields)

    def _forget_old(self, now: float) -> None:
        """Drop the tallies whose window is over, from the front (the oldest)."""
        tallies, window = self._tallies, self.limits.refusal_window
        while tallies:
            tally = next(iter(tallies.values()))
            if now - tally.started < window:
                break
            tallies.popitem(last=False)

    def _forget_cut_offs(self, now: float) -> None:
        """Drop the cut-offs that are over, from the front (the soonest to end). Should the
        clock step back, an entry that is over may wait behind one that is not: lookups check
        the time anyway (`cut_off_until`), and it goes with the entries before it."""
        cut_off = self._cut_off
        while cut_off:
            until = next(iter(cut_off.values()))
            if until > now:
                break
            cut_off.popitem(last=False)
