"""`node_getConfig` as the node answers it: the challenge-duration range is the one its
sessions' proposals are checked against."""

from __future__ import annotations

from types import SimpleNamespace

import pytest_twisted

from perund.api.amounts import Currencies
from perund.channel.proposal import Deployment, challenge_duration_problem
from perund.config import ChainConfig, NodeConfig, Timeouts
from perund.node_api import NodeAPI
from perund.session.session import min_challenge_duration

ADJUDICATOR = b"\x42" * 20


@pytest_twisted.ensureDeferred
async def test_node_get_config_states_the_challenge_duration_range() -> None:
    """The minimum follows the node's reaction time (a poll, the confirmations, a
    transaction's timeout: 3 x (2 + 2 x 12 + 60) s here), the maximum is 30 days; a duration
    just inside either bound passes a proposal's check, one just outside does not."""
    config = NodeConfig(chain=ChainConfig(confirmations=2, poll_interval=2.0),
                        timeouts=Timeouts(tx=60.0))
    node = SimpleNamespace(config=config,
                           chain=SimpleNamespace(chain_id=1337, adjudicator=ADJUDICATOR))
    info = (await NodeAPI(node).node_get_config()).to_json(Currencies())  # type: ignore[arg-type]
    low, high = info["minChallengeDuration"], info["maxChallengeDuration"]
    assert (low, high) == (258, 30 * 86400)
    # What a session checks proposals against (`Session.open` builds it so).
    deployment = Deployment(1337, ADJUDICATOR, min_challenge_duration(config))
    for inside in (low, high):
        assert challenge_duration_problem(inside, deployment) is None
    for outside in (low - 1, high + 1):
        assert challenge_duration_problem(outside, deployment) is not None
