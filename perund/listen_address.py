"""A session's peer listening address (`comm.listen` in session.yaml): plain TCP only.

A user writes `comm.listen` in a file the user may edit (docs/security.md), and the node reads
it again at every start. A Twisted endpoint string would hand that user every endpoint type
Twisted has: a `unix:` socket made inside the node's data folder, an `ssl:` endpoint whose key
file is read while the string is parsed (`privateKey=/dev/zero` filled the node's memory at
every start), `systemd:` descriptors. So the value is parsed here, by this code alone, with no
file access, into an interface and a port, and the listener is made from those two.

Accepted forms (nothing else):

    tcp:PORT                        every IPv4 interface
    tcp:PORT:interface=ADDRESS      one interface (IPv6 with Twisted's escapes: interface=\\:\\:1)
    tcp:port=PORT[:interface=ADDRESS]
    tcp6:PORT[:interface=ADDRESS]   every IPv6 interface unless one is named
    ADDRESS:PORT, [IPv6]:PORT       as a contact's commAddress is written

ADDRESS is an IP address literal (not a host name: what a name resolves to may change, and two
sessions' addresses are compared); PORT is 0..65535 (0: any free port, claimed by no one).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final

_PORT: Final = re.compile(r"^[0-9]{1,5}$")
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,15}):")
_MAX_TEXT: Final = 200
FORMS: Final = ("tcp:PORT, tcp:PORT:interface=ADDRESS, ADDRESS:PORT or [IPv6]:PORT "
                "(e.g. tcp:5001:interface=127.0.0.1)")
"""The accepted forms, as errors name them."""

_ALL_IPV4: Final = ""
"""The interface of `tcp:PORT`: every IPv4 interface (Twisted's default)."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where a session listens for its peers: an interface (an IP literal, or "" for every
    IPv4 interface) and a TCP port (0: any free one)."""

    interface: str
    port: int

    def __str__(self) -> str:
        """The canonical form, which `parse_listen_address` reads back."""
        if self.interface == _ALL_IPV4:
            return f"tcp:{self.port}"
        return f"tcp:{self.port}:interface={self.interface.replace(':', chr(92) + ':')}"

    def server_endpoint(self, reactor: Any) -> Any:
        """The TCP endpoint (an IStreamServerEndpoint) to listen on, made directly: no
        endpoint string is parsed."""
        from twisted.internet.endpoints import TCP4ServerEndpoint

        # Twisted's TCP port takes an IPv6 interface as well (it picks the family from it).
        return TCP4ServerEndpoint(reactor, self.port,  # type: ignore[no-untyped-call]
                                  interface=self.interface)

    @property
    def wildcard(self) -> bool:
        """Whether it listens on every interface (of a family)."""
        return self.interface in (_ALL_IPV4, "0.0.0.0", "::")

    def overlaps(self, other: ListenAddress) -> bool:
        """Whether the two cannot both listen at once: the same port (not 0) on the same
        interface, or on every interface for either one. (Every interface of one family is
        counted as overlapping the other family too: a dual-stack `::` takes IPv4 as well.)"""
        if self.port == 0 or self.port != other.port:
            return False
        return self.wildcard or other.wildcard or self.interface == other.interface


def parse_listen_address(value: object) -> ListenAddress:
    """The `ListenAddress` of `value` (module doc), or ValueError saying what is accepted. The
    message never repeats more of `value` than a short scheme name."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"a TCP listening address: {FORMS}")
    text = value.strip()
    scheme = _SCHEME.match(text)
    if len(text) > _MAX_TEXT or not text.isprintable():
        if scheme is not None and scheme.group(1).lower() not in ("tcp", "tcp6"):
            raise _not_tcp(scheme.group(1))  # a long ssl: string is still an ssl: one
        raise ValueError(f"not a TCP listening address: use {FORMS}")
    if text.startswith("["):
        return _bracketed(text)
    if scheme is not None and scheme.group(1).lower() in ("tcp", "tcp6"):
        return _tcp(text[scheme.end():], ipv6=scheme.group(1).lower() == "tcp6")
    host, sep, port = text.rpartition(":")
    if sep and host and ":" not in host and _PORT.match(port) and _is_ip(host):
        return ListenAddress(str(ipaddress.ip_address(host)), _port(port))
    if scheme is not None:
        raise _not_tcp(scheme.group(1))
    raise ValueError(f"not a TCP listening address: use {FORMS}")


def _not_tcp(scheme: str) -> ValueError:
    """unix:, ssl:, systemd:, a host name... A session listens on plain TCP: nothing of these
    is tried, and no file they name is looked at. Only the scheme (16 characters at most, of
    letters, digits and +.-) is repeated."""
    return ValueError(f"{scheme.lower()}: is not allowed: a session listens on plain TCP only, "
                      f"at an IP address (not a host name): {FORMS}")


def _tcp(rest: str, *, ipv6: bool) -> ListenAddress:
    """The parameters after `tcp:` or `tcp6:`: a port (positional or `port=`) and at most an
    `interface=`, separated by unescaped colons (`\\:` is a colon of an IPv6 address)."""
    parts = re.split(r"(?<!\\):", rest)
    port: int | None = None
    interface: str | None = None
    for number, part in enumerate(parts):
        key, sep, raw = part.partition("=")
        if not sep and number == 0:
            port = _port(part)
        elif sep and key == "port" and port is None:
            port = _port(raw)
        elif sep and key == "interface" and interface is None:
            interface = _ip(raw.replace("\\:", ":"), "interface")
        else:
            raise ValueError(f"tcp: takes a port and at most an interface=ADDRESS, nothing "
                             f"else: {FORMS}")
    if port is None:
        raise ValueError(f"tcp: needs a port: {FORMS}")
    if interface is None:
        interface = "::" if ipv6 else _ALL_IPV4
    elif ipv6 and ":" not in interface:
        raise ValueError("tcp6: takes an IPv6 interface")
    return ListenAddress(interface, port)


def _bracketed(text: str) -> ListenAddress:
    match = re.match(r"^\[([^\]]+)\]:([^:]*)$", text)
    if match is None:
        raise ValueError(f"IPv6 as [ADDRESS]:PORT: {FORMS}")
    address = _ip(match.group(1), "the address in brackets")
    if ":" not in address:
        raise ValueError("brackets are for an IPv6 address: write IPv4 as ADDRESS:PORT")
    return ListenAddress(address, _port(match.group(2)))


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{what}: an IP address such as 127.0.0.1 or ::1 (not a host "
                         "name)") from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port(text: str) -> int:
    if not _PORT.match(text) or int(text) > 65535:
        raise ValueError("the port: a number in 0..65535")
    return int(text)
