"""The parser of a session's `comm.listen`: plain TCP addresses only, read by our own code with
no file access (perund/listen_address.py)."""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import TCP4ServerEndpoint

from perund.listen_address import ListenAddress, parse_listen_address


@pytest.mark.parametrize(("text", "address"), [
    ("tcp:5001", ListenAddress("", 5001)),
    ("tcp:0", ListenAddress("", 0)),
    ("tcp:65535", ListenAddress("", 65535)),
    ("tcp:5001:interface=127.0.0.1", ListenAddress("127.0.0.1", 5001)),
    ("tcp:port=5001:interface=127.0.0.1", ListenAddress("127.0.0.1", 5001)),
    ("tcp:interface=127.0.0.1:port=5001", ListenAddress("127.0.0.1", 5001)),
    ("tcp:5001:interface=\\:\\:1", ListenAddress("::1", 5001)),
    ("tcp6:5001", ListenAddress("::", 5001)),
    ("tcp6:5001:interface=\\:\\:1", ListenAddress("::1", 5001)),
    ("TCP:5001", ListenAddress("", 5001)),
    ("127.0.0.1:5001", ListenAddress("127.0.0.1", 5001)),
    ("0.0.0.0:5001", ListenAddress("0.0.0.0", 5001)),
    ("[::1]:5001", ListenAddress("::1", 5001)),
    ("[2001:DB8::7]:5001", ListenAddress("2001:db8::7", 5001)),
    (" tcp:5001 ", ListenAddress("", 5001)),
])
def test_accepted_forms(text: str, address: ListenAddress) -> None:
    parsed = parse_listen_address(text)
    assert parsed == address
    assert parse_listen_address(str(parsed)) == parsed  # the canonical form reads back


@pytest.mark.parametrize(("value", "says"), [
    ("unix:/tmp/perund.sock", "unix: is not allowed"),
    ("unix:/var/lib/perund/sessions.json.tmp:mode=666", "unix: is not allowed"),
    ("ssl:5001:privateKey=/dev/zero:interface=127.0.0.1", "ssl: is not allowed"),
    ("ssl:5001", "ssl: is not allowed"),
    ("systemd:domain=INET:index=0", "systemd: is not allowed"),
    ("tls:127.0.0.1:5001", "tls: is not allowed"),
    ("/tmp/perund.sock", "not a TCP listening address"),
    ("./sessions.json.tmp", "not a TCP listening address"),
    ("tcp:99999", "0..65535"),
    ("tcp:" + "9" * 5000, "not a TCP listening address"),  # too long to be one
    ("ssl:5001:privateKey=/" + "x" * 300 + "/key.pem", "ssl: is not allowed"),  # long, ssl:
    ("unix:/tmp/a\x00b", "unix: is not allowed"),
    ("tcp:1" + "0" * 30, "0..65535"),
    ("127.0.0.1:70000", "0..65535"),
    ("tcp:-1", "0..65535"),
    ("tcp:", "0..65535"),
    ("tcp:port=x", "0..65535"),
    ("tcp:5001:backlog=50", "nothing else"),
    ("tcp:5001:interface=127.0.0.1:interface=127.0.0.2", "nothing else"),
    ("tcp:5001:port=5002", "nothing else"),
    ("tcp:interface=127.0.0.1", "needs a port"),
    ("tcp:5001:interface=localhost", "not a host name"),
    ("tcp:5001:interface=", "an IP address"),
    ("tcp6:5001:interface=127.0.0.1", "an IPv6 interface"),
    ("localhost:5001", "not a host name"),
    ("[127.0.0.1]:5001", "brackets are for an IPv6 address"),
    ("[::1]5001", "[ADDRESS]:PORT"),
    ("::1:5001", "not a TCP listening address"),
    ("garbage", "not a TCP listening address"),
    ("5001", "not a TCP listening address"),
    ("tcp:5001\n:interface=127.0.0.1", "not a TCP listening address"),
    ("", "a TCP listening address"),
    ("   ", "a TCP listening address"),
    (5001, "a TCP listening address"),
    (None, "a TCP listening address"),
    (["tcp:5001"], "a TCP listening address"),
])
def test_refused_forms(value: object, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_listen_address(value)
    assert says in str(caught.value)
    # The message repeats nothing of the value but at most a short scheme name: no path.
    assert "/tmp" not in str(caught.value) and "/dev" not in str(caught.value)
    assert "/var" not in str(caught.value) and "json" not in str(caught.value)


def test_the_endpoint_is_made_without_parsing_a_string() -> None:
    endpoint = ListenAddress("127.0.0.1", 5001).server_endpoint(reactor=None)
    assert isinstance(endpoint, TCP4ServerEndpoint)
    assert (endpoint._interface, endpoint._port) == ("127.0.0.1", 5001)


@pytest.mark.parametrize(("one", "other", "overlap"), [
    ("127.0.0.1:5001", "127.0.0.1:5001", True),
    ("127.0.0.1:5001", "tcp:5001", True),           # every interface takes 127.0.0.1's too
    ("tcp:5001", "[::1]:5001", True),
    ("[::]:5001", "127.0.0.1:5001", True),          # a dual-stack :: takes IPv4 as well
    ("0.0.0.0:5001", "10.0.0.1:5001", True),
    ("127.0.0.1:5001", "127.0.0.2:5001", False),
    ("127.0.0.1:5001", "127.0.0.1:5002", False),
    ("tcp:0", "tcp:0", False),                      # any free port claims nothing
    ("127.0.0.1:0", "127.0.0.1:0", False),
])
def test_overlaps(one: str, other: str, overlap: bool) -> None:
    first, second = parse_listen_address(one), parse_listen_address(other)
    assert first.overlaps(second) is overlap
    assert second.overlaps(first) is overlap
