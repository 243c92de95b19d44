"""Node configuration: defaults, every key, and all errors reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.logger import capturedLogs, formatEvent

from perund.channel.types import Address
from perund.config import TokenConfig, load_node_config, parse_duration, parse_node_config
from perund.errors import InvalidConfig

REPO = Path(__file__).resolve().parents[1]


def test_defaults_from_empty_document() -> None:
    config = parse_node_config(None, base_dir=Path("/srv/perund"))
    assert config.data_dir == Path("/srv/perund/data")
    assert config.api.listen == "tcp:50001:interface=127.0.0.1"
    assert config.chain.url == ""
    assert config.timeouts.tx == 60.0
    assert config.token_path == Path("/srv/perund/data/api.token")


def test_an_empty_file_is_said_to_be_empty(tmp_path: Path) -> None:
    """Every default, and a warning: an empty file is more often a mistake than a choice."""
    for text in ("", "# nothing yet\n", "{}\n"):
        empty = tmp_path / "node.yaml"
        empty.write_text(text)
        with capturedLogs() as events:
            config = load_node_config(empty)
        assert config.data_dir == tmp_path / "data"
        [warning] = [formatEvent(e) for e in events]
        assert warning == f"node config {empty} is empty: every setting takes its default " \
            "(docs/configuration.md)"
    with capturedLogs() as events:
        load_node_config(REPO / "etc" / "perund.yaml")
    assert events == []


def test_documented_example_parses() -> None:
    config = load_node_config(REPO / "etc" / "perund.yaml")
    assert config.chain.url == ""
    assert config.log.format in ("text", "json")


def test_all_values() -> None:
    config = parse_node_config({
        "data_dir": "/var/lib/perund",
        "log": {"level": "debug", "format": "json", "file": "/var/log/perund.log"},
        "api": {"listen": "tcp:7000", "token_file": "/etc/perund/token"},
        "chain": {"url": "http://127.0.0.1:8545", "id": 31337,
                  "adjudicator": "0x" + "ab" * 20,
                  "assets": {"USDC": {"address": "0x" + "cd" * 20, "decimals": 6}},
                  "confirmations": 2, "poll_interval": "500ms"},
        "timeouts": {"chain_connect": "5s", "tx": "2m", "response": "30s", "peer_dial": "3s",
                     "peer_request": "4s"},
    })
    assert config.chain.poll_interval == 0.5
    assert config.chain.assets["USDC"] == TokenConfig(Address(bytes.fromhex("cd" * 20)), 6)
    assert config.timeouts.tx == 120.0
    assert config.token_path == Path("/etc/perund/token")


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({
            "colour": "blue",
            "log": {"level": "loud"},
            "chain": {"url": "ftp://x", "id": -1, "adjudicator": "0x12",
                      "assets": {"ETH": {"address": "0x" + "00" * 20, "decimals": 18}},
                      "confirmations": "two"},
            "timeouts": {"tx": "forever", "peer_dial": "0s"},
        })
    names = {p["name"] for p in caught.value.data["problems"]}
    assert names == {"colour", "log.level", "chain.url", "chain.id", "chain.adjudicator",
                     "chain.assets.ETH", "chain.confirmations", "timeouts.tx",
                     "timeouts.peer_dial"}
    assert caught.value.code == 205


def test_a_refused_chain_url_is_quoted_without_its_key_or_password() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({"chain": {"url": "ftp://someuser:S3CRET@example.org/v3/PATHKEY"}})
    (problem,) = caught.value.data["problems"]
    assert problem["value"] == "ftp://example.org/…"
    assert problem["requirement"] == "an http(s):// URL, or empty for the embedded chain"
    said = str(caught.value) + repr(caught.value.data)
    assert not [s for s in ("someuser", "S3CRET", "PATHKEY") if s in said]


def test_a_websocket_chain_url_is_refused_by_the_config_check() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({"chain": {"url": "wss://node.example/ws"}})
    assert [p["name"] for p in caught.value.data["problems"]] == ["chain.url"]


@pytest.mark.parametrize(("listen", "requirement"), [
    ("127.0.0.1:52016", "not an endpoint string (Unknown endpoint type: '127.0.0.1'); "
                        "e.g. tcp:50001:interface=127.0.0.1"),
    ("tpc:52016", "not an endpoint string (Unknown endpoint type: 'tpc')"),
    (52001, "an endpoint string such as tcp:50001:interface=127.0.0.1"),
    ("tcp:99999", "port 99999 is not in 0..65535"),
    ("ssl:50001:privateKey=/nonexistent/key.pem", "a file it names cannot be read "
                                                   "(no such file or directory)"),
])
def test_a_bad_api_listen_is_refused_by_the_config_check(listen: object,
                                                        requirement: str) -> None:
    """Before the chain starts and the contracts are deployed, not when the API would listen."""
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({"api": {"listen": listen}})
    (problem,) = caught.value.data["problems"]
    assert problem["name"] == "api.listen" and problem["requirement"].startswith(requirement)


def test_assets_are_symbols_with_an_address_and_decimals() -> None:
    token = "0x" + "cd" * 20
    config = parse_node_config({"chain": {"assets": {
        "USDC": {"address": token, "decimals": 6}, "PRN": {"address": "0x" + "ef" * 20,
                                                           "decimals": 0}}}})
    assert list(config.chain.assets) == ["USDC", "PRN"]  # the file's order
    assert config.chain.assets["PRN"].decimals == 0


@pytest.mark.parametrize(("assets", "name", "requirement"), [
    ({"ETH": {"address": "0x" + "cd" * 20, "decimals": 18}}, "chain.assets.ETH", "built in"),
    ({"eth": {"address": "0x" + "cd" * 20, "decimals": 18}}, "chain.assets.eth", "built in"),
    ({"1INCH": {"address": "0x" + "cd" * 20, "decimals": 18}}, "chain.assets.1INCH", "symbol"),
    ({"A" * 17: {"address": "0x" + "cd" * 20, "decimals": 18}}, "chain.assets." + "A" * 17,
     "symbol"),
    ({"USDC": "0x" + "cd" * 20}, "chain.assets.USDC", "address and decimals"),
    ({"USDC": {"address": "0x" + "cd" * 20}}, "chain.assets.USDC.decimals", "required"),
    ({"USDC": {"decimals": 6}}, "chain.assets.USDC.address", "required"),
    ({"USDC": {"address": "0x12", "decimals": 6}}, "chain.assets.USDC.address", "address"),
    ({"USDC": {"address": "0x" + "00" * 20, "decimals": 6}}, "chain.assets.USDC.address",
     "ETH"),
    ({"USDC": {"address": "0x" + "cd" * 20, "decimals": 78}}, "chain.assets.USDC.decimals",
     "0..77"),
    ({"USDC": {"address": "0x" + "cd" * 20, "decimals": "6"}}, "chain.assets.USDC.decimals",
     "integer"),
    ({"USDC": {"address": "0x" + "cd" * 20, "decimals": True}}, "chain.assets.USDC.decimals",
     "integer"),
    ({"USDC": {"address": "0x" + "cd" * 20, "decimals": 6, "name": "x"}},
     "chain.assets.USDC.name", "unknown key"),
    ({"USDC": {"address": "0x" + "cd" * 20, "decimals": 6},
      "usdc": {"address": "0x" + "ef" * 20, "decimals": 6}}, "chain.assets.usdc",
     "defined already"),
    ({"USDC": {"address": "0x" + "cd" * 20, "decimals": 6},
      "USDT": {"address": "0x" + "cd" * 20, "decimals": 6}}, "chain.assets.USDT.address",
     "USDC has it"),
])
def test_bad_assets_are_named(assets: dict[str, object], name: str, requirement: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({"chain": {"assets": assets}})
    (problem,) = caught.value.data["problems"]
    assert problem["name"] == name and requirement in problem["requirement"], problem
    assert name in caught.value.message and "\n" not in caught.value.message


def test_url_without_adjudicator_is_refused() -> None:
    with pytest.raises(InvalidConfig, match=r"chain\.adjudicator"):
        parse_node_config({"chain": {"url": "http://127.0.0.1:8545"}})


def test_confirmations_on_the_embedded_chain_are_refused() -> None:
    # It mines only per transaction: funding and disputes would wait for blocks forever.
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({"chain": {"confirmations": 2}})
    (problem,) = caught.value.data["problems"]
    assert problem["name"] == "chain.confirmations" and "embedded" in problem["requirement"]
    assert parse_node_config({"chain": {"confirmations": 0}}).chain.confirmations == 0


@pytest.mark.parametrize("text", ["", "10", "s", "-1s", "1.5.1s", "10 years", "\u0663s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120
    assert parse_duration("1h") == 3600
    assert parse_duration("1d") == 86400  # as the CLI's --challenge-duration takes it


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="no such file"):
        load_node_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("chain: [unclosed\n")
    with pytest.raises(InvalidConfig, match="not valid YAML"):
        load_node_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(InvalidConfig, match="mapping"):
        load_node_config(scalar)


def test_unquoted_address_and_duplicate_keys(tmp_path: Path) -> None:
    good = tmp_path / "node.yaml"
    good.write_text("chain:\n  url: http://127.0.0.1:8545\n  adjudicator: 0x" + "ab" * 20 + "\n")
    assert load_node_config(good).chain.adjudicator == bytes.fromhex("ab" * 20)
    twice = tmp_path / "twice.yaml"
    twice.write_text("log:\n  level: info\n  level: debug\n")
    with pytest.raises(InvalidConfig, match="twice"):
        load_node_config(twice)


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "node.yaml"
    binary.write_bytes(b"\xff\xfe\x00chain: {}")
    with pytest.raises(InvalidConfig, match="not UTF-8"):
        load_node_config(binary)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "node.yaml").write_text(
        "data_dir: data\napi:\n  token_file: secrets/api.token\nlog:\n  file: logs/node.log\n")
    monkeypatch.chdir(tmp_path)  # anywhere but the file's folder
    config = load_node_config(folder / "node.yaml")
    assert config.data_dir == folder / "data"
    assert config.token_path == folder / "secrets" / "api.token"
    assert config.log.file == str(folder / "logs" / "node.log")


def test_a_node_config_of_nested_aliases_is_refused_at_once(tmp_path: Path) -> None:
    """A few hundred bytes of YAML aliases expand to billions of entries: the unknown key's
    value is named, never rendered."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidConfig) as caught:
        load_node_config(tmp_path / "bomb.yaml")
    assert {p["value"] for p in caught.value.data["problems"]} == {"(a list of 10 items)"}


