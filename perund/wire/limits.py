"""What a peer connection takes from whoever is on its other end, before and after the
handshake (docs/wire.md): the peer port is open to anyone, and keys cost nothing, so every
frame read, byte written and answer given is bounded. A stranger (an authenticated key the
session does not know) gets less than a contact (`PeerProtocol.restrict`)."""

from __future__ import annotations

from typing import Final

HANDSHAKE_FRAME_SIZE: Final = 1024
"""Largest frame read before the peer has authenticated (a Hello or an Auth is ~100 bytes):
whoever connects can send frames, and a large one of many small items costs ~0.6 ms to
decode before it is refused."""

STRANGER_FRAME_SIZE: Final = 4 * 1024
"""Largest frame read from an authenticated peer the session does not know (`restrict`):
a stranger's messages are refused or are small questions (a fee quote), and a large frame
(a memo of 256 references) costs a millisecond to decode (an audit: a stranger's 47 KB
frames slowed every session's payments to seconds)."""

MAX_BACKLOG: Final = 64 * 1024 * 1024
"""Bytes we may write to a connection after its transport asked us to pause (the peer does
not read) before it is dropped: room for a resync of many thousands of channels."""

SESSION_BACKLOG: Final = MAX_BACKLOG
"""Bytes all of one session's connections together may hold that way (`BacklogPool`): the
connection whose write takes them past it is dropped. A session's user chooses its contacts,
and could otherwise add a thousand keys of its own that each send and never read, and make the
node hold 64 MiB for each: every other user of the node would pay for that memory."""


class BacklogPool:
    """What the connections sharing it (a session's) hold beyond their transports' buffers,
    against `limit` bytes (`SESSION_BACKLOG`)."""

    def __init__(self, limit: int = SESSION_BACKLOG) -> None:
        self.limit = limit
        self.held = 0
        """Bytes written to connections whose transports had paused us, not yet sent."""

    @property
    def over(self) -> bool:
        """Whether the connections hold more than `limit`."""
        return self.held > self.limit


STRANGER_BACKLOG: Final = 256 * 1024
"""The same for a stranger's connection (`restrict`): its questions get answers whether or
not it reads them, and an audit made a node buffer 500 MB of fee quotes that way."""

STRANGER_PING_RATE: Final = 1.0
"""Pings a second a stranger may send (`restrict`), after a burst of `STRANGER_PING_BURST`;
more drops the connection (an audit: 64 strangers' ping floods took payments from 5 to
45 ms). A contact's are not counted: a reconnecting client pings once per channel that
waits to send, and a hub's thousands of channels with one peer did exceed any burst."""
STRANGER_PING_BURST: Final = 10

HELLO_TIMEOUT: Final = 3.0
"""Seconds a new connection has for its Hello (a peer sends it as it connects): a silent
connection holds a handshake slot for this long, not the whole handshake timeout."""

