"""Questions waiting for the user's answer, kept in the store so that a restart forgets none.

A peer's proposal and a peer's update that needs our user (a payment request, a final update)
live in memory with a timer until the user answers or they expire. A restart ends them: the
peer's side times out or is told at a graceful stop, but the user, who may have seen the
question, would never learn what became of it. So each question is written to the store's meta
records (`question:<id>`) when it arrives and deleted when it is answered, expires or is
withdrawn; what the store still holds when the session opens again is what a restart ended,
and the session tells the user so (`GoneNotice`, pushed like any other notice).

The records ride on the store's group commit: no extra fsync, nothing on the payment path (an
update question is a request or a final update, not a payment).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from twisted.logger import Logger

from perund.channel.types import Address, ChannelID

log = Logger(namespace="perund.client")

PREFIX: Final = "question:"
"""The store's meta names of waiting questions: `question:<id in hex>`."""

GONE_AT_RESTART: Final = ("the node stopped before its user answered; the peer was told it "
                          "was rejected, or its own wait ran out")
"""Why a question is gone after a restart, as the user is told."""

QuestionKind = Literal["proposal", "update"]


class MetaRecords(Protocol):
    """The part of a store that keeps small named values (`perund.storage.ChannelStore`)."""

    def set_meta(self, name: str, value: bytes) -> None:
        """Keep `value` under `name` (durable with the next flush)."""

    def delete_meta(self, name: str) -> None:
        """Forget `name` (durable with the next flush)."""

    def metas(self, prefix: str) -> dict[str, bytes]:
        """Every value whose name starts with `prefix`."""


@dataclass(frozen=True, slots=True)
class GoneQuestion:
    """A question a restart ended before the user answered it."""

    kind: QuestionKind
    question_id: bytes
    peer: Address
    channel_id: ChannelID | None
    expiry: float


class QuestionRecords:
    """Writes a record per waiting question and reads back what a restart left."""

    def __init__(self, store: MetaRecords) -> None:
        self._store = store

    def asked(self, kind: QuestionKind, question_id: bytes, peer: Address,
              channel_id: ChannelID | None, expiry: float) -> None:
        """A question arrived and waits for the user until `expiry` (wall-clock seconds)."""
        record = {"kind": kind, "peer": peer.hex(), "expiry": expiry,
                  "channelId": None if channel_id is None else channel_id.hex()}
        self._store.set_meta(PREFIX + question_id.hex(), json.dumps(record).encode())

    def settled(self, question_id: bytes) -> None:
        """The question is answered, expired or withdrawn: nothing to tell after a restart."""
        self._store.delete_meta(PREFIX + question_id.hex())

    def left_over(self) -> list[GoneQuestion]:
        """The questions a restart ended, oldest expiry first; their records are deleted.
        Records that do not parse are dropped (logged without their content)."""
        gone = []
        for name, raw in self._store.metas(PREFIX).items():
            self._store.delete_meta(name)
            question = _parse(name[len(PREFIX):], raw)
            if question is None:
                log.warn("dropped an unreadable question record {name}", name=name[:80])
            else:
                gone.append(question)
        gone.sort(key=lambda question: question.expiry)
        return gone


def _parse(question_hex: str, raw: bytes) -> GoneQuestion | None:
    try:
        record = json.loads(raw)
        kind = record["kind"]
        channel_hex = record["channelId"]
        question = GoneQuestion(
            kind=kind,
            question_id=bytes.fromhex(question_hex),
            peer=Address(bytes.fromhex(record["peer"])),
            channel_id=None if channel_hex is None else ChannelID(bytes.fromhex(channel_hex)),
            expiry=float(record["expiry"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if kind not in ("proposal", "update") or len(question.peer) != 20 \
            or (kind == "update") != (question.channel_id is not None):
        return None
    return question