def test_a_mistyped_key_names_the_one_it_was_meant_to_be() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({"dta_dir": "data", "chain": {"confirmation": 2}, "colour": "red"})
    assert {p["name"]: p["requirement"] for p in caught.value.data["problems"]} == {
        "dta_dir": "unknown key (did you mean data_dir?)",
        "chain.confirmation": "unknown key (did you mean confirmations?)",
        "colour": "unknown key"}


def test_a_file_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- data_dir\n")
    with pytest.raises(InvalidConfig, match=rf"invalid node config {tmp_path / 'list.yaml'}: "
                                            "the top level must be a mapping of keys"):
        load_node_config(tmp_path / "list.yaml")


def test_a_bad_adjudicator_is_one_problem() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_node_config({"chain": {"url": "http://127.0.0.1:8545", "adjudicator": "0x12"}})
    assert [p["name"] for p in caught.value.data["problems"]] == ["chain.adjudicator"]


def test_the_conclusion_grace_follows_the_chains_block_time() -> None:
    from perund.session.session import conclude_grace_for

    assert conclude_grace_for(load_node_config(REPO / "etc" / "perund.yaml")) == 25.0
    fast = parse_node_config({"chain": {"block_time": "1s", "poll_interval": "250ms"}})
    assert conclude_grace_for(fast) == 5.0  # the floor


