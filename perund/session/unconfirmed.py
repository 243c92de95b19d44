"""What the chain showed a session's settlement do in blocks its watcher had not passed yet,
read again once it has (docs/chain.md, "Reorganisations").

A transaction's receipt, or an event read at the newest block, comes from a block that a
reorganisation may still replace; the watcher finds a replacement only of blocks it has passed
(it keeps the hash of its cursor block). So a refutation or a conclusion dropped while it was
less than `chain.confirmations` deep was taken for done, and never sent again: a stale state
then won its dispute, or a closed channel was reported paid while the chain held its deposits.

Rules, stated once:

- a registration of ours (`register`, `registerVirtualState`) is noted with its receipt's
  block, and every conclusion (ours from its receipt, the peer's from the events found) with its
  block (`Unconfirmed`);
- once the watcher's cursor has reached that block (`UnconfirmedCheck.passed`), the chain is
  read again: a registration whose version the chain holds no longer (nor a newer one, nor a
  conclusion) is sent again; a conclusion the chain no longer shows, with the deposits still
  held, is settled again (`ConclusionLost`). From then on a replacement of the block changes
  the cursor block's hash, which the watcher finds;
- a note of a channel the session no longer holds is dropped, and one whose read failed is
  kept for the next poll.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from perund.chain.backend import ChainBackend
from perund.chain.results import Phase as ChainPhase
from perund.channel import events as ev
from perund.channel.changes import Change, ConclusionLost
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import PerundError
from perund.session.chain_check import lost_conclusions
from perund.session.virtual_onchain import RegisterVirtual

log = Logger(namespace="perund.settlement")

Registration = ev.Register | RegisterVirtual
"""A registration transaction of ours (the duty that sent it, to be sent again)."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


@dataclass(frozen=True, slots=True)
class _Registered:
    block: int
    command: Registration


@dataclass(frozen=True, slots=True)
class _Concluded:
    block: int
    channel_id: ChannelID


Note = _Registered | _Concluded


class Unconfirmed:
    """The registrations and conclusions seen in blocks the watcher may not have passed yet."""

    def __init__(self) -> None:
        self._notes: list[Note] = []

    def __len__(self) -> int:
        return len(self._notes)

    def registered(self, command: Registration, block: int) -> None:
        """Our registration `command` was mined in `block`."""
        self._notes.append(_Registered(block, command))

    def concluded(self, channel_id: ChannelID, block: int) -> None:
        """The chain showed channel `channel_id` concluded in `block`."""
        self._notes.append(_Concluded(block, channel_id))

    def due(self, cursor: int) -> list[Note]:
        """The notes of blocks up to `cursor`, taken out."""
        due = [note for note in self._notes if note.block <= cursor]
        if due:
            self._notes = [note for note in self._notes if note.block > cursor]
        return due

    def keep(self, note: Note) -> None:
        """Put back a note whose check could not be made (read again at the next poll)."""
        self._notes.append(note)


def _holds(status_phase: ChainPhase, status_version: int, version: int) -> bool:
    """Whether a channel's on-chain record keeps a registration of `version`: registered at
    that version or a newer one."""
    return status_phase is ChainPhase.DISPUTE and status_version >= version


class UnconfirmedCheck:
    """Reads the chain again about the notes of `unconfirmed` as the watcher passes their
    blocks (module doc). `channels` are the session's, `chain_input` feeds one of them a change,
    `resettle` sends a settlement transaction again (the client's duties)."""

    def __init__(self, chain: ChainBackend, unconfirmed: Unconfirmed, *,
                 channels: Callable[[], Mapping[ChannelID, Channel]],
                 chain_input: Callable[[ChannelID, Change], None],
                 resettle: Callable[[Any], None], session_id: str) -> None:
        self._chain = chain
        self._unconfirmed = unconfirmed
        self._channels = channels
        self._chain_input = chain_input
        self._resettle = resettle
        self._session_id = session_id

    async def passed(self, cursor: int) -> None:
        """The watcher's cursor reached `cursor`: check the notes of blocks up to it."""
        for note in self._unconfirmed.due(cursor):
            try:
                if isinstance(note, _Registered):
                    await self._check_registration(note)
                else:
                    await self._check_conclusion(note)
            except PerundError as exc:
                log.warn("channel {channel_id}: reading the chain to confirm what block {block} "
                         "showed failed ({error}); reading again at the next poll",
                         channel_id=_hex(_channel_of(note)), block=note.block, error=exc)
                self._unconfirmed.keep(note)

    async def _check_registration(self, note: _Registered) -> None:
        command = note.command
        if command.channel_id not in self._channels():
            return
        wanted = [(command.channel_id, command.state.version)]
        if type(command) is RegisterVirtual:
            wanted.append((command.proof.state.channel_id, command.proof.state.version))
        for channel_id, version in wanted:
            status = await self._chain.channel_status(channel_id)
            if status.phase is ChainPhase.CONCLUDED:
                return  # settled (a parent's conclusion settles its virtual channels too)
            if not _holds(status.phase, status.version, version):
                log.warn("channel {channel_id}: our registration of version {version} in block "
                         "{block} is no longer on the chain (a reorganisation replaced the block "
                         "before the watcher passed it); registering again",
                         channel_id=_hex(channel_id), version=version, block=note.block)
                self._resettle(command)
                return

    async def _check_conclusion(self, note: _Concluded) -> None:
        channel = self._channels().get(note.channel_id)
        if channel is None:
            return
        if await lost_conclusions(self._chain, [channel]):
            log.warn("session {session_id}: the conclusion of channel {channel_id} in block "
                     "{block} is no longer on the chain, which still holds its deposits (a "
                     "reorganisation replaced the block before the watcher passed it); settling "
                     "it again", session_id=self._session_id,
                     channel_id=_hex(note.channel_id), block=note.block)
            self._chain_input(note.channel_id, ConclusionLost())


def _channel_of(note: Note) -> ChannelID:
    return note.command.channel_id if isinstance(note, _Registered) else note.channel_id
