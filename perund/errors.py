"""The one exception tree of perund, and its mapping to API error codes.

Every error a user, a peer or the chain can cause is a `PerundError` subclass carrying the code and
the `data` fields of the API's error table (docs/api.md, "JSON-RPC 2.0"). Anything else that
escapes is a bug and is reported as `Internal` (401) with the details only in the log.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PerundError(Exception):
    """Base of every error perund raises on purpose."""

    code: ClassVar[int] = 401
    category: ClassVar[str] = "internal"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = data

    def to_data(self) -> dict[str, Any]:
        """The JSON-RPC `error.data` object: the category plus this error's fields."""
        return {"category": self.category, **self.data}


class ParticipantError(PerundError):
    """The peer or the user did not do what the protocol needed."""

    category = "participant"


class PeerRequestTimedOut(ParticipantError):
    code = 101


class PeerRejected(ParticipantError):
    code = 102


class PeerNotFunded(ParticipantError):
    code = 103


class UserResponseTimedOut(ParticipantError):
    code = 104


class ClientError(PerundError):
    """The caller asked for something wrong or impossible."""

    category = "client"


class ResourceNotFound(ClientError):
    code = 201


class ResourceExists(ClientError):
    code = 202


class InvalidArgument(ClientError):
    code = 203


class FailedPrecondition(ClientError):
    code = 204


class InvalidConfig(ClientError):
    code = 205


class PortInUse(InvalidConfig):
    """A port to listen on is held by another socket: a config error to a user opening a
    session, but one that passes (the holder may let it go), so a session reopened at start
    tries again (perund/reopening.py)."""


class InvalidContracts(ClientError):
    code = 206


class Unauthorized(PerundError):
    """The caller's credential does not allow this method, or this session (docs/security.md).

    Its own category: the request was well formed, but this caller may not make it. The answer
    is the same whether or not a session it names exists.
    """

    category = "unauthorized"
    code = 501


class ProtocolError(PerundError):
    """The chain or the transport failed underneath a correct request."""

    category = "protocol"


class ChainRpcError(ProtocolError):
    """The chain node answered a request with a JSON-RPC error object: its `rpc_code`,
    `rpc_message` and `rpc_data` (None, with `has_data` False, when the error had none; the
    revert data of a failed call travels here)."""

    def __init__(self, method: str, rpc_code: int, rpc_message: str, *,
                 rpc_data: Any = None, has_data: bool = False) -> None:
        super().__init__(f"{method} failed: {rpc_message[:300]} (code {rpc_code})",
                         method=method, rpcCode=rpc_code)
        self.rpc_code = rpc_code
        self.rpc_message = rpc_message
        self.rpc_data = rpc_data
        self.has_data = has_data


class TxTimedOut(ProtocolError):
    code = 301


class ChainNotReachable(ProtocolError):
    code = 302


class TxReverted(ProtocolError):
    """A transaction was mined but reverted; `data` names the contract error when it is known."""

    code = 303


class ChainMismatch(ProtocolError):
    """The chain lacks what the node's stores say it holds: deposits of funded channels (the
    chain was reset, or is another chain). `data.channels` names them and the amounts."""

    code = 305


class InsufficientFunds(ProtocolError):
    """The sending account cannot pay for a transaction (its value plus gas)."""

    code = 304


class Internal(PerundError):
    code = 401


class InvalidSignature(PerundError):
    """A signature does not verify or does not belong to the expected signer."""

    code = 401


class PeerProtocolError(PerundError):
    """A peer sent something the protocol forbids: logged and refused, never shown as a bug."""

    category = "participant"
    code = 102


class PeerUnreachable(PeerRequestTimedOut):
    """No authenticated connection to the peer could be made before the dial deadline.

    A subclass of `PeerRequestTimedOut` (API code 101): to the caller the peer did not answer.
    """


class PeerDisconnected(PeerRequestTimedOut):
    """The connection a request was waiting on was lost before the answer came.

    A subclass of `PeerRequestTimedOut` (API code 101): like a timeout, the peer may or may not
    have processed the request, so the channel client syncs before the next update.
    """


class DecodeError(PeerProtocolError):
    """A peer frame is not a well-formed message of a known type and version."""


class EncodeError(Internal):
    """A message built by this node is malformed (a bug): it is never sent."""


class StoreError(Internal):
    """The node's store cannot be read or written as the node needs (see docs/storage.md)."""


class StoreCorrupt(StoreError):
    """A store file or record is damaged in a way that repair on open must not guess about
    (anything but a torn tail); `data` names the file and, when known, the record."""


class StoreLocked(StoreError):
    """Another process (or another open in this one) holds the store: two writers would
    corrupt it."""
