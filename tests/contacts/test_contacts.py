"""Contacts: the YAML provider, run-time additions and their persistence, the resolver."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent

from perund.channel.types import Address, hex_address, to_address
from perund.contacts import (
    Contact,
    ContactBook,
    DictContactStore,
    check_alias,
    load_contacts_file,
    parse_comm_address,
    parse_contacts,
)
from perund.contacts.strict_yaml import load_yaml
from perund.errors import InvalidArgument, InvalidConfig, ResourceExists, ResourceNotFound

BOB = to_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
CAROL = to_address("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")
DAVE = to_address("0x90F79bf6EB2c4f870365E785982E1f101E93b906")
ME = to_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")

GOOD_FILE = f"""\
# unquoted addresses are fine: long hex stays text
bob:
  off_chain_address: {hex_address(BOB)}
  comm_address: 127.0.0.1:5002
  comm_type: tcp
carol:
  off_chain_address: "{hex_address(CAROL).lower()}"
  comm_address: "Peer-1.Example.ORG:40000"
dave_v6:
  off_chain_address: "{hex_address(DAVE)}"
  comm_address: "[::1]:5003"
"""


def _problems(text: str, own: Address | None = ME) -> dict[str, str]:
    raw, duplicates = load_yaml(text)
    with pytest.raises(InvalidConfig) as caught:
        parse_contacts(raw, own_address=own, duplicates=duplicates)
    assert caught.value.code == 205
    found: dict[str, str] = {}
    for problem in caught.value.data["problems"]:
        found.setdefault(problem["name"], problem["requirement"])
    return found


def test_good_file(tmp_path: Path) -> None:
    path = tmp_path / "contacts.yaml"
    path.write_text(GOOD_FILE)
    contacts = {c.alias: c for c in load_contacts_file(path, own_address=ME)}
    assert contacts["bob"] == Contact("bob", BOB, "127.0.0.1", 5002, "tcp")
    assert contacts["carol"].host == "peer-1.example.org"  # comm_type defaults to tcp
    assert contacts["carol"].comm_type == "tcp"
    assert contacts["dave_v6"].comm_address == "[::1]:5003"
    assert contacts["bob"].endpoint == "tcp:host=127.0.0.1:port=5002"
    assert contacts["dave_v6"].endpoint == "tcp:host=\\:\\:1:port=5003"
    assert contacts["bob"].to_record() == {"off_chain_address": hex_address(BOB),
                                           "comm_address": "127.0.0.1:5002", "comm_type": "tcp"}


def test_endpoint_strings_parse_back_in_twisted() -> None:
    for host, port in (("127.0.0.1", 1), ("peer.example.org", 65535), ("::1", 5003),
                       ("fe80::1:2", 80)):
        endpoint = clientFromString(reactor, Contact("x", BOB, host, port).endpoint)
        assert (endpoint._host, endpoint._port) == (host, port)


@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_comm_address_round_trip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                 port: int) -> None:
    text = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    host, parsed_port = parse_comm_address(text)
    assert (ipaddress.ip_address(host), parsed_port) == (ip, port)
    contact = Contact("x", BOB, host, parsed_port)
    assert parse_comm_address(contact.comm_address) == (host, port)
    endpoint = clientFromString(reactor, contact.endpoint)
    assert (ipaddress.ip_address(endpoint._host), endpoint._port) == (ip, port)


@pytest.mark.parametrize("text", [
    "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+80",
    "127.0.0.1:8O", ":5000", "::1:5000", "[::1]", "[::1]5000", "[127.0.0.1]:5000",
    "[::g]:5000", "999.1.1.1:5000", "1.2.3:5000", "-bad.example:5000", "a..b:5000",
    "host_name:5000", "tcp:host=x:port=1", "host name:5000", "", "a" * 64 + ".org:5000",
    "http://127.0.0.1:5000",
])
def test_bad_comm_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_comm_address(text)


def test_a_url_as_comm_address_is_named_as_one() -> None:
    with pytest.raises(ValueError, match="without a scheme"):
        parse_comm_address("http://127.0.0.1:5000")


def test_comm_address_not_a_string() -> None:
    with pytest.raises(ValueError):
        parse_comm_address(5000)


@pytest.mark.parametrize("alias", ["self", "Self", "SELF", "", ".hidden", "-x", "a b", "a/b",
                                   "x" * 65, 123, True, None, "0x" + "ab" * 20, "ümlaut"])
def test_bad_aliases(alias: object) -> None:
    with pytest.raises(ValueError):
        check_alias(alias)


@pytest.mark.parametrize("alias", ["bob", "Bob_2", "a", "x" * 64, "shop.example", "0xbob",
                                   "self-service", "myself"])
def test_good_aliases(alias: str) -> None:
    assert check_alias(alias) == alias


def test_every_problem_of_a_file_at_once() -> None:
    text = f"""\