def test_the_payment_history_size_is_a_size() -> None:
    assert parse_node_config(None, base_dir=Path("/srv")).limits.payment_history_size == 1 << 30
    config = parse_node_config({"limits": {"payment_history_size": "64MiB"}})
    assert config.limits.payment_history_size == 64 << 20
    for wrong, requirement in (("0", "above zero"), ("lots", "above zero"), (-5, "above zero"),
                               ("1TB", "above zero"), ("512KiB", "at least 1MiB")):
        with pytest.raises(InvalidConfig) as caught:
            parse_node_config({"limits": {"payment_history_size": wrong}})
        (problem,) = caught.value.data["problems"]
        assert problem["name"] == "limits.payment_history_size"
        assert requirement in problem["requirement"]


def test_the_closed_channel_retention_is_a_duration_of_at_least_15_minutes() -> None:
    assert parse_node_config(None).limits.closed_channel_retention == 7 * 24 * 3600
    config = parse_node_config({"limits": {"closed_channel_retention": "2h"}})
    assert config.limits.closed_channel_retention == 7200
    for wrong, requirement in (("10m", "at least 15m"), ("soon", "duration"), (900, "duration"),
                               ("-1h", "duration"), ("0s", "at least 15m")):
        with pytest.raises(InvalidConfig) as caught:
            parse_node_config({"limits": {"closed_channel_retention": wrong}})
        (problem,) = caught.value.data["problems"]
        assert problem["name"] == "limits.closed_channel_retention"
        assert requirement in problem["requirement"] + problem.get("message", "")


def test_a_session_buffer_smaller_than_one_sockets_allowances_is_refused() -> None:
    """Else a session's client would be dropped for one message and its replies, both within
    their own limits."""
    with pytest.raises(InvalidConfig, match=r"limits\.api_session_buffer") as caught:
        parse_node_config({"limits": {"api_session_buffer": "4MiB", "api_body_size": "1MiB"}})
    assert "at least limits.api_body_size + limits.ws_send_buffer (5242880 bytes)" \
        in caught.value.message
    config = parse_node_config({"limits": {"api_session_buffer": "5MiB"}})
    assert config.limits.api_session_buffer == 5 * 1024 * 1024
