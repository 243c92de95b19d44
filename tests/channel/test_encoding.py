"""The hand-written encoders agree with eth_abi and the signing path with eth-account."""

from __future__ import annotations

import os

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from perund.channel import encoding
from perund.channel.encoding import (
    Signer,
    channel_id,
    encode_locked,
    encode_params,
    encode_state,
    encode_virtual_params,
    nonce_from_shares,
    recover_digest,
    recover_state_signer,
    signing_digest,
    state_hash,
    verify_state,
    virtual_channel_id,
)
from perund.channel.types import (
    ETH,
    Address,
    ChannelID,
    Params,
    Signature,
    State,
    SubAlloc,
    VirtualParams,
    hex_address,
    to_address,
)

STATE_ABI = "(bytes32,uint64,address[],uint256[][],bool)"
PARAMS_ABI = "(uint64,uint256,address[2],address[2])"
LOCKED_ABI = "(bytes32,uint256[],uint8[2])[]"
VIRTUAL_ABI = "(uint64,uint256,address[2],bytes32[2])"

addresses = st.binary(min_size=20, max_size=20).map(Address)
amounts = st.integers(min_value=0, max_value=2**256 - 1)


@st.composite
def states(draw: st.DrawFn) -> State:
    n_assets = draw(st.integers(min_value=1, max_value=4))
    return State(
        channel_id=ChannelID(draw(st.binary(min_size=32, max_size=32))),
        version=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        assets=tuple(draw(st.lists(addresses, min_size=n_assets, max_size=n_assets))),
        balances=tuple((draw(amounts), draw(amounts)) for _ in range(n_assets)),
        is_final=draw(st.booleans()),
    )


@st.composite
def params(draw: st.DrawFn) -> Params:
    p0 = draw(addresses)
    p1 = draw(addresses.filter(lambda a: a != p0))
    return Params(
        challenge_duration=draw(st.integers(min_value=1, max_value=2**64 - 1)),
        nonce=draw(st.integers(min_value=0, max_value=2**256 - 1)),
        participants=(p0, p1),
        receivers=(draw(addresses), draw(addresses)),
    )


def _abi_state(state: State) -> bytes:
    value = (
        state.channel_id,
        state.version,
        [hex_address(a) for a in state.assets],
        [list(row) for row in state.balances],
        state.is_final,
    )
    return encode([STATE_ABI], [value])


@given(states())
def test_encode_state_matches_eth_abi(state: State) -> None:
    assert encode_state(state) == _abi_state(state)


ids = st.binary(min_size=32, max_size=32).map(ChannelID)


@st.composite
def locks(draw: st.DrawFn, n_assets: int) -> tuple[SubAlloc, ...]:
    lock_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    return tuple(
        SubAlloc(
            lock_id,
            tuple(draw(amounts) for _ in range(n_assets)),
            draw(st.sampled_from([(0, 1), (1, 0)])),
        )
        for lock_id in lock_ids
    )


@given(states(), st.data())
def test_a_locked_state_hashes_its_locks_beside_the_plain_hash(
    state: State, data: st.DataObject
) -> None:
    locked = data.draw(locks(len(state.assets)))
    parent = State(
        state.channel_id, state.version, state.assets, state.balances, state.is_final, locked
    )
    value = [(lock.channel_id, list(lock.balances), list(lock.index_map)) for lock in locked]
    assert encode_locked(locked) == encode([LOCKED_ABI], [value])
    plain = keccak(_abi_state(state))
    assert state_hash(state) == plain  # no locks: the hash of v1
    expected = keccak(encode(["bytes32", "bytes32"], [plain, keccak(encode_locked(locked))]))
    assert state_hash(parent) == expected
    assert state_hash(parent) != plain


