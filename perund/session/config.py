"""Session configuration (`session.yaml`): read, validated completely, keys unlocked.

One file per user; `session_open` names it. Relative paths in it are relative to the file's own
folder, so a session folder can be moved as a whole. Like the node config (perund/config.py),
every problem of a file is collected before anything fails, and the file is never written.

    on_chain:  {address, keystore, password_file?}   the account that deposits and is paid out
    off_chain: {address, keystore, password_file?}   the key that signs channel states
    password_file: path     (or PERUND_PASSWORD in the node's environment)
    contacts: path          (optional: without it, only peers added at run time)
    comm: {listen: tcp:PORT[:interface=ADDRESS]}     the session's peer listener: plain TCP
                            only (perund.listen_address: never a Twisted endpoint string)
    database: path          the session's store
    confirm_updates: false  (optional) ask the user even before accepting incoming payments
    dispute_after: 24h      (optional) settle on-chain the channels with a peer that has been
                            unreachable this long (default: never; the user closes)
    intermediary: {enabled: false, lock_window: 10s, fee: {ETH: {base: "0", ppm: 0}}}
                            (optional) act as intermediary for virtual channels between our
                            peers: match the two ledger locks (or folds) of each within the
                            window (docs/protocol.md "Virtual channels"), charging the opener
                            the fee per asset (perund.session.fee_config)

Secrets never reach an error or a log: a value under an unknown key that looks like a secret
(`password`, `private_key`, ...) is shown as `<hidden>`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perund.chain.account import Account
from perund.channel.encoding import Signer
from perund.channel.types import Address
from perund.config import parse_duration
from perund.contacts.book import Contact, load_contacts_file, parse_account_address
from perund.contacts.strict_yaml import read_yaml_file
from perund.errors import InvalidConfig
from perund.keystore.v3 import read_password, unlock_keystore
from perund.listen_address import ListenAddress, parse_listen_address
from perund.safe_files import FileRules, key_name, os_reason, shown_value, unknown_key
from perund.session.fee_config import FeeSetting, parse_fee
from perund.storage.store import STORE_FILES

_TOP_KEYS = {"on_chain", "off_chain", "password_file", "contacts", "comm", "database",
             "confirm_updates", "dispute_after", "intermediary"}
_KEY_KEYS = {"address", "keystore", "password_file"}


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One account of the session: its address and the keystore file holding its key."""

    address: Address
    keystore: Path
    password_file: Path | None = None
    """Overrides the session's `password_file` for this key only."""


DEFAULT_LOCK_WINDOW = 10.0


@dataclass(frozen=True, slots=True)
class IntermediaryConfig:
    """Whether the session serves as intermediary for virtual channels between its peers."""

    enabled: bool = False
    lock_window: float = DEFAULT_LOCK_WINDOW
    """Seconds a lock (or fold) from one ledger waits for its match from the other ledger
    before it is refused. It must stay below the peers' wait for an answer
    (`timeouts.response` + `timeouts.peer_request` of their nodes)."""
    fee: tuple[FeeSetting, ...] = ()
    """What the opener of a virtual channel pays us, per currency (resolved against the node's
    currencies when the session opens: `perund.session.fee_config.resolve_fee`)."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """A validated `session.yaml`; paths are absolute or relative to the working directory."""

    path: Path
    on_chain: KeyConfig
    off_chain: KeyConfig
    password_file: Path | None
    contacts: Path | None
    comm_listen: ListenAddress
    database: Path
    confirm_updates: bool = False
    dispute_after: float | None = None
    """Seconds a peer may stay unreachable before its channels are settled on-chain (None:
    never by itself; the user decides with `channel_close`)."""
    intermediary: IntermediaryConfig = IntermediaryConfig()


class SessionKeys:
    """The unlocked raw private keys of a session; its repr never shows them."""

    __slots__ = ("off_chain", "on_chain")

    def __init__(self, off_chain: bytes, on_chain: bytes) -> None:
        self.off_chain = off_chain
        self.on_chain = on_chain

    def signer(self) -> Signer:
        """The off-chain key's signer (signs channel states and handshakes)."""
        return Signer(self.off_chain)

    def account(self) -> Account:
        """The on-chain key's account (signs transactions)."""
        return Account(self.on_chain)

    def __repr__(self) -> str:
        return "SessionKeys(<hidden>)"


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, value: object, requirement: str) -> None:
        """A problem of a known key: its value is shown when it is short text a user typed
        (a mistyped address, a duration), never when the key looks like a secret's."""
        self.items.append({"name": name, "value": shown_value(name, value),
                           "requirement": requirement})

    def unknown(self, name: str, requirement: str = "unknown key") -> None:
        """An unknown key: its name is shown when it looks like a key someone typed (to catch
        typos such as `pasword_file`), its value never (it may be another file's content)."""
        self.items.append({"name": key_name(name), "value": None, "requirement": requirement})

    def fail(self, what: str) -> None:
        if self.items:
            lines = "; ".join(f"{p['name'] or '(top)'}: {p['requirement']}" for p in self.items)
            raise InvalidConfig(f"invalid {what}: {lines}", problems=self.items)


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _take_path(raw: Mapping[str, Any], prefix: str, key: str, base: Path, problems: _Problems,
               rules: FileRules, *, required: bool, must_exist: bool) -> Path | None:
    name = f"{prefix}{key}"
    value = raw.get(key)
    if value is None:
        if required:
            problems.add(name, None, "required")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.add(name, value, "a file path")
        return None
    path = _path(base, value)
    try:
        if not must_exist:
            return rules.resolve_new(path, name)
        resolved = rules.resolve_existing(path, name)
    except InvalidConfig as exc:
        problems.add(name, value, str(exc.data.get("requirement", exc.message)))
        return None
    if not resolved.is_file():
        problems.add(name, value, "not a file")
    return resolved