self:
  off_chain_address: "{hex_address(DAVE)}"
  comm_address: "127.0.0.1:1"
bob:
  off_chain_address: "{hex_address(BOB)}"
  comm_address: "127.0.0.1:1"
bob:
  off_chain_address: "{hex_address(BOB)}"
  comm_address: "127.0.0.1:2"
twin:
  off_chain_address: "{hex_address(BOB).lower()}"
  comm_address: "127.0.0.1:3"
typo:
  off_chain_address: "{hex_address(CAROL).replace('C', 'c', 1)}"
  comm_address: "127.0.0.1:4"
short:
  off_chain_address: "0x1234"
  comm_address: "127.0.0.1:5"
zero:
  off_chain_address: "0x{'00' * 20}"
  comm_address: "127.0.0.1:5"
me:
  off_chain_address: "{hex_address(ME)}"
  comm_address: "127.0.0.1:6"
noport:
  off_chain_address: "{hex_address(DAVE)}"
  comm_address: "::1"
  comm_type: udp
  colour: blue
missing: {{}}
listy: [1, 2]
123:
  off_chain_address: "{hex_address(DAVE)}"
  comm_address: "127.0.0.1:7"
yes:
  off_chain_address: "{hex_address(DAVE)}"
  comm_address: "http://127.0.0.1:7"
repeat:
  off_chain_address: "{hex_address(DAVE)}"
  comm_address: "127.0.0.1:8"
  comm_address: "127.0.0.1:9"
