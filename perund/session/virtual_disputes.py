"""Disputes of a client's virtual channels and of ledgers that lock them (docs/protocol.md
"Virtual channels", disputes).

Rules, stated once:

- a virtual channel's `Register` goes through our ledger (`registerVirtualState`) with the
  parent state the chain takes (`_parent_state`);
- a ledger state with locks registers each of its virtual channels with the best state we know
  of it: ours, or the registered one when it is at least as new (`_proof_to_register`);
- a ledger's `Conclude` with locks waits until each of its virtual channels is registered, and
  then concludes them together (`concludeParentState`); a virtual channel's own `Conclude` does
  nothing (its parents conclude it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger

from perund.channel import events as ev
from perund.channel.records import Channel
from perund.channel.steps import provable
from perund.channel.types import ChannelID, Params, Signature, State, VirtualParams, VirtualProof
from perund.channel.virtual import locks_of, parent_of, proof_of
from perund.session.virtual_onchain import ConcludeParent, RegisterVirtual

log = Logger(namespace="perund.virtual")

NO_SIGNATURES = (Signature(b"\x00" * 65), Signature(b"\x00" * 65))
"""What goes with the registered parent state: the contract does not check its signatures."""

Registration = tuple[State, int]
"""A virtual channel's registered state on the chain and its timeout."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class VirtualDisputes:
    """The core's `Register` and `Conclude` events of a client's channels that are virtual or
    lock virtual channels (module doc), sent as transactions through `settle` (ChainDuties).
    `registrations` and `proofs` say what the chain and the intermediary's records know of a
    virtual channel that `channels` (the client's, live) no longer holds."""

    def __init__(self, *, channels: Mapping[ChannelID, Channel], settle: Callable[[Any], None],
                 registrations: Callable[[ChannelID], Registration | None],
                 proofs: Callable[[ChannelID], VirtualProof | None]) -> None:
        self._channels = channels
        self._settle = settle
        self._registrations = registrations
        self._proofs = proofs
        self._awaiting: dict[ChannelID, ev.Conclude] = {}
        """Parents whose conclusion waits for a virtual channel to be registered."""

    def registered(self, vid: ChannelID) -> None:
        """A virtual channel's registration is known now: a parent waiting for it concludes."""
        for parent_id, conclude in list(self._awaiting.items()):
            if any(lock.channel_id == vid for lock in conclude.state.locked):
                del self._awaiting[parent_id]
                self.conclude(conclude)

    def best_proof(self, vid: ChannelID) -> VirtualProof | None:
        """The latest fully signed state we hold of virtual channel `vid`."""
        channel = self._channels.get(vid)
        if channel is not None and channel.current is not None:
            return proof_of(channel)
        return self._proofs(vid)

    def _proof_to_register(self, vid: ChannelID) -> VirtualProof | None:
        """The virtual state to register through a parent: ours, or the registered one when
        it is at least as new (the contract takes the registered state without signatures;
        an older one would revert the whole registration)."""
        mine = self.best_proof(vid)
        registration = self._registration(vid)
        if mine is not None and registration is not None \
                and registration[0].version >= mine.state.version:
            return VirtualProof(mine.params, registration[0], NO_SIGNATURES)
        return mine

    def _registration(self, vid: ChannelID) -> Registration | None:
        channel = self._channels.get(vid)
        if channel is not None and channel.dispute is not None:
            return channel.dispute.state, channel.dispute.timeout
        return self._registrations(vid)

    def register(self, e: ev.Register) -> None:
        """The core's `Register`: through our parent for a virtual channel, with each virtual
        channel for a ledger state with locks, else as it is."""
        params = e.params
        if e.unproven:
            # The operator should know why the chain gets less than our latest state.
            log.warn("channel {channel_id}: registering version {version}, not our latest "
                     "{latest}: the peer's countersignature on it does not verify (it "
                     "countersigned falsely)", channel_id=_hex(e.channel_id),
                     version=e.state.version, latest=e.unproven)
        if type(params) is VirtualParams:
            channel = self._channels[e.channel_id]
            parent = self._channels.get(parent_of(channel))
            chosen = None if parent is None else _parent_state(parent, e.channel_id)
            if parent is None or chosen is None or type(parent.params) is not Params:
                log.error("virtual channel {vid}: our ledger holds no lock of it to register "
                          "it through", vid=_hex(e.channel_id))
                return
            own = VirtualProof(params, e.state, e.signatures)
            self._settle(RegisterVirtual(parent.channel_id, parent.params, *chosen, own))
            return
        if not e.state.locked or type(params) is not Params:
            self._settle(e)
            return
        for lock in e.state.locked:
            proof = self._proof_to_register(lock.channel_id)
            if proof is None:
                log.error("channel {channel_id}: no state of its virtual channel {vid} to "
                          "register", channel_id=_hex(e.channel_id), vid=_hex(lock.channel_id))
                continue
            self._settle(RegisterVirtual(e.channel_id, params, e.state, e.signatures, proof))

    def conclude(self, e: ev.Conclude) -> None:
        """The core's `Conclude`: nothing for a virtual channel (its parents conclude it);
        a ledger state with locks once every virtual channel is registered."""
        params = e.params
        if type(params) is not Params:
            return
        if not e.state.locked:
            self._settle(e)
            return
        subs: list[State] = []
        not_before = 0
        missing = []
        for lock in e.state.locked:
            registration = self._registration(lock.channel_id)
            if registration is None:
                missing.append(lock.channel_id)
            else:
                subs.append(registration[0])
                not_before = max(not_before, registration[1])
        if not missing:
            self._settle(ConcludeParent(e.channel_id, params, e.state, tuple(subs), not_before))
            return
        self._awaiting[e.channel_id] = e
        for vid in missing:
            proof = self._proof_to_register(vid)
            if proof is not None:
                log.info("channel {channel_id}: registering its virtual channel {vid} before "
                         "concluding", channel_id=_hex(e.channel_id), vid=_hex(vid))
                self._settle(RegisterVirtual(e.channel_id, params, e.state, NO_SIGNATURES,
                                             proof))


def _parent_state(parent: Channel, vid: ChannelID) -> tuple[State, tuple[Signature, Signature]]\
        | None:
    """The parent state to register a virtual channel through: the registered one when it is
    at least as new as ours (its signatures are not checked), else our latest the chain takes
    (`provable`: a payment of ours on the ledger may have left the peer's countersignature
    unchecked), holding the virtual channel's lock either way."""
    dispute = parent.dispute
    current = None if parent.current is None else provable(parent)
    if dispute is not None and vid in locks_of(dispute.state) and (
            current is None or current.state.version <= dispute.version):
        sigs = current.signatures if current is not None and current.state == dispute.state \
            else NO_SIGNATURES
        return dispute.state, sigs
    if current is not None and vid in locks_of(current.state):
        return current.state, current.signatures
    return None
