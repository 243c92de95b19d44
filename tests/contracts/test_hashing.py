"""Python and the deployed contract compute identical channel IDs and state hashes."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import function_abi_to_4byte_selector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.contract import Contract

from perund.channel.encoding import (
    channel_id,
    encode_params,
    encode_virtual_params,
    state_hash,
    virtual_channel_id,
)
from perund.channel.types import (
    UINT64_MAX,
    UINT256_MAX,
    Address,
    ChannelID,
    Params,
    State,
    SubAlloc,
    VirtualParams,
)

from .conftest import (
    ADJUDICATOR_JSON,
    Chain,
    Err,
    as_locked,
    as_params,
    as_state,
    decode_error,
    load_artifact,
    revert_data,
)

addresses = st.binary(min_size=20, max_size=20).map(Address)
uint256 = st.one_of(
    st.integers(0, UINT256_MAX), st.sampled_from([0, 1, UINT256_MAX, 2**128, 10**18])
)


@st.composite
def params_strategy(draw: st.DrawFn) -> Params:
    p0 = draw(addresses)
    p1 = draw(addresses.filter(lambda a: a != p0))
    return Params(
        draw(st.integers(1, UINT64_MAX)),
        draw(uint256),
        (p0, p1),
        (draw(addresses), draw(addresses)),
    )


ids = st.binary(min_size=32, max_size=32).map(ChannelID)


@st.composite
def state_strategy(draw: st.DrawFn) -> State:
    assets = draw(st.lists(addresses, min_size=1, max_size=4, unique=True))
    rows = tuple((draw(uint256), draw(uint256)) for _ in assets)
    lock_ids = draw(st.lists(ids, max_size=3, unique=True))
    locked = tuple(
        SubAlloc(
            lock_id,
            tuple(draw(uint256) for _ in assets),
            draw(st.sampled_from([(0, 1), (1, 0)])),
        )
        for lock_id in lock_ids
    )
    return State(
        draw(ids),
        draw(st.integers(0, UINT64_MAX)),
        tuple(assets),
        rows,
        draw(st.booleans()),
        locked,
    )


@st.composite
def virtual_params_strategy(draw: st.DrawFn) -> VirtualParams:
    p0 = draw(addresses)
    p1 = draw(addresses.filter(lambda a: a != p0))
    l0 = draw(ids)
    l1 = draw(ids.filter(lambda i: i != l0))
    return VirtualParams(draw(st.integers(1, UINT64_MAX)), draw(uint256), (p0, p1), (l0, l1))


def _deploy(chain: Chain) -> Contract:
    return chain.deploy(load_artifact(ADJUDICATOR_JSON))


def as_vparams(vp: VirtualParams) -> tuple[object, ...]:
    return (vp.challenge_duration, vp.nonce, list(vp.participants), list(vp.parents))


def _check(
    chain: Chain, contract: Contract, params: Params, state: State, vp: VirtualParams
) -> None:
    fn = contract.functions
    adjudicator = Address(bytes.fromhex(contract.address[2:]))
    on_chain_id = bytes(fn.channelID(as_params(params)).call())
    assert on_chain_id == channel_id(chain.chain_id, adjudicator, params)
    plain = State(state.channel_id, state.version, state.assets, state.balances, state.is_final)
    assert bytes(fn.hashState(as_state(state)).call()) == state_hash(plain)
    assert bytes(fn.hashSignedState(as_state(state), as_locked(state)).call()) == state_hash(state)
    virtual_id = bytes(fn.idOfVirtualChannel(as_vparams(vp)).call())
    assert virtual_id == virtual_channel_id(chain.chain_id, adjudicator, vp)


@pytest.fixture(scope="module")
def tester_contract(eth_tester_chain: Chain) -> Contract:
    return _deploy(eth_tester_chain)


@pytest.fixture(scope="module")
def anvil_contract(anvil_chain: Chain) -> Contract:
    return _deploy(anvil_chain)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=params_strategy(), state=state_strategy(), vp=virtual_params_strategy())
def test_python_and_contract_agree_on_eth_tester(
    eth_tester_chain: Chain,
    tester_contract: Contract,
    params: Params,
    state: State,
    vp: VirtualParams,
) -> None:
    _check(eth_tester_chain, tester_contract, params, state, vp)


@pytest.mark.anvil
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=params_strategy(), state=state_strategy(), vp=virtual_params_strategy())
def test_python_and_contract_agree_on_anvil(
    anvil_chain: Chain, anvil_contract: Contract, params: Params, state: State, vp: VirtualParams
) -> None:
    _check(anvil_chain, anvil_contract, params, state, vp)


# ------------------------------------------------------------------ raw calldata

SAMPLE_PARAMS = Params(
    600,
    2**200 + 7,
    (Address(b"\x11" * 20), Address(b"\x22" * 20)),
    (Address(b"\x33" * 20), Address(b"\x44" * 20)),
)
SAMPLE_STATE = State(
    ChannelID(b"\xab" * 32),
    12,
    (Address(b"\x00" * 20), Address(b"\x55" * 20)),
    ((1, 2), (3, 4)),
    True,
)


def _sel(contract: Contract, name: str) -> bytes:
    for item in contract.abi:
        if item.get("type") == "function" and item.get("name") == name:
            return bytes(function_abi_to_4byte_selector(item))
    raise KeyError(name)


def _raw_call(chain: Chain, contract: Contract, data: bytes) -> tuple[bytes | None, Err]:
    """(return data, ("", ())) on success, (None, decoded error) on a revert."""
    try:
        return bytes(chain.w3.eth.call({"to": contract.address, "data": data})), ("", ())
    except Exception as exc:
        raw = revert_data(exc)
        assert raw is not None, exc
        return None, decode_error(contract.abi, raw)


def test_dirty_params_words_are_refused(chain: Chain) -> None:
    contract = _deploy(chain)
    clean = encode_params(SAMPLE_PARAMS)
    result, _ = _raw_call(chain, contract, _sel(contract, "channelID") + clean)
    assert result == channel_id(
        chain.chain_id, Address(bytes.fromhex(contract.address[2:])), SAMPLE_PARAMS
    )
    for word in (
        0,
        2,
        3,
        4,
        5,
    ):  # challengeDuration and the four addresses (the nonce is a uint256)
        dirty = bytearray(clean)
        dirty[32 * word] = 0x01  # a bit above the type's width
        assert _raw_call(chain, contract, _sel(contract, "channelID") + bytes(dirty)) == (
            None,
            ("InvalidEncoding", ()),
        )


def test_dirty_virtual_params_words_are_refused(chain: Chain) -> None:
    contract = _deploy(chain)
    vp = VirtualParams(
        600,
        9,
        (Address(b"\x11" * 20), Address(b"\x22" * 20)),
        (ChannelID(b"\xaa" * 32), ChannelID(b"\xbb" * 32)),
    )
    clean = encode_virtual_params(vp)
    selector = _sel(contract, "idOfVirtualChannel")
    result, _ = _raw_call(chain, contract, selector + clean)
    assert result == virtual_channel_id(
        chain.chain_id, Address(bytes.fromhex(contract.address[2:])), vp
    )
    for word in (0, 2, 3):  # uint64 and the two addresses; the parents are full words
        dirty = bytearray(clean)
        dirty[32 * word] = 0x01
        assert _raw_call(chain, contract, selector + bytes(dirty)) == (
            None,
            ("InvalidEncoding", ()),
        )


def test_dirty_asset_address_is_refused(chain: Chain) -> None:
    contract = _deploy(chain)
    words = bytearray(_state_calldata(SAMPLE_STATE))
    # The second asset's word: head (5 words after the 0x20 offset) + assets length + first asset.
    words[32 * (1 + 5 + 2)] = 0x01
    assert _raw_call(chain, contract, _sel(contract, "hashState") + bytes(words)) == (
        None,
        ("InvalidEncoding", ()),
    )


def _state_calldata(state: State) -> bytes:
    return encode(
        ["(bytes32,uint64,address[],uint256[][],bool)"],
        [
            (
                state.channel_id,
                state.version,
                list(state.assets),
                [list(r) for r in state.balances],
                state.is_final,
            )
        ],
    )


def test_non_canonical_offsets_hash_like_the_canonical_encoding(chain: Chain) -> None:
    """The contract hashes what it decoded, not the bytes it was sent."""
    contract = _deploy(chain)
    canonical = _state_calldata(SAMPLE_STATE)
    assert _raw_call(chain, contract, _sel(contract, "hashState") + canonical)[0] == state_hash(
        SAMPLE_STATE
    )
    # Same tuple, placed one word later behind a junk word: every offset shifts.
    tail = canonical[32:]
    shifted = (0x40).to_bytes(32, "big") + b"\xee" * 32 + tail
    assert _raw_call(chain, contract, _sel(contract, "hashState") + shifted)[0] == state_hash(
        SAMPLE_STATE
    )
