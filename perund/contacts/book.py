"""The contacts provider: who a session's peers are and where to reach them.

A contacts file (YAML, read-only for the node) maps an alias to a peer::

    bob:
      off_chain_address: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
      comm_address: "127.0.0.1:5002"
      comm_type: tcp

Peers added at run time go to the session's store (the `ContactStore` protocol) and are merged
with the file's on the next open; the file itself is never written (docs/conventions.md §9).

The alias `self` is reserved for the user and refused as a contact (in any letter case): the
user's own entry is the session itself, so no alias can ever name two parties. For the same reason
a contact may not carry the session's own off-chain address, and an alias may not look like an
address (the API accepts either where a peer is named).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eth_utils.address import is_checksum_address
from twisted.logger import Logger

from perund.channel.types import Address, hex_address, to_address
from perund.contacts.strict_yaml import DuplicateKey, read_yaml_file
from perund.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvalidConfig,
    ResourceExists,
    ResourceNotFound,
)
from perund.safe_files import FileRules, key_name, shown_value

log = Logger(namespace="perund.contacts")

RESERVED_ALIAS = "self"
"""The alias that names the user; never a contact."""

COMM_TYPES = ("tcp",)
"""Transports a contact may use."""

RECORD_KEYS = ("off_chain_address", "comm_address", "comm_type")

MAX_CONTACTS = 10_000
"""Contacts one session may have (those of its contacts file included)."""

_ALIAS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_HEX_ADDRESS = re.compile(r"^0[xX][0-9a-fA-F]{40}$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_ALIAS_RULE = ("1-64 letters, digits, '_', '.', '-' (not starting with '.' or '-'), "
               "not 'self', not an address")


def check_alias(alias: object) -> str:
    """`alias` if it may name a contact; ValueError saying why not."""
    if not isinstance(alias, str):
        raise ValueError(f"an alias is a string of {_ALIAS_RULE} (quote it in YAML)")
    if alias.lower() == RESERVED_ALIAS:
        raise ValueError("'self' is reserved for the session's own user")
    if _HEX_ADDRESS.match(alias):
        raise ValueError("an alias may not look like an address")
    if not _ALIAS.match(alias):
        raise ValueError(f"an alias is {_ALIAS_RULE}")
    return alias


def parse_account_address(value: object) -> Address:
    """An account address from 0x-hex: all lower, all upper, or a valid EIP-55 checksum."""
    if not isinstance(value, str) or not _HEX_ADDRESS.match(value):
        raise ValueError("a 0x-prefixed 20-byte hex address (quote it in YAML)")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise ValueError("its letter case is not its EIP-55 checksum (a typo?); write it all "
                         "in lower case to skip the check")
    address = to_address(value)
    if address == bytes(20):
        raise ValueError("the zero address is nobody's")
    return address


def _check_host(host: str) -> str:
    """A hostname or IPv4 literal, lower-cased; ValueError otherwise."""
    if re.match(r"^[0-9.]+$", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{host!r} is not a valid host name")
    return name.lower()


def parse_comm_address(value: object) -> tuple[str, int]:
    """`(host, port)` from `host:port`, `1.2.3.4:port` or `[ipv6]:port`; ValueError otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError("host:port (IPv6 as [addr]:port)")
    if "://" in value:
        # A URL's scheme: peers speak perund's wire protocol over TCP, not HTTP.
        raise ValueError("host:port without a scheme (peers talk over plain TCP, not a URL)")
    if value.startswith("["):
        match = re.match(r"^\[([^\]]+)\]:([^:]*)$", value)
        if match is None:
            raise ValueError("IPv6 as [addr]:port")
        try:
            host = str(ipaddress.IPv6Address(match.group(1)))
        except ValueError:
            raise ValueError(f"{match.group(1)!r} is not an IPv6 address") from None
        port_text = match.group(2)
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError("host:port: the port is missing")
        if ":" in host:
            raise ValueError("an IPv6 address needs brackets: [addr]:port")
        host = _check_host(host)
    if not _PORT.match(port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not in 1..65535")
    return host, int(port_text)


def _escape(text: str) -> str:
    # Twisted endpoint strings use ':' and '=' as separators; '\' escapes them.
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


@dataclass(frozen=True, slots=True)
class Contact:
    """One peer: its alias, off-chain address and where it listens."""

    alias: str
    off_chain_address: Address
    host: str
    port: int
    comm_type: str = "tcp"

    @property
    def comm_address(self) -> str:
        """`host:port`, with an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The Twisted client endpoint string that reaches this peer."""
        return f"tcp:host={_escape(self.host)}:port={self.port}"

    def to_record(self) -> dict[str, str]:
        """The contact as stored and as shown: the contacts-file fields, addresses checksummed."""
        return {
            "off_chain_address": hex_address(self.off_chain_address),
            "comm_address": self.comm_address,
            "comm_type": self.comm_type,
        }


class ContactStore(Protocol):
    """Where a session keeps the contacts added at run time (the session store implements it).

    `put_contact` may buffer: the caller makes it durable with the store's flush, as for
    channels.
    """

    def put_contact(self, alias: str, record: Mapping[str, str]) -> None:
        """Record `record` (the `Contact.to_record` fields) under `alias`."""

    def contacts(self) -> Mapping[str, Mapping[str, str]]:
        """Every contact recorded: alias to record."""


class DictContactStore:
    """A `ContactStore` in memory, for sessions that need no persistence and for tests."""

    def __init__(self, initial: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.records: dict[str, dict[str, str]] = {
            alias: dict(record) for alias, record in (initial or {}).items()}

    def put_contact(self, alias: str, record: Mapping[str, str]) -> None:
        """Record a contact."""
        self.records[alias] = dict(record)

    def contacts(self) -> Mapping[str, Mapping[str, str]]:
        """Every contact recorded."""
        return {alias: dict(record) for alias, record in self.records.items()}


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, value: object, requirement: str) -> None:
        # Names and values come from the file: only what looks typed by hand is shown.
        parts = name.split(".")
        shown_name = ".".join(key_name(part) for part in parts) if name else name
        self.items.append({"name": shown_name, "value": shown_value(name, value),
                           "requirement": requirement})


def _contact_from(alias: str, record: object, problems: _Problems,
                  own_address: Address | None) -> Contact | None:
    """Validate one entry, adding every problem found; the contact if there were none."""
    before = len(problems.items)
    if not isinstance(record, Mapping):
        problems.add(alias, None,
                     "a mapping with off_chain_address, comm_address and comm_type")
        return None
    for key in record:
        if key not in RECORD_KEYS:
            problems.add(f"{alias}.{key}", None, "unknown key")
    address: Address | None = None
    if "off_chain_address" not in record:
        problems.add(f"{alias}.off_chain_address", None, "required")
    else:
        try:
            address = parse_account_address(record["off_chain_address"])
        except ValueError as exc:
            problems.add(f"{alias}.off_chain_address", record["off_chain_address"], str(exc))
        else:
            if own_address is not None and address == own_address:
                problems.add(f"{alias}.off_chain_address", record["off_chain_address"],
                             "this is the session's own off-chain address ('self')")
    host_port: tuple[str, int] | None = None
    if "comm_address" not in record:
        problems.add(f"{alias}.comm_address", None, "required")
    else:
        try:
            host_port = parse_comm_address(record["comm_address"])
        except ValueError as exc:
            problems.add(f"{alias}.comm_address", record["comm_address"], str(exc))
    comm_type = record.get("comm_type", "tcp")
    if comm_type not in COMM_TYPES:
        problems.add(f"{alias}.comm_type", comm_type, "one of " + ", ".join(COMM_TYPES))
    if len(problems.items) > before or address is None or host_port is None:
        return None
    return Contact(alias, address, host_port[0], host_port[1], str(comm_type))


def _read_as(key: object) -> str:
    """What YAML made of a key that is not a string: an unquoted `yes` or `123` arrives as
    True or 123, a name the user does not see in the file."""
    if isinstance(key, bool):
        return ": YAML reads an unquoted yes/no/on/off/true/false as True or False"
    if key is None:
        return ": YAML reads an empty or unquoted null/~ key as nothing"
    if not isinstance(key, str):
        kinds = {int: "an integer", float: "a number"}
        return f": YAML read this unquoted key as {kinds.get(type(key), type(key).__name__)}"
    return ""


def parse_contacts(raw: object, *, own_address: Address | None = None,
                   duplicates: Iterable[DuplicateKey] = ()) -> list[Contact]:
    """Validate a parsed contacts document; raise one InvalidConfig listing every problem.

    `duplicates` are the repeated keys `strict_yaml.load_yaml` found in the file.
    """
    problems = _Problems()
    for dup in duplicates:
        where = f"(lines {dup.first_line} and {dup.line})"
        if dup.depth == 0:
            problems.add(str(dup.key), None, f"alias defined twice {where}")
        else:
            problems.add(str(dup.key), None, f"key defined twice in one contact {where}")
    contacts: list[Contact] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.add("", None, "a mapping of alias to contact")
        raw = {}
    by_address: dict[Address, str] = {}
    by_folded: dict[str, str] = {}
    for alias, record in raw.items():
        try:
            check_alias(alias)
        except ValueError as exc:
            problems.add(str(alias), alias, str(exc) + _read_as(alias))
            continue
        twin = by_folded.setdefault(alias.lower(), alias)
        if twin != alias:
            problems.add(alias, alias, f"the alias {twin!r} in another letter case")
            continue
        contact = _contact_from(alias, record, problems, own_address)
        if contact is None:
            continue
        other = by_address.get(contact.off_chain_address)
        if other is not None:
            problems.add(f"{alias}.off_chain_address", hex_address(contact.off_chain_address),
                         f"the same address as contact {other!r}")
            continue
        by_address[contact.off_chain_address] = alias
        contacts.append(contact)
    if problems.items:
        lines = "; ".join(f"{p['name'] or '(top)'}: {p['requirement']}" for p in problems.items)
        raise InvalidConfig(f"invalid contacts: {lines}", problems=problems.items)
    return contacts


def load_contacts_file(path: Path, *, own_address: Address | None = None,
                       rules: FileRules | None = None) -> list[Contact]:
    """Read (under `rules`) and validate a contacts file; every problem in one InvalidConfig
    naming the file."""
    raw, duplicates = read_yaml_file(path, what="contacts file", field="contacts", rules=rules)
    try:
        return parse_contacts(raw, own_address=own_address, duplicates=duplicates)
    except InvalidConfig as exc:
        raise InvalidConfig(f"{exc.message} (in {path})", name="contacts", value=str(path),
                            file=str(path), problems=exc.data["problems"]) from None


class ContactBook:
    """A session's peers: the contacts file's plus those added at run time (persisted).

    Lookups by alias and by off-chain address; `endpoint` is the PeerManager's resolver.
    Aliases are unique and looked up regardless of letter case: `Bob` beside `bob` would be
    two peers a reader takes for one.
    """

    def __init__(self, contacts: Iterable[Contact] = (), *, store: ContactStore,
                 own_address: Address | None = None) -> None:
        self._store = store
        self._own = own_address
        self._by_alias: dict[str, Contact] = {}
        self._by_address: dict[Address, Contact] = {}
        for contact in contacts:
            self._index(contact)
        self._restore()

    @classmethod
    def load(cls, path: Path | None, *, store: ContactStore,
             own_address: Address | None = None) -> ContactBook:
        """The book of a contacts file (None: no file) and the store's run-time contacts."""
        contacts = [] if path is None else load_contacts_file(path, own_address=own_address)
        return cls(contacts, store=store, own_address=own_address)

    def _index(self, contact: Contact) -> None:
        twin = self._by_alias.get(contact.alias.lower())
        if twin is not None:
            raise ResourceExists(f"a contact named {twin.alias!r} exists",
                                 type="peer", id=contact.alias)
        other = self._by_address.get(contact.off_chain_address)
        if other is not None:
            raise ResourceExists(
                f"{hex_address(contact.off_chain_address)} is already contact {other.alias!r}",
                type="peer", id=hex_address(contact.off_chain_address))
        self._by_alias[contact.alias.lower()] = contact
        self._by_address[contact.off_chain_address] = contact

    def _restore(self) -> None:
        """Merge the stored run-time contacts; the file wins any conflict (with a warning)."""
        for alias, record in sorted(self._store.contacts().items()):
            problems = _Problems()
            try:
                check_alias(alias)
            except ValueError as exc:
                problems.add(alias, alias, str(exc))
            contact = None if problems.items else _contact_from(alias, record, problems,
                                                                 self._own)
            if contact is None:
                log.warn("stored contact {alias} is unusable and ignored: {problems}",
                         alias=alias, problems=problems.items)
                continue
            if self._by_alias.get(alias.lower()) == contact:
                continue  # the same peer was since written into the contacts file
            try:
                self._index(contact)
            except ResourceExists:
                log.warn("stored contact {alias} conflicts with the contacts file, "
                         "which wins; it is ignored", alias=alias)

    def add(self, alias: str, off_chain_address: str, comm_address: str,
            comm_type: str = "tcp") -> Contact:
        """Add a peer at run time and record it in the store (the caller flushes the store).

        A bad field is `InvalidArgument` (name, value, requirement); an alias or an address
        that is already a contact is `ResourceExists`; past `MAX_CONTACTS`,
        `FailedPrecondition`.
        """
        if len(self) >= MAX_CONTACTS:
            # Each is memory, a store record and a peer admitted as known: a user adding them
            # without end would take the node's memory and its reactor (listing them).
            raise FailedPrecondition(f"this session has {MAX_CONTACTS} contacts, the most "
                                     "one may have")
        try:
            check_alias(alias)
        except ValueError as exc:
            raise InvalidArgument(f"alias: {exc}", name="alias", value=alias,
                                  requirement=str(exc)) from None
        problems = _Problems()
        contact = _contact_from(alias, {"off_chain_address": off_chain_address,
                                        "comm_address": comm_address,
                                        "comm_type": comm_type}, problems, self._own)
        if contact is None:
            first = problems.items[0]
            name = first["name"].rpartition(".")[2]
            raise InvalidArgument(f"{name}: {first['requirement']}", name=name,
                                  value=first["value"], requirement=first["requirement"])
        self._index(contact)
        self._store.put_contact(alias, contact.to_record())
        log.info("contact {alias} added: {address} at {comm_address}", alias=alias,
                 address=hex_address(contact.off_chain_address),
                 comm_address=contact.comm_address)
        return contact

    def by_alias(self, alias: str) -> Contact:
        """The contact named `alias` (in any letter case); ResourceNotFound if there is none."""
        contact = self._by_alias.get(alias.lower())
        if contact is None:
            raise ResourceNotFound(f"no contact named {alias!r}", type="peer", id=alias)
        return contact

    def by_address(self, address: Address) -> Contact | None:
        """The contact with off-chain address `address`, if any."""
        return self._by_address.get(address)

    def resolve(self, peer: str, field: str = "peer") -> Contact:
        """The contact that `peer` names: an alias or a 0x off-chain address. `field` is the
        call's parameter that holds it, which an InvalidArgument names."""
        if _HEX_ADDRESS.match(peer):
            try:
                address = parse_account_address(peer)  # mixed case: a checksum to check
            except ValueError as exc:
                raise InvalidArgument(f"{peer}: {exc}", name=field, value=peer,
                                      requirement="an EIP-55 checksum and not the zero "
                                                  "address") from None
            contact = self._by_address.get(address)
            if contact is None:
                raise ResourceNotFound(f"no contact has address {peer}", type="peer", id=peer)
            return contact
        return self.by_alias(peer)

    def describe(self, address: Address) -> str:
        """`address` as a person reads it in a message: `bob (0xAbC…)` for a contact (its
        alias and checksummed address), the checksummed address alone for a stranger."""
        contact = self._by_address.get(address)
        checksummed = hex_address(address)
        return checksummed if contact is None else f"{contact.alias} ({checksummed})"

    def knows(self, address: Address) -> bool:
        """Whether `address` is a contact (the channel client's `is_contact`)."""
        return address in self._by_address

    def list(self) -> list[Contact]:
        """Every contact, by alias."""
        return [self._by_alias[alias] for alias in sorted(self._by_alias)]

    def endpoint(self, address: Address) -> str | None:
        """The client endpoint string of the peer at `address`, or None if it is unknown.

        This is the PeerManager's resolver, so a contact added at run time is dialled at once.
        """
        contact = self._by_address.get(address)
        return None if contact is None else contact.endpoint

    def __len__(self) -> int:
        return len(self._by_alias)