def _not_a_store_folder(path: Path) -> str | None:
    """Why `path` cannot be the session's store (a folder of its own, made when absent), or
    None. A mistyped path that names a file, or a folder of other files (the keystores'),
    would otherwise fail at open or mix the store's files with them."""
    if not path.exists():
        return None
    if not path.is_dir():
        return "a file, not a folder: the store is a folder of its own (made when absent)"
    try:
        names = {entry.name for entry in os.scandir(path)}
    except OSError as exc:
        return f"cannot read the folder ({os_reason(exc)})"
    if names and not names & STORE_FILES:
        return "a folder of other files, not a store: give the store a folder of its own"
    return None


def _unknown(raw: Mapping[str, Any], prefix: str, known: set[str], problems: _Problems) -> None:
    for key in raw:
        if key not in known:
            problems.unknown(f"{prefix}{key}", unknown_key(key, known))


def _key_section(raw: Mapping[str, Any], key: str, base: Path, problems: _Problems,
                 rules: FileRules) -> KeyConfig | None:
    section = raw.get(key)
    if section is None:
        problems.add(key, None, "required: a mapping with address and keystore")
        return None
    if not isinstance(section, Mapping):
        problems.add(key, section, "a mapping with address and keystore")
        return None
    prefix = f"{key}."
    _unknown(section, prefix, _KEY_KEYS, problems)
    address: Address | None = None
    if section.get("address") is None:
        problems.add(f"{prefix}address", None, "required")
    else:
        try:
            address = parse_account_address(section["address"])
        except ValueError as exc:
            problems.add(f"{prefix}address", section["address"], str(exc))
    keystore = _take_path(section, prefix, "keystore", base, problems, rules, required=True,
                          must_exist=True)
    password_file = _take_path(section, prefix, "password_file", base, problems, rules,
                               required=False, must_exist=True)
    if address is None or keystore is None:
        return None
    return KeyConfig(address=address, keystore=keystore, password_file=password_file)


def parse_session_config(raw: object, path: Path, duplicates: list[Any] | None = None,
                         rules: FileRules | None = None) -> SessionConfig:
    """Validate a parsed session document read from `path`; one InvalidConfig lists every
    problem. Files named in it must exist, in the folders `rules` allow (the store's folder
    too); keystores are not read yet (see `unlock`)."""
    rules = rules or FileRules()
    problems = _Problems()
    for dup in duplicates or ():
        problems.add(str(dup.key), None,
                     f"defined twice (lines {dup.first_line} and {dup.line})")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        # Nothing of it is shown: a file that is not a mapping may be anything (a password).
        raise InvalidConfig(f"invalid session config {path}: not a mapping of keys",
                            problems=[{"name": "", "value": None,
                                       "requirement": "a mapping of keys"}])
    base = path.parent
    _unknown(raw, "", _TOP_KEYS, problems)
    on_chain = _key_section(raw, "on_chain", base, problems, rules)
    off_chain = _key_section(raw, "off_chain", base, problems, rules)
    password_file = _take_path(raw, "", "password_file", base, problems, rules, required=False,
                               must_exist=True)
    contacts = _take_path(raw, "", "contacts", base, problems, rules, required=False,
                          must_exist=True)
    database = _take_path(raw, "", "database", base, problems, rules, required=True,
                          must_exist=False)
    if database is not None:
        unfit = _not_a_store_folder(database)
        if unfit is not None:
            problems.add("database", raw.get("database"), unfit)
    comm = raw.get("comm")
    listen: ListenAddress | None = None
    if comm is None:
        problems.add("comm.listen", None, "required: the TCP address of the peer listener")
    elif not isinstance(comm, Mapping):
        problems.add("comm", comm, "a mapping with listen")
    else:
        _unknown(comm, "comm.", {"listen"}, problems)
        if comm.get("listen") is None:
            problems.add("comm.listen", None, "required: the TCP address of the peer listener")
        else:
            try:
                # Our own parser, never Twisted's: it reads no file and makes no socket of a
                # kind the node did not choose (perund/listen_address.py).
                listen = parse_listen_address(comm["listen"])
            except ValueError as exc:
                problems.add("comm.listen", comm["listen"], str(exc))
    confirm = raw.get("confirm_updates", False)
    if not isinstance(confirm, bool):
        problems.add("confirm_updates", confirm, "true or false")
        confirm = False
    dispute_after: float | None = None
    if raw.get("dispute_after") is not None:
        try:
            dispute_after = parse_duration(raw["dispute_after"])
            if dispute_after <= 0:
                raise ValueError("a duration above zero")
        except ValueError as exc:
            problems.add("dispute_after", raw["dispute_after"], str(exc))
            dispute_after = None
    intermediary = _intermediary(raw.get("intermediary"), problems)
    problems.fail(f"session config {path}")
    assert on_chain is not None and off_chain is not None  # else a problem was recorded
    assert database is not None and listen is not None
    return SessionConfig(path=path, on_chain=on_chain, off_chain=off_chain,
                         password_file=password_file, contacts=contacts, comm_listen=listen,
                         database=database, confirm_updates=confirm,
                         dispute_after=dispute_after, intermediary=intermediary)