@given(
    st.integers(min_value=1, max_value=2**64 - 1),
    amounts,
    st.lists(addresses, min_size=2, max_size=2, unique=True),
    st.lists(ids, min_size=2, max_size=2, unique=True),
    st.integers(min_value=0, max_value=2**256 - 1),
    addresses,
)
def test_virtual_channel_id_matches_eth_abi(
    duration: int,
    nonce: int,
    participants: list[Address],
    parents: list[ChannelID],
    chain: int,
    adjudicator: Address,
) -> None:
    vp = VirtualParams(
        duration, nonce, (participants[0], participants[1]), (parents[0], parents[1])
    )
    value = (duration, nonce, [hex_address(a) for a in participants], parents)
    assert encode_virtual_params(vp) == encode([VIRTUAL_ABI], [value])
    expected = keccak(
        encode(
            ["uint256", "address", VIRTUAL_ABI, "uint256"],
            [chain, hex_address(adjudicator), value, 1],
        )
    )
    assert virtual_channel_id(chain, adjudicator, vp) == expected
    # Never a ledger ID: the preimage is one word longer.
    ledger = Params(duration, nonce, vp.participants, vp.participants)
    assert virtual_channel_id(chain, adjudicator, vp) != channel_id(chain, adjudicator, ledger)


def test_locked_states_and_virtual_params_refuse_bad_shapes() -> None:
    one = ChannelID(b"\x01" * 32)
    with pytest.raises(ValueError, match="index map"):
        SubAlloc(one, (1,), (1, 1))
    with pytest.raises(ValueError, match="uint256"):
        SubAlloc(one, (-1,), (0, 1))
    with pytest.raises(ValueError, match="one amount per asset"):
        State(one, 1, (ETH,), ((1, 1),), False, (SubAlloc(one, (1, 2)),))
    with pytest.raises(ValueError, match="at most once"):
        State(one, 1, (ETH,), ((1, 1),), False, (SubAlloc(one, (1,)), SubAlloc(one, (2,))))
    with pytest.raises(ValueError, match="at most 16"):
        State(
            one,
            1,
            (ETH,),
            ((1, 1),),
            False,
            tuple(SubAlloc(ChannelID(bytes([i]) * 32), (1,)) for i in range(17)),
        )
    a, b = Address(b"\x01" * 20), Address(b"\x02" * 20)
    with pytest.raises(ValueError, match="parents must differ"):
        VirtualParams(60, 1, (a, b), (one, one))
    with pytest.raises(ValueError, match="participants must differ"):
        VirtualParams(60, 1, (a, a), (one, ChannelID(b"\x02" * 32)))
    with pytest.raises(ValueError, match="challenge duration"):
        VirtualParams(0, 1, (a, b), (one, ChannelID(b"\x02" * 32)))


@given(params(), st.integers(min_value=0, max_value=2**256 - 1), addresses)
def test_channel_id_matches_eth_abi(p: Params, chain: int, adjudicator: Address) -> None:
    value = (
        p.challenge_duration,
        p.nonce,
        [hex_address(a) for a in p.participants],
        [hex_address(a) for a in p.receivers],
    )
    assert encode_params(p) == encode([PARAMS_ABI], [value])
    domain = [chain, hex_address(adjudicator), value]
    expected = keccak(encode(["uint256", "address", PARAMS_ABI], domain))
    assert channel_id(chain, adjudicator, p) == expected


def test_channel_id_is_domain_separated() -> None:
    p = Params(60, 7, (Address(b"\x01" * 20), Address(b"\x02" * 20)), (ETH, ETH))
    base = channel_id(1, Address(b"\xaa" * 20), p)
    assert channel_id(2, Address(b"\xaa" * 20), p) != base
    assert channel_id(1, Address(b"\xab" * 20), p) != base


@given(states())
def test_signature_recovers_like_eth_account(state: State) -> None:
    signer = Signer(keccak(b"perund-test-key"))
    signature = signer.sign_state(state)
    assert recover_state_signer(state, signature) == signer.address
    message = encode_defunct(primitive=state_hash(state))
    recovered = Account.recover_message(message, signature=signature)
    assert to_address(recovered) == signer.address
    assert signature[64] in (27, 28)


