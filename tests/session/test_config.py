"""session.yaml: every key, relative paths, all errors at once, unlocking both keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account as EthAccount
from twisted.logger import formatEvent

from perund.channel.types import hex_address, to_address
from perund.contacts import ContactBook, DictContactStore
from perund.errors import InvalidConfig
from perund.keystore import PASSWORD_ENV, write_keystore
from perund.listen_address import ListenAddress
from perund.session.config import load_session_config, parse_session_config, unlock

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple \u00e9"
ON_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
OFF_KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
ON_ADDRESS = to_address(EthAccount.from_key(ON_KEY).address)
OFF_ADDRESS = to_address(EthAccount.from_key(OFF_KEY).address)


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    """A session folder like `perund generate` writes: light keystores, password, contacts."""
    folder = tmp_path / "alice"
    (folder / "keystore").mkdir(parents=True)
    write_keystore(folder / "keystore" / "on-chain.json", ON_KEY, PASSWORD, light=True)
    write_keystore(folder / "keystore" / "off-chain.json", OFF_KEY, PASSWORD, light=True)
    (folder / "password").write_text(PASSWORD + "\n")
    (folder / "password").chmod(0o600)
    (folder / "contacts.yaml").write_text(
        "bob:\n  off_chain_address: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC'\n"
        "  comm_address: 127.0.0.1:5002\n")
    return folder


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "on_chain": {"address": hex_address(ON_ADDRESS), "keystore": "keystore/on-chain.json"},
        "off_chain": {"address": hex_address(OFF_ADDRESS).lower(),
                      "keystore": "keystore/off-chain.json"},
        "password_file": "password",
        "contacts": "contacts.yaml",
        "comm": {"listen": "tcp:0:interface=127.0.0.1"},
        "database": "db",
    }
    document.update(changes)
    return document


def _write(folder: Path, document: dict[str, Any], name: str = "session.yaml") -> Path:
    path = folder / name
    # JSON is YAML: the document is written exactly as built.
    path.write_text(json.dumps(document))
    return path


def _problem_names(exc: InvalidConfig) -> set[str]:
    return {p["name"] for p in exc.data["problems"]}


def test_full_config_with_relative_paths(session_dir: Path) -> None:
    config = load_session_config(_write(session_dir, _document(confirm_updates=True,
                                                               dispute_after="36h")))
    assert config.path == session_dir / "session.yaml"
    assert config.dispute_after == 36 * 3600
    assert config.on_chain.address == ON_ADDRESS
    assert config.off_chain.address == OFF_ADDRESS
    assert config.on_chain.keystore == session_dir / "keystore" / "on-chain.json"
    assert config.password_file == session_dir / "password"
    assert config.contacts == session_dir / "contacts.yaml"
    assert config.database == session_dir / "db"
    assert config.comm_listen == ListenAddress("127.0.0.1", 0)
    assert config.confirm_updates is True


def test_relative_to_the_file_not_the_working_directory(session_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _write(session_dir, _document())
    monkeypatch.chdir(session_dir.parent)
    config = load_session_config(Path("alice") / "session.yaml")
    assert config.database.is_absolute()
    assert config.database == session_dir / "db"


def test_optional_keys(session_dir: Path) -> None:
    document = _document()
    del document["password_file"], document["contacts"]
    config = load_session_config(_write(session_dir, document))
    assert config.password_file is None and config.contacts is None
    assert config.confirm_updates is False
    assert config.dispute_after is None


def test_absolute_paths_stay(session_dir: Path) -> None:
    document = _document(database=str(session_dir.parent / "elsewhere"))
    assert load_session_config(_write(session_dir, document)).database == \
        session_dir.parent / "elsewhere"


def test_every_error_at_once(session_dir: Path) -> None:
    document = _document(
        colour="blue",
        on_chain={"address": "0x12", "keystore": "keystore/absent.json", "extra": 1},
        off_chain="not a mapping",
        password_file="absent-password",
        contacts="keystore",
        comm={"listen": "bogus:1", "port": 5},
        confirm_updates="no",
        dispute_after="soon",
    )
    del document["database"]
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(_write(session_dir, document))
    assert caught.value.code == 205
    assert _problem_names(caught.value) == {
        "colour", "on_chain.address", "on_chain.keystore", "on_chain.extra", "off_chain",
        "password_file", "contacts", "comm.listen", "comm.port", "confirm_updates", "database",
        "dispute_after",
    }
    requirements = {p["name"]: p["requirement"] for p in caught.value.data["problems"]}
    assert requirements["on_chain.keystore"] == "no such file"
    assert requirements["contacts"] == "not a file"
    assert requirements["database"] == "required"
    assert "plain TCP only" in requirements["comm.listen"]


def test_missing_sections() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_session_config(None, Path("/nowhere/session.yaml"))
    assert _problem_names(caught.value) == {"on_chain", "off_chain", "comm.listen", "database"}
    with pytest.raises(InvalidConfig, match="not a mapping"):
        parse_session_config(["on_chain"], Path("/nowhere/session.yaml"))


@pytest.mark.parametrize("listen", ["tcp:70000", "tcp:port=x", "tcp:1:nonsense=2", "", 5001,
                                    "5001", "unix:/tmp/perund.sock", "systemd:domain=INET:index=0",
                                    "ssl:5001:privateKey=key.pem:certKey=key.pem"])
def test_bad_listen_endpoints(session_dir: Path, listen: object) -> None:
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(_write(session_dir, _document(comm={"listen": listen})))
    assert _problem_names(caught.value) == {"comm.listen"}


def test_an_ssl_listen_reads_no_file(session_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twisted's parser read an ssl: endpoint's key while parsing (/dev/zero: the node's
    memory); the session's parser opens nothing, and its error tells nothing of the file."""
    (session_dir / "key.pem").write_text("SECRET-KEY-MATERIAL")
    key = session_dir / "key.pem"
    config = _write(session_dir, _document(
        comm={"listen": f"ssl:5001:privateKey={key}:certKey={key}"}))
    opened: list[str] = []
    real_open = open

    def spy(file: object, *args: object, **kwargs: object) -> object:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", spy)
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(config)
    assert not [name for name in opened if name.endswith("key.pem")]
    assert "SECRET" not in str(caught.value.data) and "SECRET" not in caught.value.message
    assert "ssl: is not allowed" in caught.value.message