"""
    found = _problems(text)
    assert set(found) == {
        "self", "bob", "twin.off_chain_address", "typo.off_chain_address",
        "short.off_chain_address", "zero.off_chain_address", "me.off_chain_address",
        "noport.comm_address", "noport.comm_type", "noport.colour",
        "missing.off_chain_address", "missing.comm_address", "listy", "123", "True",
        "comm_address",
    }
    assert "reserved" in found["self"]
    assert found["bob"] == "alias defined twice (lines 4 and 7)"
    assert found["twin.off_chain_address"] == "the same address as contact 'bob'"
    assert "checksum" in found["typo.off_chain_address"]
    assert "20-byte" in found["short.off_chain_address"]
    assert "zero address" in found["zero.off_chain_address"]
    assert "own off-chain address" in found["me.off_chain_address"]
    assert "brackets" in found["noport.comm_address"]
    assert found["noport.comm_type"] == "one of tcp"
    assert found["noport.colour"] == "unknown key"
    assert found["missing.comm_address"] == "required"
    assert "quote it" in found["123"] and "read this unquoted key as an integer" in found["123"]
    assert "unquoted yes/no/on/off/true/false as True or False" in found["True"]
    assert found["comm_address"] == "key defined twice in one contact (lines 40 and 41)"


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert parse_contacts(None) == []
    assert parse_contacts({}) == []
    with pytest.raises(InvalidConfig, match="a mapping of alias to contact"):
        parse_contacts(["bob"])


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as caught:
        load_contacts_file(tmp_path / "absent.yaml")
    assert caught.value.data["name"] == "contacts"
    broken = tmp_path / "broken.yaml"
    broken.write_text("bob: [unclosed\n")
    with pytest.raises(InvalidConfig, match="not valid YAML"):
        load_contacts_file(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("self: {}\n")
    with pytest.raises(InvalidConfig) as caught:
        load_contacts_file(bad)
    assert str(bad) in caught.value.message
    assert caught.value.data["problems"][0]["name"] == "self"


# --- the book -----------------------------------------------------------------------------


def _book(tmp_path: Path, store: DictContactStore | None = None) -> ContactBook:
    path = tmp_path / "contacts.yaml"
    path.write_text(GOOD_FILE)
    return ContactBook.load(path, store=store or DictContactStore(), own_address=ME)


def test_lookups(tmp_path: Path) -> None:
    book = _book(tmp_path)
    assert len(book) == 3
    assert [c.alias for c in book.list()] == ["bob", "carol", "dave_v6"]
    assert book.by_alias("bob").off_chain_address == BOB
    assert book.by_address(CAROL) is not None and book.by_address(CAROL).alias == "carol"
    assert book.by_address(ME) is None
    assert book.resolve("carol").off_chain_address == CAROL
    assert book.resolve(hex_address(DAVE).lower()).alias == "dave_v6"
    assert book.resolve(hex_address(DAVE)).alias == "dave_v6"  # its checksum
    assert book.resolve("0x" + hex_address(DAVE)[2:].upper()).alias == "dave_v6"
    wrong = hex_address(DAVE)[:-1] + ("A" if hex_address(DAVE)[-1].islower() else "a")
    if wrong[2:] != wrong[2:].lower() and wrong[2:] != wrong[2:].upper():
        with pytest.raises(InvalidArgument, match="not its EIP-55 checksum"):
            book.resolve(wrong)
    assert book.knows(BOB) and not book.knows(ME)
    assert book.endpoint(BOB) == "tcp:host=127.0.0.1:port=5002"
    assert book.endpoint(ME) is None
    with pytest.raises(ResourceNotFound) as caught:
        book.by_alias("self")
    assert caught.value.code == 201
    assert caught.value.data == {"type": "peer", "id": "self"}
    with pytest.raises(ResourceNotFound):
        book.resolve("0x" + "44" * 20)


def test_a_refused_address_names_the_field_that_held_it(tmp_path: Path) -> None:
    book = _book(tmp_path)
    for field in ("peer", "via", "payee"):
        with pytest.raises(InvalidArgument, match="zero address") as caught:
            book.resolve("0x" + "00" * 20, field)
        assert caught.value.data["name"] == field


def test_add_persists_and_survives_a_reopen(tmp_path: Path) -> None:
    store = DictContactStore()
    book = _book(tmp_path, store)
    erin = "0x" + "ee" * 20
    added = book.add("erin", erin, "10.0.0.5:7000")
    assert added.off_chain_address == to_address(erin)
    assert book.by_alias("erin") == added
    assert book.endpoint(to_address(erin)) == "tcp:host=10.0.0.5:port=7000"
    assert store.records == {"erin": {"off_chain_address": hex_address(to_address(erin)),
                                      "comm_address": "10.0.0.5:7000", "comm_type": "tcp"}}
    reopened = _book(tmp_path, DictContactStore(store.contacts()))
    assert reopened.by_alias("erin") == added
    assert len(reopened) == 4


def test_add_refuses_duplicates(tmp_path: Path) -> None:
    store = DictContactStore()
    book = _book(tmp_path, store)
    for alias, address in (("bob", "0x" + "ee" * 20), ("bobby", hex_address(BOB).lower())):
        with pytest.raises(ResourceExists) as caught:
            book.add(alias, address, "127.0.0.1:9")
        assert caught.value.code == 202
        assert caught.value.data["type"] == "peer"
    assert store.records == {}
    assert len(book) == 3


def test_aliases_are_one_in_any_letter_case(tmp_path: Path) -> None:
    store = DictContactStore()
    book = _book(tmp_path, store)
    assert book.by_alias("BOB") == book.by_alias("bob")
    assert book.resolve("Dave_V6").alias == "dave_v6"
    with pytest.raises(ResourceExists, match="a contact named 'bob' exists"):
        book.add("Bob", "0x" + "ee" * 20, "127.0.0.1:9")
    assert store.records == {}
    # A store from before the rule, holding a twin of a file's contact: the file wins.
    stored = DictContactStore({"CAROL": {"off_chain_address": "0x" + "ee" * 20,
                                         "comm_address": "127.0.0.1:9", "comm_type": "tcp"}})
    reopened = _book(tmp_path, stored)
    assert reopened.by_alias("carol").off_chain_address == CAROL and len(reopened) == 3
    found = _problems(GOOD_FILE + f"""Carol:
  off_chain_address: "{hex_address(ME).replace(hex_address(ME)[2:4], "77")}"
  comm_address: 127.0.0.1:9