def _state() -> State:
    return State(ChannelID(b"\x11" * 32), 3, (ETH,), ((5, 6),), False)


def test_verify_refuses_other_state_and_other_signer() -> None:
    signer, other = Signer(os.urandom(32)), Signer(os.urandom(32))
    state = _state()
    signature = signer.sign_state(state)
    assert verify_state(state, signature, signer.address)
    assert not verify_state(state, signature, other.address)
    changed = State(state.channel_id, 4, state.assets, state.balances, False)
    assert not verify_state(changed, signature, signer.address)


def test_recover_refuses_malformed_and_high_s() -> None:
    signer = Signer(os.urandom(32))
    state = _state()
    signature = signer.sign_state(state)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(signature[32:64], "big")
    flipped_v = 55 - signature[64]  # 27 <-> 28: the same signature with high s
    high_s = Signature(signature[:32] + (n - s).to_bytes(32, "big") + bytes((flipped_v,)))
    zero = b"\x00" * 65
    malformed = (signature[:64], signature + b"\x00", signature[:64] + b"\x01", high_s, zero)
    for bad in malformed:
        with pytest.raises(ValueError):
            recover_state_signer(state, bad)
        assert not verify_state(state, bad, signer.address)


def test_nonce_from_shares_depends_on_both_and_order() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    assert nonce_from_shares(a, b) == int.from_bytes(keccak(a + b), "big")
    assert nonce_from_shares(a, b) != nonce_from_shares(b, a)
    with pytest.raises(ValueError):
        nonce_from_shares(a, b"\x01")


def test_value_checks() -> None:
    with pytest.raises(ValueError):
        State(ChannelID(b"\x00" * 31), 0, (ETH,), ((1, 1),))
    with pytest.raises(ValueError):
        State(ChannelID(b"\x00" * 32), 0, (ETH,), ((-1, 1),))
    with pytest.raises(ValueError):
        State(ChannelID(b"\x00" * 32), 2**64, (ETH,), ((1, 1),))
    with pytest.raises(ValueError):
        Params(0, 1, (Address(b"\x01" * 20), Address(b"\x02" * 20)), (ETH, ETH))
    with pytest.raises(ValueError):
        Params(1, 1, (Address(b"\x01" * 20), Address(b"\x01" * 20)), (ETH, ETH))
    with pytest.raises(ValueError):
        to_address("0x1234")
    assert signing_digest(_state()) != state_hash(_state())


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_recover_digest_agrees_with_eth_account_for_any_key_and_digest(
    key_seed: bytes, digest: bytes
) -> None:
    """The direct libsecp256k1 path (and its map of known keys) against eth-account's own
    recovery, for the signature and for the same r, s with the other v."""
    signer = Signer(keccak(key_seed))  # a hash: never 0 or past the group order in practice
    signature = signer.sign_digest(digest)
    for _ in range(2):  # the second time from the map of known keys
        assert recover_digest(digest, signature) == signer.address
    other_v = signature[:64] + bytes((55 - signature[64],))
    theirs = to_address(Account._recover_hash(digest, signature=other_v))
    assert recover_digest(digest, other_v) == theirs != signer.address


def test_recover_digest_refuses_a_digest_of_another_length() -> None:
    signer = Signer(os.urandom(32))
    signature = signer.sign_digest(b"\x01" * 32)
    for digest in (b"", b"\x01" * 31, b"\x01" * 33):
        with pytest.raises(ValueError, match="32 bytes"):
            recover_digest(digest, signature)


def test_the_map_of_known_signers_is_bounded_and_stays_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding, "_KNOWN_SIGNERS", {})
    monkeypatch.setattr(encoding, "_KNOWN_SIGNERS_MAX", 3)
    signers = [Signer(keccak(bytes([i]))) for i in range(7)]
    digest = b"\x02" * 32
    for _ in range(2):
        for signer in signers:
            assert recover_digest(digest, signer.sign_digest(digest)) == signer.address
            assert len(encoding._KNOWN_SIGNERS) <= 3
