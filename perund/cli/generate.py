"""`perund generate DIR`: a ready-to-run node config and its users' sessions (alice and bob
unless `users` names others: `--users alice,ingrid,carol`), each user's contacts naming every
other user.

The sessions' on-chain accounts are funded dev accounts: the embedded dev chain's (no chain
URL), which also hold 1,000,000 of its test token PRN (listed in the config's `chain.assets`),
or, given `--chain-url`, anvil's default-mnemonic accounts; their off-chain (signing) keys are
fresh. Keystores use the light scrypt setting and a password file: these are development
keys, not a way to hold real money.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from perund.chain.anvil import DEV_MNEMONIC
from perund.chain.devchain import DEV_ACCOUNT_COUNT, dev_private_key
from perund.chain.embedded import TEST_TOKEN_DECIMALS, TEST_TOKEN_SYMBOL, dev_token_address
from perund.channel.encoding import Signer
from perund.channel.types import hex_address
from perund.config import parse_node_config
from perund.contacts.book import check_alias
from perund.errors import InvalidArgument, ResourceExists
from perund.keystore.v3 import write_keystore
from perund.new_files import create_whole

USERS = ("alice", "bob")
"""The users written when none are named."""
MAX_USERS = DEV_ACCOUNT_COUNT - 1
"""Most users one setup may have: dev account 0 deploys the contract (or is left to tools on
anvil), each user gets one of the others."""
FIRST_COMM_PORT = 5751
"""The first user's peer port when none are given; the next users take the ports after it."""
DEV_PASSWORD = "perund-dev-password"
_RESERVED_NAMES = ("data", "perund.yaml")
"""What the node's own files are called in the setup folder: no user folder may take them."""


@dataclass(frozen=True)
class GeneratedUser:
    """What was written for one user."""

    name: str
    session_file: Path
    on_chain_address: str
    off_chain_address: str
    comm_port: int


@dataclass(frozen=True)
class Generated:
    """What `generate` wrote."""

    node_config: Path
    users: tuple[GeneratedUser, ...]