""", own=None)
    assert found == {"Carol": "the alias 'carol' in another letter case"}


def test_add_stops_at_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from perund.contacts import book as book_module
    from perund.errors import FailedPrecondition

    monkeypatch.setattr(book_module, "MAX_CONTACTS", 5)
    store = DictContactStore()
    book = _book(tmp_path, store)  # 3 from its file
    book.add("erin", "0x" + "ee" * 20, "10.0.0.5:7000")
    book.add("finn", "0x" + "ef" * 20, "10.0.0.6:7000")
    with pytest.raises(FailedPrecondition, match="has 5 contacts, the most one may have"):
        book.add("gus", "0x" + "ab" * 20, "10.0.0.7:7000")
    assert len(book) == 5 and set(store.records) == {"erin", "finn"}


@pytest.mark.parametrize(("args", "name"), [
    (("self", "0x" + "ee" * 20, "127.0.0.1:9"), "alias"),
    (("", "0x" + "ee" * 20, "127.0.0.1:9"), "alias"),
    (("erin", "0x" + "ee" * 19, "127.0.0.1:9"), "off_chain_address"),
    (("erin", hex_address(ME), "127.0.0.1:9"), "off_chain_address"),
    (("erin", "0x" + "ee" * 20, "127.0.0.1"), "comm_address"),
    (("e.rin", "0x" + "ee" * 20, "127.0.0.1:99999"), "comm_address"),
    (("erin", "0x" + "ee" * 20, "127.0.0.1:9", "udp"), "comm_type"),
])
def test_add_validates(tmp_path: Path, args: tuple[str, ...], name: str) -> None:
    store = DictContactStore()
    book = _book(tmp_path, store)
    with pytest.raises(InvalidArgument) as caught:
        book.add(*args)
    assert caught.value.code == 203
    assert caught.value.data["name"] == name
    assert caught.value.data["requirement"]
    assert store.records == {}


def test_stored_contacts_that_conflict_or_rot(tmp_path: Path,
                                              logs: list[dict[str, Any]]) -> None:
    store = DictContactStore({
        # Since added to the file verbatim: merged silently.
        "bob": {"off_chain_address": hex_address(BOB), "comm_address": "127.0.0.1:5002",
                "comm_type": "tcp"},
        # The file now has another "carol": the file wins.
        "carol": {"off_chain_address": "0x" + "ab" * 20, "comm_address": "127.0.0.1:1",
                  "comm_type": "tcp"},
        # Another alias for a file contact's address: the file wins.
        "bob2": {"off_chain_address": hex_address(BOB), "comm_address": "127.0.0.1:1",
                 "comm_type": "tcp"},
        "broken": {"off_chain_address": "nonsense", "comm_address": "127.0.0.1:1",
                   "comm_type": "tcp"},
        "self": {"off_chain_address": "0x" + "cd" * 20, "comm_address": "127.0.0.1:1",
                 "comm_type": "tcp"},
        "fine": {"off_chain_address": "0x" + "ef" * 20, "comm_address": "127.0.0.1:1",
                 "comm_type": "tcp"},
    })
    book = _book(tmp_path, store)
    assert [c.alias for c in book.list()] == ["bob", "carol", "dave_v6", "fine"]
    assert book.by_alias("carol").off_chain_address == CAROL
    warned = " ".join(formatEvent(e) for e in logs)
    for alias in ("carol", "bob2", "broken", "self"):
        assert f"stored contact {alias} " in warned
    assert "stored contact bob " not in warned


def test_book_without_a_file() -> None:
    book = ContactBook.load(None, store=DictContactStore())
    assert book.list() == []
    book.add("bob", hex_address(BOB), "localhost:5002")
    assert book.endpoint(BOB) == "tcp:host=localhost:port=5002"
    # How messages name a peer: a contact by alias and address, a stranger by address.
    assert book.describe(BOB) == f"bob ({hex_address(BOB)})"
    assert book.describe(CAROL) == hex_address(CAROL)


class _Accepting(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.append(self)  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_resolver_endpoint_reaches_a_real_listener() -> None:
    server_factory = Factory.forProtocol(_Accepting)
    server_factory.connected = []  # type: ignore[attr-defined]
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
    try:
        book = ContactBook(store=DictContactStore())
        book.add("bob", hex_address(BOB), f"127.0.0.1:{port.getHost().port}")
        endpoint_string = book.endpoint(BOB)
        assert endpoint_string is not None
        client = await clientFromString(reactor, endpoint_string).connect(
            Factory.forProtocol(Protocol))
        assert client.transport.getPeer().port == port.getHost().port
        client.transport.loseConnection()
    finally:
        await port.stopListening()
