"""The byte layout of the virtual-channel messages (docs/wire.md, types 12 to 17).

Same rules as `perund.wire.codec`, whose field helpers these use: msgpack arrays, canonical
integers, strict decoding (`DecodeError`), encoding that refuses what it could not decode
(`EncodeError`). A virtual lock or fold nests the ledger's update (an Update body without a
memo, its locks trailing as in an Update) and the virtual channel's params, state (never with
locks) and two signatures:

    VirtualPropose = [proposal_id, chain_id, adjudicator, challenge_duration, nonce_share,
                      assets, balances, participant, intermediary, parent]
    VirtualAccept  = [proposal_id, nonce_share, participant, parent, signature]
    VirtualLock    = [update, params, state, signature0, signature1, fee?]
    VirtualFold    = [update, params, state, signature0, signature1]
    params         = [challenge_duration, nonce, participant0, participant1, parent0, parent1]
    FeeQuery       = [query_id, assets, totals]
    FeeQuote       = [query_id, fee]

A lock's `fee` (one amount per asset of the virtual state, not all zero) is present only when
the sender pays one, so a lock without a fee keeps the bytes it had before fees existed, and a
fee of zero has one form only (absent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from perund.channel.types import (
    MAX_ASSETS,
    Address,
    ChannelID,
    Signature,
    State,
    VirtualParams,
    VirtualProof,
)
from perund.errors import DecodeError, EncodeError
from perund.wire import codec as c
from perund.wire import fields as f
from perund.wire.messages import (
    FeeQuery,
    FeeQuote,
    VirtualAccept,
    VirtualFold,
    VirtualLock,
    VirtualPropose,
)

TYPE_VIRTUAL_PROPOSE: Final = 12
TYPE_VIRTUAL_ACCEPT: Final = 13
TYPE_VIRTUAL_LOCK: Final = 14
TYPE_VIRTUAL_FOLD: Final = 15
TYPE_FEE_QUERY: Final = 16
TYPE_FEE_QUOTE: Final = 17


# -- encoding ----------------------------------------------------------------------------------


def _e_params(p: VirtualParams) -> tuple[Any, ...]:
    if type(p) is not VirtualParams:
        raise EncodeError("params must be VirtualParams")
    return (
        f.encode_uint64(p.challenge_duration, "challenge duration"),
        f.encode_big(p.nonce, "nonce"),
        f.encode_bytes(p.participants[0], 20, "participant"),
        f.encode_bytes(p.participants[1], 20, "participant"),
        f.encode_bytes(p.parents[0], 32, "parent"),
        f.encode_bytes(p.parents[1], 32, "parent"),
    )


def _e_proof_message(m: VirtualLock | VirtualFold) -> tuple[Any, ...]:
    proof = m.proof
    if type(proof) is not VirtualProof:
        raise EncodeError("proof must be a VirtualProof")
    if proof.state.locked:
        raise EncodeError("a virtual channel's state locks nothing")
    sigs = proof.signatures
    if type(sigs) is not tuple or len(sigs) != 2:
        raise EncodeError("a virtual state carries two signatures")
    update = (
        *f.encode_state(m.state),
        f.encode_bytes(m.signature, 65, "signature"),
        *f.encode_state_locks(m.state),
    )
    body = (
        update,
        _e_params(proof.params),
        f.encode_state(proof.state),
        f.encode_bytes(sigs[0], 65, "signature"),
        f.encode_bytes(sigs[1], 65, "signature"),
    )
    if type(proof.fee) is not tuple:
        raise EncodeError("a fee must be a tuple of amounts")
    if not proof.fee:
        return body
    if isinstance(m, VirtualFold):
        raise EncodeError("a fold carries no fee")
    if not any(proof.fee):
        raise EncodeError("a fee of zero is sent as no fee")
    return (*body, _e_amounts(proof.fee, len(proof.state.assets), "fee"))


def _e_amounts(amounts: object, n_assets: int, what: str) -> tuple[bytes, ...]:
    if type(amounts) is not tuple or len(amounts) != n_assets:
        raise EncodeError(f"{what} must hold one amount per asset")
    return tuple(f.encode_big(amount, what) for amount in amounts)


def _enc_fee_query(m: FeeQuery) -> tuple[Any, ...]:
    assets = f.encode_assets(m.assets)
    return (f.encode_bytes(m.query_id, 32, "query ID"), assets,
            _e_amounts(m.totals, len(assets), "totals"))


def _enc_fee_quote(m: FeeQuote) -> tuple[Any, ...]:
    fee = m.fee
    if type(fee) is not tuple or not 0 < len(fee) <= MAX_ASSETS:
        raise EncodeError(f"a fee holds 1..{MAX_ASSETS} amounts")
    return (f.encode_bytes(m.query_id, 32, "query ID"), _e_amounts(fee, len(fee), "fee"))


def _enc_propose(m: VirtualPropose) -> tuple[Any, ...]:
    assets = f.encode_assets(m.assets)
    return (
        f.encode_bytes(m.proposal_id, 32, "proposal ID"),
        f.encode_big(m.chain_id, "chain ID"),
        f.encode_bytes(m.adjudicator, 20, "adjudicator"),
        f.encode_uint64(m.challenge_duration, "challenge duration"),
        f.encode_bytes(m.nonce_share, 32, "nonce share"),
        assets,
        f.encode_balances(m.balances, len(assets)),
        f.encode_bytes(m.participant, 20, "participant"),
        f.encode_bytes(m.intermediary, 20, "intermediary"),
        f.encode_bytes(m.parent, 32, "parent"),
    )


def _enc_accept(m: VirtualAccept) -> tuple[Any, ...]:
    return (
        f.encode_bytes(m.proposal_id, 32, "proposal ID"),
        f.encode_bytes(m.nonce_share, 32, "nonce share"),
        f.encode_bytes(m.participant, 20, "participant"),
        f.encode_bytes(m.parent, 32, "parent"),
        f.encode_bytes(m.signature, 65, "signature"),
    )


ENCODERS: Final[dict[type, tuple[bytes, Callable[[Any], tuple[Any, ...]]]]] = {
    VirtualPropose: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_PROPOSE)), _enc_propose),
    VirtualAccept: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_ACCEPT)), _enc_accept),
    VirtualLock: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_LOCK)), _e_proof_message),
    VirtualFold: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_FOLD)), _e_proof_message),
    FeeQuery: (bytes((c.FORMAT_VERSION, TYPE_FEE_QUERY)), _enc_fee_query),
    FeeQuote: (bytes((c.FORMAT_VERSION, TYPE_FEE_QUOTE)), _enc_fee_quote),
}


# -- decoding ----------------------------------------------------------------------------------


def _d_array(value: object, sizes: tuple[int, ...], what: str) -> tuple[Any, ...]:
    if type(value) is not tuple or len(value) not in sizes:
        shown = " or ".join(str(n) for n in sizes)
        raise DecodeError(f"{what} must be an array of {shown} fields")
    return value


def _d_params(value: object) -> VirtualParams:
    duration, nonce, p0, p1, l0, l1 = _d_array(value, (6,), "params")
    try:
        return VirtualParams(
            f.decode_uint64(duration, "challenge duration"),
            f.decode_big(nonce, "nonce"),
            (Address(f.decode_bytes(p0, 20, "participant")),
             Address(f.decode_bytes(p1, 20, "participant"))),
            (ChannelID(f.decode_bytes(l0, 32, "parent")),
             ChannelID(f.decode_bytes(l1, 32, "parent"))),
        )
    except ValueError as exc:  # equal participants or parents, a zero duration
        raise DecodeError(f"invalid params: {exc}") from None


def _d_proof_parts(b: tuple[Any, ...]) -> tuple[State, Signature, VirtualProof]:
    update, params, vstate, sig0, sig1 = b[:5]
    update = _d_array(update, (6, 7), "update")
    state = f.decode_state(update, update[6:])
    signature = Signature(f.decode_bytes(update[5], 65, "signature"))
    virtual = f.decode_state(_d_array(vstate, (5,), "virtual state"))
    fee: tuple[int, ...] = ()
    if len(b) == 6:
        fee = _d_amounts(b[5], len(virtual.assets), "fee")
        if not any(fee):
            raise DecodeError("a fee of zero is sent as no fee")
    proof = VirtualProof(
        _d_params(params),
        virtual,
        (Signature(f.decode_bytes(sig0, 65, "signature")),
         Signature(f.decode_bytes(sig1, 65, "signature"))),
        fee,
    )
    return state, signature, proof


def _d_amounts(value: object, n_assets: int, what: str) -> tuple[int, ...]:
    if type(value) is not tuple or len(value) != n_assets:
        raise DecodeError(f"{what} must hold one amount per asset")
    return tuple(f.decode_big(amount, what) for amount in value)


def _dec_lock(b: tuple[Any, ...]) -> VirtualLock:
    return VirtualLock(*_d_proof_parts(b))


def _dec_fee_query(b: tuple[Any, ...]) -> FeeQuery:
    qid, assets, totals = b
    checked_assets = f.decode_assets(assets)
    return FeeQuery(f.decode_bytes(qid, 32, "query ID"), checked_assets,
                    _d_amounts(totals, len(checked_assets), "totals"))


def _dec_fee_quote(b: tuple[Any, ...]) -> FeeQuote:
    qid, fee = b
    if type(fee) is not tuple or not 0 < len(fee) <= MAX_ASSETS:
        raise DecodeError(f"a fee holds 1..{MAX_ASSETS} amounts")
    return FeeQuote(f.decode_bytes(qid, 32, "query ID"), _d_amounts(fee, len(fee), "fee"))


def _dec_fold(b: tuple[Any, ...]) -> VirtualFold:
    return VirtualFold(*_d_proof_parts(b))


def _dec_propose(b: tuple[Any, ...]) -> VirtualPropose:
    pid, chain, adjudicator, duration, share, assets, balances, participant, via, parent = b
    checked_assets = f.decode_assets(assets)
    return VirtualPropose(
        proposal_id=f.decode_bytes(pid, 32, "proposal ID"),
        chain_id=f.decode_big(chain, "chain ID"),
        adjudicator=Address(f.decode_bytes(adjudicator, 20, "adjudicator")),
        challenge_duration=f.decode_uint64(duration, "challenge duration"),
        nonce_share=f.decode_bytes(share, 32, "nonce share"),
        assets=checked_assets,
        balances=f.decode_balances(balances, len(checked_assets)),
        participant=Address(f.decode_bytes(participant, 20, "participant")),
        intermediary=Address(f.decode_bytes(via, 20, "intermediary")),
        parent=ChannelID(f.decode_bytes(parent, 32, "parent")),
    )


def _dec_accept(b: tuple[Any, ...]) -> VirtualAccept:
    pid, share, participant, parent, sig = b
    return VirtualAccept(
        proposal_id=f.decode_bytes(pid, 32, "proposal ID"),
        nonce_share=f.decode_bytes(share, 32, "nonce share"),
        participant=Address(f.decode_bytes(participant, 20, "participant")),
        parent=ChannelID(f.decode_bytes(parent, 32, "parent")),
        signature=Signature(f.decode_bytes(sig, 65, "signature")),
    )


DECODERS: Final[dict[int, tuple[str, tuple[int, ...], Callable[[tuple[Any, ...]], Any]]]] = {
    TYPE_VIRTUAL_PROPOSE: ("VirtualPropose", (10,), _dec_propose),
    TYPE_VIRTUAL_ACCEPT: ("VirtualAccept", (5,), _dec_accept),
    TYPE_VIRTUAL_LOCK: ("VirtualLock", (5, 6), _dec_lock),
    TYPE_VIRTUAL_FOLD: ("VirtualFold", (5,), _dec_fold),
    TYPE_FEE_QUERY: ("FeeQuery", (3,), _dec_fee_query),
    TYPE_FEE_QUOTE: ("FeeQuote", (2,), _dec_fee_quote),
}

# The virtual-channel messages join the codec's tables (the package perund.wire imports this
# module, so the tables are complete whichever module of the package is imported).
c._ENCODERS.update(ENCODERS)
c._DECODERS.update(DECODERS)
