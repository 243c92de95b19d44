"""`Channel.evolve`: the core's fast copy-with-changes, equal to `dataclasses.replace`."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from perund.channel.phases import Phase
from perund.channel.records import Dispute
from tests.channel.factories import make_pair


def test_evolve_equals_replace_for_every_field_it_takes() -> None:
    alice, _ = make_pair()
    values: dict[str, Any] = {
        "phase": Phase.UPDATING, "current": None, "staged": None, "abandoned": None,
        "sync_sent": True, "fresh_link": True, "signed_up_to": 7, "confirm_updates": True,
        "dispute": Dispute(3, 1234, alice.latest), "reserved": 2000, "resyncing": True,
        "unfunded": True, "checked": alice.current, "funding": ((5, 6),),
    }
    evolvable = {f.name for f in dataclasses.fields(alice)} - {"channel_id", "params", "index"}
    assert set(values) == evolvable  # a new field must be added to evolve too
    for size in (0, 1, 2, len(values)):
        for names in itertools.combinations(values, size):
            changes = {name: values[name] for name in names}
            assert alice.evolve(**changes) == dataclasses.replace(alice, **changes), names
    assert alice.current is not None  # the original is untouched