def _intermediary(section: object, problems: _Problems) -> IntermediaryConfig:
    if section is None:
        return IntermediaryConfig()
    if not isinstance(section, Mapping):
        problems.add("intermediary", section, "a mapping with enabled, lock_window and fee")
        return IntermediaryConfig()
    _unknown(section, "intermediary.", {"enabled", "lock_window", "fee"}, problems)
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        problems.add("intermediary.enabled", enabled, "true or false")
        enabled = False
    window = DEFAULT_LOCK_WINDOW
    if section.get("lock_window") is not None:
        try:
            window = parse_duration(section["lock_window"])
            if not 0 < window <= 600:
                raise ValueError("a duration above zero and at most 10 minutes")
        except ValueError as exc:
            problems.add("intermediary.lock_window", section["lock_window"], str(exc))
    return IntermediaryConfig(enabled, window, parse_fee(section.get("fee"), problems.add))


def load_session_config(path: str | Path, rules: FileRules | None = None) -> SessionConfig:
    """Read and validate `session.yaml` under `rules` (blocking file reads: the node calls it
    off the reactor thread); every problem in one InvalidConfig."""
    file = Path(path).expanduser()
    raw, duplicates = read_yaml_file(file, what="session config", field="configFile",
                                     rules=rules)
    return parse_session_config(raw, file.absolute(), duplicates,
                                None if rules is None else rules.for_session(file))


def read_session_files(path: str | Path, rules: FileRules | None = None
                       ) -> tuple[SessionConfig, list[Contact]]:
    """The session config and its contacts, read and validated under `rules` (blocking: the
    node runs it off the reactor thread, with a time limit)."""
    config = load_session_config(path, rules)
    contacts = [] if config.contacts is None else load_contacts_file(
        config.contacts, own_address=config.off_chain.address,
        rules=None if rules is None else rules.for_session(config.path))
    return config, contacts


def unlock(config: SessionConfig, environ: Mapping[str, str] | None = None,
           rules: FileRules | None = None) -> SessionKeys:
    """Decrypt both keystores and check each key is the configured address's.

    Every problem (missing or bad file, no password, wrong password, address mismatch) of both
    keys is reported in one InvalidConfig naming the fields; never a password or a key.
    CPU-bound: ~0.7 s per key with geth's standard scrypt, ~10 ms with the light setting.
    """
    env = os.environ if environ is None else environ
    if rules is not None:
        rules = rules.for_session(config.path)
    problems = _Problems()
    keys: dict[str, bytes] = {}
    passwords: dict[Path | None, str] = {}  # one read (and one warning) per file
    for field, key in (("off_chain", config.off_chain), ("on_chain", config.on_chain)):
        password_field = f"{field}.password_file" if key.password_file else "password_file"
        password_file = key.password_file or config.password_file
        try:
            password = passwords.get(password_file)
            if password is None:
                password = passwords[password_file] = read_password(
                    password_file, field=password_field, environ=env, rules=rules)
            keys[field] = unlock_keystore(key.keystore, password, field=f"{field}.keystore",
                                          address=key.address, rules=rules)
        except InvalidConfig as exc:
            problem = (str(exc.data.get("name", field)), exc.data.get("value"),
                       str(exc.data.get("requirement", exc.message)))
            if not any((p["name"], p["requirement"]) == (problem[0], problem[2])
                       for p in problems.items):  # one missing password, reported once
                problems.add(*problem)
    problems.fail("session keys")
    return SessionKeys(off_chain=keys["off_chain"], on_chain=keys["on_chain"])
