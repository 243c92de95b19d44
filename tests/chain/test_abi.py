"""The ABI codec: calls, outputs, errors and logs in the core's shapes; artifact code checks."""

from __future__ import annotations

from eth_abi.abi import decode, encode
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from perund.chain.abi import ContractCodec, params_value, state_value
from perund.chain.artifact import ContractArtifact, load_artifact
from perund.channel.types import ETH, ChannelID, Params, State, to_address

CODEC = ContractCodec(load_artifact().abi)
uint64 = st.integers(0, 2**64 - 1)


def test_the_adjudicator_declares_the_errors_the_backend_reports() -> None:
    for name in ("InvalidSignature", "ChallengeNotOver", "ChannelConcluded", "NothingOwed"):
        assert name in CODEC.error_names
    assert {"Error", "Panic"} <= CODEC.error_names


@given(registered=uint64, given_version=uint64)
def test_custom_error_arguments_round_trip(registered: int, given_version: int) -> None:
    data = keccak(b"StaleVersion(uint64,uint64)")[:4] + encode(
        ["uint64", "uint64"], [registered, given_version]
    )
    error = CODEC.decode_error(data)
    assert error is not None and error.name == "StaleVersion"
    assert dict(error.args) == {"registered": registered, "given": given_version}


def test_builtin_and_unknown_errors() -> None:
    reason = keccak(b"Error(string)")[:4] + encode(["string"], ["boom"])
    error = CODEC.decode_error(reason)
    assert error is not None and error.name == "Error" and error.args == {"reason": "boom"}
    panic = CODEC.decode_error(keccak(b"Panic(uint256)")[:4] + encode(["uint256"], [0x11]))
    assert panic is not None and panic.name == "Panic" and panic.args == {"code": 0x11}
    assert CODEC.decode_error(b"") is None
    assert CODEC.decode_error(b"\xde\xad\xbe\xef") is None
    # A known selector with garbage arguments still names the error.
    truncated = CODEC.decode_error(keccak(b"StaleVersion(uint64,uint64)")[:4] + b"\x01")
    assert truncated is not None and truncated.name == "StaleVersion"
    assert str(truncated) == "StaleVersion"


def test_calls_encode_core_values() -> None:
    params = Params(60, 2**255, (b"\x01" * 20, b"\x02" * 20), (b"\x03" * 20, b"\x04" * 20))
    state = State(ChannelID(b"\x09" * 32), 3, (ETH,), ((1, 2**130),), True)
    data = CODEC.encode_call("register", params_value(params), state_value(state),
                             [b"\x05" * 65, b"\x06" * 65])
    signature = ("register((uint64,uint256,address[2],address[2]),"
                 "(bytes32,uint64,address[],uint256[][],bool),bytes[2])")
    assert data[:4] == keccak(signature.encode())[:4]
    p, s, sigs = decode(["(uint64,uint256,address[2],address[2])",
                         "(bytes32,uint64,address[],uint256[][],bool)", "bytes[2]"], data[4:])
    assert p[0] == 60 and p[1] == 2**255 and to_address(p[3][1]) == b"\x04" * 20
    assert s[0] == state.channel_id and s[3] == ((1, 2**130),) and s[4] is True
    assert sigs == (b"\x05" * 65, b"\x06" * 65)


def test_outputs_and_logs_decode_to_core_shapes() -> None:
    out = CODEC.decode_output("holdings", encode(["uint256", "uint256"], [5, 6]))
    assert out == (5, 6)
    topic = CODEC.event_topic("PaidOut")
    receiver = b"\x0a" * 20
    log = CODEC.decode_log(
        [topic, b"\x0b" * 32, b"\x00" * 12 + receiver],
        encode(["address", "uint256", "bool"], [ETH, 99, False]),
    )
    assert log is not None and log.name == "PaidOut"
    assert dict(log.args) == {"channelID": b"\x0b" * 32, "receiver": receiver, "asset": ETH,
                              "amount": 99, "pushed": False}
    assert CODEC.decode_log([b"\x00" * 32], b"") is None
    assert CODEC.decode_log([], b"") is None
    assert CODEC.decode_log([topic], b"") is None  # wrong number of indexed topics


def test_runtime_code_comparison_skips_immutables_only() -> None:
    artifact = ContractArtifact.from_json({
        "contractName": "X", "abi": [], "bytecode": "0x00",
        "deployedBytecode": "0x" + "11" * 8 + "00" * 4 + "22" * 4,
        "immutableReferences": {"7": [{"start": 8, "length": 4}]},
    })
    assert artifact.runtime_code_matches(b"\x11" * 8 + b"\xab" * 4 + b"\x22" * 4)
    assert not artifact.runtime_code_matches(b"\x11" * 8 + b"\xab" * 4 + b"\x22" * 3 + b"\x23")
    assert not artifact.runtime_code_matches(b"\x11" * 8)
    plain = load_artifact()
    assert plain.runtime_code_matches(plain.deployed_bytecode)
    assert not plain.runtime_code_matches(plain.deployed_bytecode + b"\x00")
