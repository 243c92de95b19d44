"""Channel persistence: what a channel client needs from a store, and the stores themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.internet.defer import Deferred

from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import StoreError


class ChannelStore(Protocol):
    """Where a channel client keeps its channels (docs/specification.md §5).

    `put` records the latest value of a channel; `flush` makes every `put` so far durable and
    returns None when they already are, or a Deferred that fires once they are. A message that
    depends on a write leaves only after the flush that covers it: several puts may share one
    flush (group commit).
    """

    def put(self, channel: Channel, by_us: bool = False) -> None:
        """Record `channel` (replacing its previous value); `by_us`: we proposed the state it
        makes current (for the payment history)."""

    def note(self, channel: Channel) -> None:
        """Take `channel` as the channel's latest value without writing it: the next `put`
        derives its payments from it; a restart finds the value last put."""

    def flush(self) -> Deferred[None] | None:
        """Make every put so far durable: None if already done, else a Deferred."""

    def when_durable(self, durable: Callable[[StoreError | None], object]) -> bool:
        """`flush` without a Deferred: False if every put so far is durable; else True, and
        `durable` is told once they are (None) or cannot be (the `StoreError`)."""

    def channels(self) -> Iterable[Channel]:
        """Every channel recorded, as last put."""

    def forget(self, channel_id: ChannelID) -> None:
        """Drop a channel that never came to exist on-chain (a proposal that failed)."""

    def set_meta(self, name: str, value: bytes) -> None:
        """Keep a small value under `name` (durable with the next flush)."""

    def delete_meta(self, name: str) -> None:
        """Forget the value under `name`, if any (durable with the next flush)."""

    def metas(self, prefix: str) -> dict[str, bytes]:
        """Every small value whose name starts with `prefix`, by name."""


class MemoryStore:
    """A store that keeps channels in memory only: durable for the life of the process.

    For uses that need no crash safety (the in-memory benchmark mode, tests of the flows);
    nodes use the file-backed store.
    """

    def __init__(self) -> None:
        self._channels: dict[ChannelID, Channel] = {}
        self._meta: dict[str, bytes] = {}

    def put(self, channel: Channel, by_us: bool = False) -> None:
        """Record `channel`."""
        self._channels[channel.channel_id] = channel

    def note(self, channel: Channel) -> None:
        """Record `channel` (in memory, noting and putting are the same)."""
        self._channels[channel.channel_id] = channel

    def flush(self) -> None:
        """Nothing to wait for."""
        return None

    def when_durable(self, durable: Callable[[StoreError | None], object]) -> bool:
        """Nothing to wait for."""
        return False

    def channels(self) -> Iterable[Channel]:
        """Every channel recorded."""
        return list(self._channels.values())

    def forget(self, channel_id: ChannelID) -> None:
        """Drop a channel."""
        self._channels.pop(channel_id, None)

    def set_meta(self, name: str, value: bytes) -> None:
        """Keep a small value under `name`."""
        self._meta[name] = value

    def delete_meta(self, name: str) -> None:
        """Forget the value under `name`."""
        self._meta.pop(name, None)

    def metas(self, prefix: str) -> dict[str, bytes]:
        """Every small value whose name starts with `prefix`."""
        return {name: value for name, value in self._meta.items() if name.startswith(prefix)}
