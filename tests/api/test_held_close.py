"""`channel_close`'s `acceptDepositsBack` (the caller accepts the terms of a forced close of a
channel held because the chain lost the peer's deposit): only with `force`, passed on to the
node; a held channel's `depositsBack` in its info, in the currency's unit."""

from __future__ import annotations

import pytest

from perund.api.amounts import Currencies
from perund.api.views import channel_view
from perund.channel.types import ETH
from tests.api.helpers import Api
from tests.channel.factories import ETHER, make_pair


@pytest.fixture
def api() -> Api:
    return Api()


def test_accepting_the_deposits_back_without_force_is_invalid_params(api: Api) -> None:
    session, channel_id = api.session_with_peer()
    error = api.error("channel_close", {"sessionId": session, "channelId": channel_id,
                                        "acceptDepositsBack": True})
    assert error["code"] == -32602 and error["data"]["field"] == "acceptDepositsBack", error
    assert "with force: true" in error["data"]["requirement"], error
    assert api.node.deposits_back_accepted == []


def test_a_forced_close_passes_the_acceptance_on(api: Api) -> None:
    session, channel_id = api.session_with_peer()
    api.call("channel_close", {"sessionId": session, "channelId": channel_id, "force": True,
                               "acceptDepositsBack": True})
    session, channel_id = api.session_with_peer()
    api.call("channel_close", {"sessionId": session, "channelId": channel_id, "force": True})
    assert api.node.deposits_back_accepted == [True, False]


def test_a_held_channel_shows_what_a_forced_close_would_pay_back() -> None:
    alice, _ = make_pair()
    assert "depositsBack" not in channel_view(alice, lambda _: "bob").to_json(Currencies())
    shown = channel_view(alice, lambda _: "bob", deposits_back=((ETH, 5 * ETHER // 2),))
    assert shown.to_json(Currencies())["depositsBack"] == {"ETH": "2.5"}
