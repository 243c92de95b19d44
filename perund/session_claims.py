"""What one session of the node may not share with another: its keys, on-chain account and
store, and its peer port (docs/security.md, "Sessions").

Ports: every session the node remembers (`data_dir/sessions.json`: the open ones, and those
waiting to be opened again) records the address it listened on when it was last open. That
port is its own for as long as it is remembered, open or not: another session whose
`comm.listen` names it is refused, at `session_open` and at a node start alike, whichever of the
two opens first (sessions open again in the order of their paths, which a user may choose).
The session that already had the port opens; the refusal names no one. A session gives its port
up with `session_close` (it is forgotten) or by opening with another address (its record
moves). Port 0 (any free port) claims nothing.

The node's own ports (the API's, the chain's when it runs on this host) are no session's: a
session naming one is refused, not left to retry until the node lets it go.

The refusals are InvalidConfig, never PortInUse: a session refused for another's port is not
tried again by itself (perund/reopening.py), so a retry can never be a way to take a port at
the moment its owner's session is reopened.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from perund.errors import InvalidConfig, ResourceExists
from perund.listen_address import ListenAddress, parse_listen_address
from perund.node_state import RememberedSession

if TYPE_CHECKING:
    from perund.session.config import SessionConfig
    from perund.session.session import Session


def refuse_second_open(config: SessionConfig, sessions: Iterable[Session]) -> None:
    """ResourceExists when the user of `config` has a session open here already, under
    another file (a copy of its session.yaml): one key, one account, one store, one
    session. (Two sessions on one on-chain account would also each see, and spend, the
    other's money.)"""
    # The store paths as approved (resolved then, free of links): resolving them again
    # here would follow whatever a user swapped in since.
    database = config.database
    for session in sessions:
        if session.config.off_chain.address == config.off_chain.address \
                or session.config.on_chain.address == config.on_chain.address \
                or session.config.database == database:
            raise ResourceExists(
                f"this user's session is open already (from {session.config.path}): "
                "the same off-chain key, on-chain account or store", type="session",
                id="0x" + session.id, configFile=str(session.config.path))


def node_ports(*, api_port: int | None, api_listen: str, chain_url: str | None
               ) -> dict[int, str]:
    """The TCP ports the node itself uses, each with what uses it: the API's (bound, or as
    configured before it listens) and the chain's when its URL is on this host (the embedded
    chain's always is)."""
    ports: dict[int, str] = {}
    if api_port is None:
        try:
            api_port = parse_listen_address(api_listen).port
        except ValueError:
            api_port = None  # another endpoint kind (the operator's): its bound port counts
    if api_port:
        ports[api_port] = "the node's API"
    chain_port = _local_port(chain_url)
    if chain_port:
        ports[chain_port] = "the node's chain"
    return ports


def refuse_claimed_port(config: SessionConfig, own: str,
                        remembered: Mapping[str, RememberedSession],
                        own_ports: Mapping[int, str]) -> None:
    """InvalidConfig naming `comm.listen` when the session of `config` (remembered, if at all,
    as `own`) would listen on a port that is the node's (`own_ports`) or another session's:
    recorded for another remembered session (every open session is one: the node records its
    address as it opens)."""
    listen = config.comm_listen
    used_by = own_ports.get(listen.port) if listen.port else None
    if used_by is not None:
        raise _refused(listen, f"the port is {used_by}'s")
    if any(listen.overlaps(entry.listen) for path, entry in remembered.items()
           if path != own and entry.listen is not None):
        raise _refused(listen, "the port is another session's on this node (where it listened "
                               "when last open)")


def _refused(listen: ListenAddress, why: str) -> InvalidConfig:
    rule = "a port of the session's own (or 0, any free port)"
    return InvalidConfig(f"comm.listen: cannot listen for peers on {listen}: {why}; choose "
                         "another port", name="comm.listen", value=str(listen),
                         requirement=rule)


def _local_port(url: str | None) -> int | None:
    """The port of `url` when its host is this machine (a loopback address or `localhost`)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port if parts.port is not None else {
            "http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return port
    try:
        return port if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None
