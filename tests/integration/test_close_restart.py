"""A close under way when its node is killed goes on after the restart (perund/session/
closing.py: the close is noted in the session store until it ends), with two real `twistd
perund` daemons on anvil, driven through the API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from perund.chain.anvil import Anvil
from perund.cli.generate import Generated
from tests.integration.daemons import assert_clean_log
from tests.integration.onchain import until, wei
from tests.integration.pair import World


@pytest.fixture
def world(anvil_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[World]:
    w = World(anvil_setup, tmp_path, anvil)
    try:
        yield w
    finally:
        w.close()
    assert_clean_log(w.daemons["bob"])


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_close_cut_by_a_kill_goes_on_after_the_restart(world: World) -> None:
    w = world
    cid = w.open_channel("1", "1")
    w.pay("alice", cid, "0.5")                   # alice 0.5, bob 1.5
    with w.pushes("bob") as bob_pushes:
        closing = w.background(w.call, "alice", "channel_close", channelId=cid)
        first = bob_pushes.wait(lambda p: p.get("type") == "final")  # not answered yet
        w.daemons["alice"].kill()
        with contextlib.suppress(Exception):
            closing.result(30)  # the call died with the node
        w.restart("alice")
        again = bob_pushes.wait(lambda p: p.get("type") == "final"
                                and p["updateId"] != first["updateId"], timeout=60)
        w.call("bob", "channel_respondUpdate", channelId=cid, updateId=again["updateId"],
               accept=True)
        until(lambda: w.phase("alice", cid) == "closed", "alice's channel closed", 60)
        bob_pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
    assert w.phase("bob", cid) == "closed"
    await w.check_payouts(cid, wei("0.5"), wei("1.5"))