@pytest.mark.parametrize(("database", "requirement"), [
    ("password", "a file, not a folder"),
    ("keystore", "a folder of other files, not a store"),
])
def test_a_database_that_cannot_be_a_store_is_refused(session_dir: Path, database: str,
                                                      requirement: str) -> None:
    """A mistyped path naming a file, or the keystores' folder, is refused with the file."""
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(_write(session_dir, _document(database=database)))
    (problem,) = caught.value.data["problems"]
    assert problem["name"] == "database" and problem["requirement"].startswith(requirement)
    assert PASSWORD not in str(caught.value.data)


def test_a_database_may_be_new_empty_or_a_store(session_dir: Path) -> None:
    (session_dir / "empty").mkdir()
    (session_dir / "store").mkdir()
    (session_dir / "store" / "data").write_bytes(b"")
    for database in ("db", "empty", "store"):
        config = load_session_config(_write(session_dir, _document(database=database)))
        assert config.database == session_dir / database


@pytest.mark.parametrize(("listen", "address"), [
    ("tcp:5001", ListenAddress("", 5001)),
    ("tcp:0:interface=127.0.0.1", ListenAddress("127.0.0.1", 0)),
    ("tcp6:5001:interface=\\:\\:1", ListenAddress("::1", 5001)),
    ("127.0.0.1:5001", ListenAddress("127.0.0.1", 5001)),
])
def test_good_listen_endpoints(session_dir: Path, listen: str, address: ListenAddress) -> None:
    config = load_session_config(_write(session_dir, _document(comm={"listen": listen})))
    assert config.comm_listen == address


def test_duplicate_keys_and_bad_yaml(session_dir: Path) -> None:
    path = session_dir / "session.yaml"
    text = yaml.safe_dump(_document()) + "database: other\n"
    first = text.splitlines().index("database: db") + 1
    path.write_text(text)
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(path)
    assert caught.value.data["problems"] == [{
        "name": "database", "value": None,
        "requirement": f"defined twice (lines {first} and {len(text.splitlines())})"}]
    path.write_text("on_chain: [unclosed\n")
    with pytest.raises(InvalidConfig, match="not valid YAML") as caught:
        load_session_config(path)
    assert caught.value.data["name"] == "configFile"
    with pytest.raises(InvalidConfig, match="no such file"):
        load_session_config(session_dir / "absent.yaml")


def test_secret_looking_unknown_keys_are_hidden(session_dir: Path) -> None:
    document = _document(password=PASSWORD, private_key=OFF_KEY.hex())
    document["on_chain"]["passphrase"] = PASSWORD
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(_write(session_dir, document))
    assert _problem_names(caught.value) == {"password", "private_key", "on_chain.passphrase"}
    text = str(caught.value) + json.dumps(caught.value.to_data())
    assert PASSWORD not in text
    assert OFF_KEY.hex() not in text
    assert {p["value"] for p in caught.value.data["problems"]} == {None}  # never shown


# --- unlocking ------------------------------------------------------------------------------


def test_unlock_with_password_file(session_dir: Path, logs: list[dict[str, Any]]) -> None:
    config = load_session_config(_write(session_dir, _document()))
    keys = unlock(config, environ={})
    assert keys.off_chain == OFF_KEY and keys.on_chain == ON_KEY
    assert keys.signer().address == OFF_ADDRESS
    assert keys.account().address == ON_ADDRESS
    assert OFF_KEY.hex() not in repr(keys) and ON_KEY.hex() not in repr(keys)
    texts = [formatEvent(e) for e in logs]
    assert all(PASSWORD not in t and OFF_KEY.hex() not in t for t in texts)


