"""A man-in-the-middle relay between real daemons' peer connections, to fail a party at an exact
protocol step without any hook in the node.

Each user's contacts point every peer at a relay port of its own (`Relay.route(dialer, target,
port)`), so the relay knows, for every connection, who dialled whom: every frame it forwards
is attributed to a sender and a receiver. It forwards the bytes unchanged (the peer handshake
signs nonces and addresses, not TCP endpoints, so it passes through), cutting the stream into
frames (docs/wire.md: a 4-byte big-endian length, then the payload) and decoding each one with
the node's own codec.

A `Fault` armed on the relay fires at the first frame that matches its trigger (a message
class, a sender, optionally a receiver and a test on the message), and makes its victim:

- **crash**: the relay stops every frame from and to the victim, then calls `kill(victim)`
  (the test's SIGKILL), all while it holds its one lock, so nothing of the victim's passes in
  between; the trigger frame is delivered first (`deliver=True`, its sender crashed right after
  sending it) or never (`deliver=False`, the victim crashed just before);
- **go silent**: the same cut without the kill: the victim's node runs on, but nothing reaches
  it and nothing it sends arrives, on its connections now and on every new one, until
  `heal(victim)` (which also closes its connections, so that every side reconnects and syncs,
  as after a real outage).

Frames are forwarded in order per connection; each decision is taken under the lock, so a
fault is exact whichever of the victim's connections its next frame would take. Threads are
fine here: the relay lives in the test process, beside a reactor the test often blocks.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from perund.wire.codec import decode
from perund.wire.messages import Message

LENGTH = struct.Struct(">I")


class Kind(Enum):
    """What a fault does to its victim."""

    CRASH = "crash"
    SILENCE = "silence"


@dataclass
class Fault:
    """Fail `victim` (by default the sender) at the first frame of type `message` from
    `sender` (to `receiver`, if given) that `when` accepts."""

    message: type[Message]
    sender: str
    kind: Kind
    deliver: bool
    receiver: str | None = None
    victim: str | None = None
    when: Callable[[Message], bool] = lambda _: True
    fired: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.victim is None:
            self.victim = self.sender
        if self.victim != self.sender and self.deliver:
            # The receiver may or may not act on a frame it got just before dying: racy.
            raise ValueError("a receiver can only fail before the frame reaches it")

    def matches(self, message: Message, sender: str, receiver: str) -> bool:
        return (type(message) is self.message and sender == self.sender
                and self.receiver in (None, receiver) and self.when(message))

    def wait(self, timeout: float = 60.0) -> None:
        """Until the fault has fired."""
        if not self.fired.wait(timeout):
            raise AssertionError(f"no {self.message.__name__} from {self.sender} came")


class _Pair:
    """One relayed connection: the dialer's socket and ours to the target."""

    def __init__(self, dialer: str, target: str, inbound: socket.socket,
                 outbound: socket.socket) -> None:
        self.dialer, self.target = dialer, target
        self.inbound, self.outbound = inbound, outbound

    def close(self) -> None:
        for sock in (self.inbound, self.outbound):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Relay:
    """The relay (module doc). `kill(name)` must SIGKILL that party's daemon and return once
    it is dead."""

    def __init__(self, kill: Callable[[str], None]) -> None:
        self._kill = kill
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._cut: set[str] = set()
        self._pairs: set[_Pair] = set()
        self._listeners: list[socket.socket] = []
        self._closed = False
        self.seen: list[tuple[str, str, str]] = []
        """(sender, receiver, message name) of every frame forwarded, for failure messages."""

    def route(self, dialer: str, target: str, port: int) -> int:
        """A relay port for `dialer`'s connections to `target`, who listens on `port`."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._listeners.append(listener)
        threading.Thread(target=self._accept, args=(listener, dialer, target, port),
                         daemon=True, name=f"relay {dialer}->{target}").start()
        relay_port: int = listener.getsockname()[1]
        return relay_port

    def arm(self, fault: Fault) -> Fault:
        """Fire `fault` at its first matching frame from now on."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def heal(self, name: str) -> None:
        """Let `name`'s frames through again; its connections are closed, so that both sides
        reconnect and sync."""
        with self._lock:
            self._cut.discard(name)
            pairs = [p for p in self._pairs if name in (p.dialer, p.target)]
        for pair in pairs:
            pair.close()

    def close(self) -> None:
        self._closed = True
        for listener in self._listeners:
            listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()

    # -- the threads ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, dialer: str, target: str, port: int) -> None:
        while not self._closed:
            try:
                inbound, _ = listener.accept()
            except OSError:
                return
            try:
                outbound = socket.create_connection(("127.0.0.1", port), timeout=5)
                outbound.settimeout(None)
            except OSError:
                inbound.close()  # the target is down: so is this dial
                continue
            pair = _Pair(dialer, target, inbound, outbound)
            with self._lock:
                self._pairs.add(pair)
            for source, sink, sender, receiver in ((inbound, outbound, dialer, target),
                                                   (outbound, inbound, target, dialer)):
                threading.Thread(target=self._pump, args=(pair, source, sink, sender, receiver),
                                 daemon=True, name=f"relay {sender}->{receiver}").start()

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket, sender: str,
              receiver: str) -> None:
        buffer = bytearray()
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                buffer += data
                while len(buffer) >= LENGTH.size:
                    (length,) = LENGTH.unpack_from(buffer)
                    end = LENGTH.size + length
                    if len(buffer) < end:
                        break
                    frame = bytes(buffer[:end])
                    del buffer[:end]
                    self._forward(frame, sink, sender, receiver)
        except OSError:
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            pair.close()

    def _forward(self, frame: bytes, sink: socket.socket, sender: str, receiver: str) -> None:
        message = decode(frame[LENGTH.size:])
        with self._lock:
            if sender in self._cut or receiver in self._cut:
                return
            fault = next((f for f in self._faults
                          if f.matches(message, sender, receiver)), None)
            if fault is None:
                sink.sendall(frame)
                self.seen.append((sender, receiver, type(message).__name__))
                return
            self._faults.remove(fault)
            if fault.deliver:
                sink.sendall(frame)
                self.seen.append((sender, receiver, type(message).__name__))
            assert fault.victim is not None
            self._cut.add(fault.victim)
            if fault.kind is Kind.CRASH:
                self._kill(fault.victim)
            fault.fired.set()