def anvil_dev_key(index: int) -> bytes:
    """Private key `index` of anvil's default mnemonic (m/44'/60'/0'/0/index)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return bytes(account.key)


def check_users(users: Sequence[str], comm_ports: Sequence[int] | None) -> tuple[int, ...]:
    """The users' peer ports (`comm_ports`, or consecutive ones from `FIRST_COMM_PORT`);
    InvalidArgument when a name cannot be an alias, names repeat, there are fewer than two or
    more than `MAX_USERS` users, or the ports are not one distinct TCP port per user."""
    if not 2 <= len(users) <= MAX_USERS:
        raise InvalidArgument(f"a setup has 2 to {MAX_USERS} users, not {len(users)}",
                              name="users", value=",".join(users),
                              requirement=f"2..{MAX_USERS} names")
    for name in users:
        try:
            check_alias(name)
        except ValueError as exc:
            raise InvalidArgument(f"user name {name!r}: {exc}", name="users", value=name,
                                  requirement=str(exc)) from None
        if name.lower() in _RESERVED_NAMES:
            raise InvalidArgument(f"user name {name!r} is the name of the node's own file or "
                                  "folder", name="users", value=name,
                                  requirement="not " + " or ".join(_RESERVED_NAMES))
    if len({name.lower() for name in users}) != len(users):
        raise InvalidArgument("user names repeat (letter case aside)", name="users",
                              value=",".join(users), requirement="distinct names")
    ports = tuple(comm_ports) if comm_ports is not None else tuple(
        FIRST_COMM_PORT + i for i in range(len(users)))
    if len(ports) != len(users) or len(set(ports)) != len(ports) or not all(
            type(port) is int and 0 < port < 65536 for port in ports):
        raise InvalidArgument("one distinct TCP port (1..65535) per user", name="comm_ports",
                              value=",".join(str(p) for p in ports),
                              requirement=f"{len(users)} distinct ports")
    return ports


def generate(directory: str | Path, *, chain_url: str = "", chain_id: int | None = None,
             adjudicator: str | None = None, api_port: int = 50001,
             comm_ports: Sequence[int] | None = None,
             users: Sequence[str] = USERS,
             assets: Mapping[str, tuple[str, int]] | None = None) -> Generated:
    """Write the node config and every user's session under `directory`; ResourceExists,
    before anything is written, if any file it would write exists. `comm_ports` are the
    users' peer ports, in order (default: consecutive from `FIRST_COMM_PORT`). `assets`
    (symbol -> (address, decimals)) go into `chain.assets`; on the embedded chain the test
    token PRN is listed too, at the address every new embedded chain gives it."""
    names = tuple(users)
    ports = check_users(names, comm_ports)
    root = Path(directory)
    node_file = root / "perund.yaml"
    # Dev chains mine at once: poll them often so funding and closing feel immediate, and say
    # so (the block time sets how long a closing side waits for the other's transaction).
    chain: dict[str, object] = {"url": chain_url, "poll_interval": "250ms", "block_time": "1s"}
    if chain_id is not None:
        chain["id"] = chain_id
    if adjudicator:
        chain["adjudicator"] = adjudicator
    tokens = {} if chain_url else {
        TEST_TOKEN_SYMBOL: {"address": hex_address(dev_token_address()),
                            "decimals": TEST_TOKEN_DECIMALS}}
    for symbol, (address, decimals) in (assets or {}).items():
        tokens[symbol] = {"address": address, "decimals": decimals}
    if tokens:
        chain["assets"] = tokens
    node = {
        "data_dir": "data",
        "api": {"listen": f"tcp:{api_port}:interface=127.0.0.1"},
        "chain": chain,
        "timeouts": {"response": "60s", "tx": "30s"},
        # Session configs, and the files they name, may come from the users' folders only.
        "sessions": {"config_dirs": list(names)},
    }
    # Refused before anything is written (a mistyped --asset, say): InvalidConfig names it.
    parse_node_config(node, base_dir=root)
    _refuse_existing(_targets(root, names))
    root.mkdir(parents=True, exist_ok=True)
    # Dev account 0 deploys the embedded chain's contract; anvil's account 0 is left to tools.
    on_chain_keys = [
        anvil_dev_key(i + 1) if chain_url else dev_private_key(i + 1) for i in range(len(names))
    ]
    off_chain_keys = [os.urandom(32) for _ in names]
    addresses = [Signer(key).address for key in off_chain_keys]
    written = []
    for i, name in enumerate(names):
        folder = root / name
        (folder / "keystore").mkdir(parents=True, exist_ok=True)
        create_whole(folder / "password", (DEV_PASSWORD + "\n").encode("utf-8"))
        on_chain = write_keystore(folder / "keystore" / "on-chain.json", on_chain_keys[i],
                                  DEV_PASSWORD, light=True)
        off_chain = write_keystore(folder / "keystore" / "off-chain.json", off_chain_keys[i],
                                   DEV_PASSWORD, light=True)
        contacts = {
            other: {
                "off_chain_address": hex_address(addresses[j]),
                "comm_address": f"127.0.0.1:{ports[j]}",
                "comm_type": "tcp",
            }
            for j, other in enumerate(names) if j != i
        }
        _write_yaml(folder / "contacts.yaml", contacts,
                    f"# {name}'s peers: alias -> off-chain address and where it listens\n")
        session = {
            "on_chain": {"address": hex_address(on_chain), "keystore": "keystore/on-chain.json"},
            "off_chain": {"address": hex_address(off_chain),
                          "keystore": "keystore/off-chain.json"},
            "password_file": "password",
            "contacts": "contacts.yaml",
            "comm": {"listen": f"tcp:{ports[i]}:interface=127.0.0.1"},
            "database": "db",
        }
        session_file = folder / "session.yaml"
        _write_yaml(session_file, session,
                    f"# {name}'s session: open it with session_open {{configFile}}\n")
        written.append(GeneratedUser(name, session_file, hex_address(on_chain),
                                     hex_address(off_chain), ports[i]))
    _write_yaml(node_file, node, "# perund node config written by `perund generate`; "
                                 "every key is described in etc/perund.yaml\n")
    return Generated(node_file, tuple(written))


def _targets(root: Path, names: Sequence[str]) -> list[Path]:
    """Every file `generate` writes under `root` for `names`."""
    files = [root / "perund.yaml"]
    for name in names:
        folder = root / name
        files += [folder / "password", folder / "keystore" / "on-chain.json",
                  folder / "keystore" / "off-chain.json", folder / "contacts.yaml",
                  folder / "session.yaml"]
    return files


def _refuse_existing(files: Sequence[Path]) -> None:
    """ResourceExists naming the first of `files` that exists (a dangling link too), before
    anything is written: a refused run must leave no half-written setup behind."""
    existing = [path for path in files if os.path.lexists(path)]
    if existing:
        more = f" (and {len(existing) - 1} more of the files it would write)" \
            if len(existing) > 1 else ""
        raise ResourceExists(f"{existing[0]} exists{more}: nothing was written; generate "
                             "into an empty directory", type="file", id=str(existing[0]))


def _write_yaml(path: Path, document: object, header: str) -> None:
    # Never over an existing file (a user's notes): FileExistsError if one appeared since the
    # check.
    create_whole(path, (header + yaml.safe_dump(document, sort_keys=False)).encode("utf-8"),
                 mode=0o644)