def test_a_shared_password_file_others_may_read_is_one_warning(
        session_dir: Path, logs: list[dict[str, Any]]) -> None:
    config = load_session_config(_write(session_dir, _document()))
    assert config.password_file is not None
    config.password_file.chmod(0o644)
    unlock(config, environ={})
    said = [formatEvent(e) for e in logs if "can be read by other users" in formatEvent(e)]
    assert len(said) == 1  # both keys use it: read once (found by an audit: said twice)


def test_unlock_with_environment(session_dir: Path) -> None:
    document = _document()
    del document["password_file"]
    config = load_session_config(_write(session_dir, document))
    keys = unlock(config, environ={PASSWORD_ENV: PASSWORD})
    assert (keys.off_chain, keys.on_chain) == (OFF_KEY, ON_KEY)
    with pytest.raises(InvalidConfig) as caught:
        unlock(config, environ={})
    # One missing password is one problem, not one per key.
    assert [p["name"] for p in caught.value.data["problems"]] == ["password_file"]


def test_password_file_wins_over_environment(session_dir: Path) -> None:
    config = load_session_config(_write(session_dir, _document()))
    keys = unlock(config, environ={PASSWORD_ENV: "something else"})
    assert keys.off_chain == OFF_KEY


def test_per_key_password_file(session_dir: Path) -> None:
    other = "another one"
    write_keystore(session_dir / "keystore" / "on-chain-2.json", ON_KEY, other, light=True)
    (session_dir / "on-password").write_text(other + "\r\n")
    document = _document(on_chain={"address": hex_address(ON_ADDRESS),
                                   "keystore": "keystore/on-chain-2.json",
                                   "password_file": "on-password"})
    keys = unlock(load_session_config(_write(session_dir, document)), environ={})
    assert (keys.off_chain, keys.on_chain) == (OFF_KEY, ON_KEY)


def test_wrong_password_names_both_keys_and_hides_it(session_dir: Path,
                                                     logs: list[dict[str, Any]]) -> None:
    wrong = "wrong-" + PASSWORD
    (session_dir / "password").write_text(wrong + "\n")
    config = load_session_config(_write(session_dir, _document()))
    with pytest.raises(InvalidConfig) as caught:
        unlock(config, environ={PASSWORD_ENV: PASSWORD})
    assert _problem_names(caught.value) == {"off_chain.keystore", "on_chain.keystore"}
    assert all("wrong password" in p["requirement"] for p in caught.value.data["problems"])
    texts = [str(caught.value), json.dumps(caught.value.to_data())]
    texts += [formatEvent(e) for e in logs]
    for text in texts:
        assert wrong not in text and PASSWORD not in text


def test_swapped_addresses_are_a_mismatch(session_dir: Path) -> None:
    document = _document()
    document["on_chain"]["address"], document["off_chain"]["address"] = \
        document["off_chain"]["address"], document["on_chain"]["address"]
    config = load_session_config(_write(session_dir, document))
    with pytest.raises(InvalidConfig) as caught:
        unlock(config, environ={})
    assert _problem_names(caught.value) == {"off_chain.keystore", "on_chain.keystore"}
    assert all("address mismatch" in p["requirement"] for p in caught.value.data["problems"])


def test_keystore_removed_after_load(session_dir: Path) -> None:
    config = load_session_config(_write(session_dir, _document()))
    (session_dir / "keystore" / "on-chain.json").unlink()
    with pytest.raises(InvalidConfig) as caught:
        unlock(config, environ={})
    assert _problem_names(caught.value) == {"on_chain.keystore"}


# --- the documented examples ------------------------------------------------------------------


def _doc_block(marker: str) -> str:
    text = (REPO / "docs" / "configuration.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    matching = [b for b in blocks if b.startswith(marker)]
    assert len(matching) == 1
    return matching[0]


def test_documented_examples_load(tmp_path: Path) -> None:
    (tmp_path / "keystore").mkdir()
    for name in ("on-chain.json", "off-chain.json"):
        (tmp_path / "keystore" / name).write_text("{}")
    (tmp_path / "password").write_text("x\n")
    (tmp_path / "contacts.yaml").write_text(_doc_block("# contacts.yaml"))
    (tmp_path / "session.yaml").write_text(_doc_block("# session.yaml"))
    config = load_session_config(tmp_path / "session.yaml")
    assert config.database == tmp_path / "db"
    assert config.contacts is not None
    book = ContactBook.load(config.contacts, store=DictContactStore(),
                            own_address=config.off_chain.address)
    assert [c.alias for c in book.list()] == ["bob", "carol", "dave"]
    assert book.by_alias("dave").endpoint == "tcp:host=2001\\:db8\\:\\:7:port=5001"


def test_a_mistyped_session_key_names_the_one_it_was_meant_to_be(session_dir: Path) -> None:
    document = _document()
    document["pasword_file"] = document.pop("password_file")
    with pytest.raises(InvalidConfig) as caught:
        load_session_config(_write(session_dir, document))
    (problem,) = caught.value.data["problems"]
    assert problem == {"name": "pasword_file", "value": None,
                       "requirement": "unknown key (did you mean password_file?)"}
