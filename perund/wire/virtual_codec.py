"""The byte layout of the virtual-channel messages (docs/wire.md, types 12 to 15).

Same rules as `perund.wire.codec`, whose field helpers these use: msgpack arrays, canonical
integers, strict decoding (`DecodeError`), encoding that refuses what it could not decode
(`EncodeError`). A virtual lock or fold nests the ledger's update (an Update body without a
memo, its locks trailing as in an Update) and the virtual channel's params, state (never with
locks) and two signatures:

    VirtualPropose = [proposal_id, chain_id, adjudicator, challenge_duration, nonce_share,
                      assets, balances, participant, intermediary, parent]
    VirtualAccept  = [proposal_id, nonce_share, participant, parent, signature]
    VirtualLock    = [update, params, state, signature0, signature1]
    VirtualFold    = [update, params, state, signature0, signature1]
    params         = [challenge_duration, nonce, participant0, participant1, parent0, parent1]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from perund.channel.types import (
    Address,
    ChannelID,
    Signature,
    State,
    VirtualParams,
    VirtualProof,
)
from perund.errors import DecodeError, EncodeError
from perund.wire import codec as c
from perund.wire.messages import VirtualAccept, VirtualFold, VirtualLock, VirtualPropose

TYPE_VIRTUAL_PROPOSE: Final = 12
TYPE_VIRTUAL_ACCEPT: Final = 13
TYPE_VIRTUAL_LOCK: Final = 14
TYPE_VIRTUAL_FOLD: Final = 15


# -- encoding ----------------------------------------------------------------------------------


def _e_params(p: VirtualParams) -> tuple[Any, ...]:
    if type(p) is not VirtualParams:
        raise EncodeError("params must be VirtualParams")
    return (
        c._e_uint64(p.challenge_duration, "challenge duration"),
        c._e_big(p.nonce, "nonce"),
        c._e_bytes(p.participants[0], 20, "participant"),
        c._e_bytes(p.participants[1], 20, "participant"),
        c._e_bytes(p.parents[0], 32, "parent"),
        c._e_bytes(p.parents[1], 32, "parent"),
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
        *c._e_state(m.state),
        c._e_bytes(m.signature, 65, "signature"),
        *c._e_state_locks(m.state),
    )
    return (
        update,
        _e_params(proof.params),
        c._e_state(proof.state),
        c._e_bytes(sigs[0], 65, "signature"),
        c._e_bytes(sigs[1], 65, "signature"),
    )


def _enc_propose(m: VirtualPropose) -> tuple[Any, ...]:
    assets = c._e_assets(m.assets)
    return (
        c._e_bytes(m.proposal_id, 32, "proposal ID"),
        c._e_big(m.chain_id, "chain ID"),
        c._e_bytes(m.adjudicator, 20, "adjudicator"),
        c._e_uint64(m.challenge_duration, "challenge duration"),
        c._e_bytes(m.nonce_share, 32, "nonce share"),
        assets,
        c._e_balances(m.balances, len(assets)),
        c._e_bytes(m.participant, 20, "participant"),
        c._e_bytes(m.intermediary, 20, "intermediary"),
        c._e_bytes(m.parent, 32, "parent"),
    )


def _enc_accept(m: VirtualAccept) -> tuple[Any, ...]:
    return (
        c._e_bytes(m.proposal_id, 32, "proposal ID"),
        c._e_bytes(m.nonce_share, 32, "nonce share"),
        c._e_bytes(m.participant, 20, "participant"),
        c._e_bytes(m.parent, 32, "parent"),
        c._e_bytes(m.signature, 65, "signature"),
    )


ENCODERS: Final[dict[type, tuple[bytes, Callable[[Any], tuple[Any, ...]]]]] = {
    VirtualPropose: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_PROPOSE)), _enc_propose),
    VirtualAccept: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_ACCEPT)), _enc_accept),
    VirtualLock: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_LOCK)), _e_proof_message),
    VirtualFold: (bytes((c.FORMAT_VERSION, TYPE_VIRTUAL_FOLD)), _e_proof_message),
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
            c._d_uint64(duration, "challenge duration"),
            c._d_big(nonce, "nonce"),
            (Address(c._d_bytes(p0, 20, "participant")),
             Address(c._d_bytes(p1, 20, "participant"))),
            (ChannelID(c._d_bytes(l0, 32, "parent")), ChannelID(c._d_bytes(l1, 32, "parent"))),
        )
    except ValueError as exc:  # equal participants or parents, a zero duration
        raise DecodeError(f"invalid params: {exc}") from None


def _d_proof_parts(b: tuple[Any, ...]) -> tuple[State, Signature, VirtualProof]:
    update, params, vstate, sig0, sig1 = b
    update = _d_array(update, (6, 7), "update")
    state = c._d_state(update, update[6:])
    signature = Signature(c._d_bytes(update[5], 65, "signature"))
    proof = VirtualProof(
        _d_params(params),
        c._d_state(_d_array(vstate, (5,), "virtual state")),
        (Signature(c._d_bytes(sig0, 65, "signature")),
         Signature(c._d_bytes(sig1, 65, "signature"))),
    )
    return state, signature, proof


def _dec_lock(b: tuple[Any, ...]) -> VirtualLock:
    return VirtualLock(*_d_proof_parts(b))


def _dec_fold(b: tuple[Any, ...]) -> VirtualFold:
    return VirtualFold(*_d_proof_parts(b))


def _dec_propose(b: tuple[Any, ...]) -> VirtualPropose:
    pid, chain, adjudicator, duration, share, assets, balances, participant, via, parent = b
    checked_assets = c._d_assets(assets)
    return VirtualPropose(
        proposal_id=c._d_bytes(pid, 32, "proposal ID"),
        chain_id=c._d_big(chain, "chain ID"),
        adjudicator=Address(c._d_bytes(adjudicator, 20, "adjudicator")),
        challenge_duration=c._d_uint64(duration, "challenge duration"),
        nonce_share=c._d_bytes(share, 32, "nonce share"),
        assets=checked_assets,
        balances=c._d_balances(balances, len(checked_assets)),
        participant=Address(c._d_bytes(participant, 20, "participant")),
        intermediary=Address(c._d_bytes(via, 20, "intermediary")),
        parent=ChannelID(c._d_bytes(parent, 32, "parent")),
    )


def _dec_accept(b: tuple[Any, ...]) -> VirtualAccept:
    pid, share, participant, parent, sig = b
    return VirtualAccept(
        proposal_id=c._d_bytes(pid, 32, "proposal ID"),
        nonce_share=c._d_bytes(share, 32, "nonce share"),
        participant=Address(c._d_bytes(participant, 20, "participant")),
        parent=ChannelID(c._d_bytes(parent, 32, "parent")),
        signature=Signature(c._d_bytes(sig, 65, "signature")),
    )


DECODERS: Final[dict[int, tuple[str, tuple[int, ...], Callable[[tuple[Any, ...]], Any]]]] = {
    TYPE_VIRTUAL_PROPOSE: ("VirtualPropose", (10,), _dec_propose),
    TYPE_VIRTUAL_ACCEPT: ("VirtualAccept", (5,), _dec_accept),
    TYPE_VIRTUAL_LOCK: ("VirtualLock", (5,), _dec_lock),
    TYPE_VIRTUAL_FOLD: ("VirtualFold", (5,), _dec_fold),
}

# The virtual-channel messages join the codec's tables (the package perund.wire imports this
# module, so the tables are complete whichever module of the package is imported).
c._ENCODERS.update(ENCODERS)
c._DECODERS.update(DECODERS)
