"""Ports between sessions (perund/session_claims.py): a port recorded for one remembered session
is no other's, whatever the order they open in; the node's own ports are no session's; and the
refusal is not one the reopening tries again (perund/reopening.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock

from perund.errors import InvalidConfig, PortInUse
from perund.listen_address import ListenAddress, parse_listen_address
from perund.node_state import RememberedSession, read_sessions, write_sessions
from perund.reopening import Reopener
from perund.session_claims import node_ports, refuse_claimed_port

ALICE, BOB = "/home/alice/session.yaml", "/home/bob/session.yaml"
BOB_ID = "b0" * 16


def _config(listen: str) -> Any:
    return SimpleNamespace(comm_listen=parse_listen_address(listen))


def _remembered(**listens: str | None) -> dict[str, RememberedSession]:
    paths = {"alice": ALICE, "bob": BOB}
    return {paths[name]: RememberedSession(paths[name], BOB_ID if name == "bob" else "a0" * 16,
                                           listen=None if listen is None
                                           else parse_listen_address(listen))
            for name, listen in listens.items()}


def test_a_port_recorded_for_another_session_is_refused_naming_no_one() -> None:
    remembered = _remembered(alice="tcp:5001:interface=127.0.0.1",
                             bob="tcp:5002:interface=127.0.0.1")
    with pytest.raises(InvalidConfig) as caught:
        refuse_claimed_port(_config("127.0.0.1:5002"), ALICE, remembered, {})
    error = caught.value
    assert error.data["name"] == "comm.listen" and "another session's" in error.message
    assert not isinstance(error, PortInUse)  # not a port that may be let go: no retry
    assert BOB not in str(error.data) + error.message and BOB_ID not in error.message
    assert "bob" not in error.message


def test_whichever_opens_first_the_owner_is_not_refused() -> None:
    """The rule reads only the records: the owner passes while the squatter is open or not,
    and the squatter is refused before and after the owner opens."""
    remembered = _remembered(alice="127.0.0.1:5001", bob="127.0.0.1:5002")
    refuse_claimed_port(_config("127.0.0.1:5002"), BOB, remembered, {})
    with pytest.raises(InvalidConfig):
        refuse_claimed_port(_config("127.0.0.1:5002"), ALICE, remembered, {})
    # Every interface includes the owner's one.
    with pytest.raises(InvalidConfig):
        refuse_claimed_port(_config("tcp:5002"), ALICE, remembered, {})


def test_what_claims_nothing() -> None:
    remembered = _remembered(alice="127.0.0.1:5001", bob=None)  # bob: recorded before
    refuse_claimed_port(_config("127.0.0.1:5001"), ALICE, remembered, {})  # her own port
    refuse_claimed_port(_config("127.0.0.1:5003"), "/home/carol/session.yaml", remembered, {})
    refuse_claimed_port(_config("127.0.0.2:5001"), BOB, remembered, {})  # another interface
    refuse_claimed_port(_config("tcp:0:interface=127.0.0.1"), BOB,
                        _remembered(alice="tcp:0:interface=127.0.0.1"), {})
    with pytest.raises(InvalidConfig):  # a new user too: the port is alice's
        refuse_claimed_port(_config("127.0.0.1:5001"), "/home/carol/session.yaml",
                            remembered, {})


@pytest.mark.parametrize(("port", "owner"), [(50001, "the node's API"),
                                              (8545, "the node's chain")])
def test_the_nodes_own_ports_are_no_sessions(port: int, owner: str) -> None:
    ports = node_ports(api_port=None, api_listen="tcp:50001:interface=127.0.0.1",
                       chain_url="http://127.0.0.1:8545")
    assert ports == {50001: "the node's API", 8545: "the node's chain"}
    with pytest.raises(InvalidConfig) as caught:
        refuse_claimed_port(_config(f"tcp:{port}"), ALICE, {}, ports)
    assert owner in caught.value.message and not isinstance(caught.value, PortInUse)


@pytest.mark.parametrize(("api_port", "api_listen", "chain_url", "ports"), [
    (None, "tcp:0:interface=127.0.0.1", "http://127.0.0.1:0", {}),  # before either listens
    (41234, "tcp:0:interface=127.0.0.1", "http://127.0.0.1:39999", {41234, 39999}),
    (None, "unix:/run/perund/api.sock", "https://rpc.example.org/key", set()),
    (41234, "ssl:41234:privateKey=k.pem", "http://localhost:8545", {41234, 8545}),
    (None, "tcp:50001", "http://[::1]:8545", {50001, 8545}),
    (None, "tcp:50001", "http://10.1.2.3:8545", {50001}),  # another machine's
    (None, "tcp:50001", "http://127.0.0.1", {50001, 80}),
])
def test_node_ports(api_port: int | None, api_listen: str, chain_url: str,
                    ports: set[int]) -> None:
    assert set(node_ports(api_port=api_port, api_listen=api_listen,
                          chain_url=chain_url)) == set(ports)


def test_a_refusal_is_not_tried_again() -> None:
    clock = Clock()
    reopener = Reopener(clock, lambda path: None)  # type: ignore[arg-type,return-value]
    remembered = _remembered(bob="127.0.0.1:5002")
    with pytest.raises(InvalidConfig) as caught:
        refuse_claimed_port(_config("127.0.0.1:5002"), ALICE, remembered, {})
    assert reopener.retry(ALICE, caught.value) is False
    assert reopener.waiting == 0


def test_the_address_is_kept_in_sessions_json(tmp_path: Path) -> None:
    file = tmp_path / "sessions.json"
    sessions = [RememberedSession(ALICE, "a0" * 16,
                                  listen=ListenAddress("::1", 5001)),
                RememberedSession(BOB, BOB_ID)]
    write_sessions(file, sessions)
    document = json.loads(file.read_text())
    assert [entry.get("listen") for entry in document["sessions"]] == [
        "tcp:5001:interface=\\:\\:1", None]
    assert [s.listen for s in read_sessions(file)] == [ListenAddress("::1", 5001), None]


def test_a_listen_record_that_cannot_be_read_is_dropped_not_the_session(tmp_path: Path
                                                                        ) -> None:
    file = tmp_path / "sessions.json"
    file.write_text(json.dumps({"version": 2, "sessions": [
        {"config": ALICE, "id": "a0" * 16, "credentials": [], "listen": "unix:/tmp/x"}]}))
    (alice,) = read_sessions(file)
    assert alice.config == ALICE and alice.listen is None
