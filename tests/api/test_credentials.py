"""Credentials: the registry (tokens, digests, revocation) and who may call what, as an
attacker holding one user's credential would try it: every method of another user's session."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from perund.api.credentials import (
    MAX_PER_SESSION,
    OPERATOR,
    TOKEN_PREFIX,
    Access,
    CredentialRegistry,
    Scope,
    StoredCredential,
)
from perund.api.method_spec import CallContext
from perund.errors import Unauthorized
from tests.api.helpers import OPERATOR_TOKEN, Api

SESSION_A = "aa" * 16
SESSION_B = "bb" * 16


def registry(**kw: Any) -> CredentialRegistry:
    return CredentialRegistry(OPERATOR_TOKEN, clock=lambda: 1_700_000_000.0, **kw)


# -- the registry ---------------------------------------------------------------------------------

def test_a_minted_token_proves_its_credential_and_nothing_else() -> None:
    creds = registry()
    credential, token = creds.issue(SESSION_A, Scope.SESSION, "phone")
    assert token.startswith(TOKEN_PREFIX) and credential.id in token
    assert creds.authenticate(token) == credential
    assert creds.authenticate(token.encode()) == credential
    assert credential.session_id == SESSION_A and credential.label == "phone"
    assert creds.authenticate(OPERATOR_TOKEN) is OPERATOR
    wrong_secret = token[:-1] + ("A" if token[-1] != "A" else "B")
    unknown_id = TOKEN_PREFIX + "00" * 16 + token[len(TOKEN_PREFIX) + 32:]
    bad_separator = token[:len(TOKEN_PREFIX) + 32] + "-" + token[len(TOKEN_PREFIX) + 33:]
    for offered in (wrong_secret, unknown_id, bad_separator, token[:-1], token + "x",
                    OPERATOR_TOKEN + " ", "", "Bearer " + token, None, token.upper()):
        assert creds.authenticate(offered) is None, offered


def test_the_node_keeps_digests_only_and_reads_them_back() -> None:
    creds = registry()
    credential, token = creds.issue(SESSION_A, Scope.READ, "grafana")
    records = [s.to_json() for s in creds.stored(SESSION_A)]
    text = repr(records)
    assert token not in text and token[len(TOKEN_PREFIX) + 33:] not in text
    restored = registry(stored=[StoredCredential.from_json(r, SESSION_A) for r in records])
    assert restored.authenticate(token) == credential
    for broken in ({**records[0], "scope": "operator"}, {**records[0], "sha256": "zz"},
                   {**records[0], "id": "0x1"}, "nonsense", {**records[0], "label": 5}):
        with pytest.raises(ValueError):
            StoredCredential.from_json(broken, SESSION_A)


def test_revoking_ends_a_credential_and_tells_the_listeners() -> None:
    creds = registry()
    ended: list[str] = []
    changes: list[int] = []
    creds.on_revoked(lambda c: ended.append(c.id))
    creds.on_change = lambda: changes.append(1)
    one, one_token = creds.issue(SESSION_A, Scope.SESSION)
    two, two_token = creds.issue(SESSION_A, Scope.READ)
    other, other_token = creds.issue(SESSION_B, Scope.SESSION)
    assert [c.id for c in creds.of_session(SESSION_A)] == [one.id, two.id]
    creds.revoke(SESSION_A, one.id)
    assert creds.authenticate(one_token) is None and not creds.is_live(one)
    with pytest.raises(Exception, match="no such credential"):
        creds.revoke(SESSION_B, two.id)  # another session's credential is not found
    creds.revoke_session(SESSION_A)
    assert creds.authenticate(two_token) is None
    assert creds.authenticate(other_token) == other and creds.is_live(OPERATOR)
    assert ended == [one.id, two.id] and len(changes) == 5


def test_a_session_holds_a_bounded_number_of_credentials() -> None:
    creds = registry()
    for _ in range(MAX_PER_SESSION):
        creds.issue(SESSION_A, Scope.READ)
    with pytest.raises(Exception, match="revoke one first"):
        creds.issue(SESSION_A, Scope.READ)
    creds.issue(SESSION_B, Scope.READ)  # per session, not per node


# -- who may call what ----------------------------------------------------------------------------

class Users:
    """alice and bob, each with a session, a channel, pushed questions, and credentials."""

    def __init__(self) -> None:
        self.api = Api()
        self.alice, self.alice_channel = self.api.session_with_peer()
        self.alice_token = self._token_of_last_open()
        self.bob, self.bob_channel = self.api.session_with_peer()
        self.bob_token = self._token_of_last_open()
        raw_bob = bytes.fromhex(self.bob[2:])
        self.bob_proposal = self.api.node.propose(raw_bob, "bob", {b"\0" * 20: (1, 1)})
        self.bob_update = self.api.node.peer_update(raw_bob, bytes.fromhex(self.bob_channel[2:]),
                                                    b"\0" * 20, 1)
        bob_creds = self.api.credentials.of_session(self.bob[2:])
        self.bob_token_id = "0x" + bob_creds[0].id

    def _token_of_last_open(self) -> str:
        # session_with_peer opened the session through the API as the operator: mint the
        # user's own credential the way the user's client gets it (the reply of session_open
        # is not kept by the helper), here with the operator's right to do so.
        session = self.api.call("session_list")[-1]["sessionId"]
        token: str = self.api.call("session_createToken",
                                   {"sessionId": session, "scope": "session"})["token"]
        return token

    def context(self, token: str) -> CallContext:
        credential = self.api.credentials.authenticate(token)
        assert credential is not None
        return CallContext("ws", None, credential)

    def params_on_bob(self) -> dict[str, dict[str, Any]]:
        """Valid params of every method that names a session, all aimed at bob's."""
        bob, channel = self.bob, self.bob_channel
        return {
            "session_close": {"sessionId": bob, "force": True},
            "session_addPeer": {"sessionId": bob, "peer": {
                "alias": "mallory", "offChainAddress": "0x" + "0d" * 20,
                "commAddress": "127.0.0.1:9"}},
            "session_getPeer": {"sessionId": bob, "alias": "bob"},
            "session_listPeers": {"sessionId": bob},
            "session_balance": {"sessionId": bob},
            "channel_open": {"sessionId": bob, "peer": "bob",
                             "balances": {"ETH": {"self": "1", "peer": "0"}}},
            "channel_respondProposal": {"sessionId": bob, "accept": True,
                                        "proposalId": "0x" + self.bob_proposal.proposal_id.hex()},
            "channel_list": {"sessionId": bob},
            "channel_listRetired": {"sessionId": bob},
            "channel_get": {"sessionId": bob, "channelId": channel},
            "channel_send": {"sessionId": bob, "channelId": channel, "payments": [
                {"currency": "ETH", "payee": "bob", "amount": "1"}]},
            "channel_respondUpdate": {"sessionId": bob, "channelId": channel, "accept": True,
                                      "updateId": "0x" + (self.bob_update.update_id or b"").hex()},
            "channel_close": {"sessionId": bob, "channelId": channel},
            "subscribe": {"sessionId": bob, "topic": "proposals"},
            "session_createToken": {"sessionId": bob, "scope": "session"},
            "session_listTokens": {"sessionId": bob},
            "session_revokeToken": {"sessionId": bob, "tokenId": self.bob_token_id},
            "session_rotateToken": {"sessionId": bob, "tokenId": self.bob_token_id},
            "payment_list": {"sessionId": bob},
            "payment_get": {"sessionId": bob, "paymentId": 0},
        }

    def state_of_bob(self) -> Any:
        session = self.api.node.sessions[bytes.fromhex(self.bob[2:])]
        return (copy.deepcopy(session.channels), copy.deepcopy(session.peers),
                sorted(session.pending), [c.id for c in self.api.credentials.of_session(
                    self.bob[2:])])


@pytest.fixture
def users() -> Users:
    return Users()


def test_every_session_method_is_covered_by_the_matrix(users: Users) -> None:
    named = {m.name for m in users.api.dispatcher.methods
             if any(p.name == "sessionId" for p in m.params)}
    assert named == set(users.params_on_bob())
    # And every method declares who may call it on purpose: none is left at the default.
    levels = {m.name: m.access for m in users.api.dispatcher.methods}
    assert levels["session_open"] is Access.OPERATOR
    assert all(levels[name] in (Access.SESSION, Access.SESSION_READ) for name in named)


def test_alices_credential_is_refused_on_every_method_of_bobs_session(users: Users) -> None:
    before = users.state_of_bob()
    alice = users.context(users.alice_token)
    for method, params in users.params_on_bob().items():
        error = users.api.error(method, params, alice)
        assert error["code"] == Unauthorized.code, (method, error)
        assert error["data"]["category"] == "unauthorized"
        assert users.bob[2:] not in repr(error)
    assert users.state_of_bob() == before
    # The same params work for bob himself (so the refusals above were about the session).
    bob = users.context(users.bob_token)
    assert users.api.call("channel_get", users.params_on_bob()["channel_get"], bob)


def test_a_session_credential_cannot_open_sessions_nor_see_other_users(users: Users) -> None:
    alice = users.context(users.alice_token)
    error = users.api.error("session_open", {"configFile": "bob.yaml"}, alice)
    assert error["code"] == Unauthorized.code and "operator" in error["message"]
    listed = users.api.call("session_list", None, alice)
    assert [s["sessionId"] for s in listed] == [users.alice]
    assert len(users.api.call("session_list")) == 2  # the operator sees both
    assert users.api.call("node_time", None, alice) > 0
    assert users.api.call("rpc.discover", None, alice)["openrpc"]


def test_a_read_credential_reads_and_subscribes_but_moves_nothing(users: Users) -> None:
    alice = users.context(users.alice_token)
    minted = users.api.call("session_createToken", {
        "sessionId": users.alice, "scope": "read", "label": "dashboard"}, alice)
    assert minted["scope"] == "read" and minted["label"] == "dashboard"
    reader = users.context(minted["token"])
    session, channel = users.alice, users.alice_channel
    assert users.api.call("channel_get", {"sessionId": session, "channelId": channel}, reader)
    assert users.api.call("session_balance", {"sessionId": session}, reader)
    assert users.api.call("payment_list", {"sessionId": session}, reader) == {
        "payments": [], "nextCursor": None}
    for method, params in {
        "channel_send": {"sessionId": session, "channelId": channel, "payments": [
            {"currency": "ETH", "payee": "bob", "amount": "1"}]},
        "channel_close": {"sessionId": session, "channelId": channel},
        "session_close": {"sessionId": session},
        "session_createToken": {"sessionId": session, "scope": "session"},
        "session_revokeToken": {"sessionId": session, "tokenId": minted["tokenId"]},
    }.items():
        error = users.api.error(method, params, reader)
        assert error["code"] == Unauthorized.code and "read-only" in error["message"], method
    # It may rotate itself, and the rotated one keeps its scope and label.
    rotated = users.api.call("session_rotateToken", {"sessionId": session}, reader)
    assert rotated["scope"] == "read" and rotated["label"] == "dashboard"
    assert users.api.credentials.authenticate(minted["token"]) is None
    assert users.api.credentials.authenticate(rotated["token"]) is not None


def test_session_open_returns_the_sessions_own_credential_and_close_ends_it() -> None:
    api = Api()
    opened = api.call("session_open", {"configFile": "carol.yaml"})
    mine = api.credentials.authenticate(opened["token"])
    assert mine is not None and mine.scope is Scope.SESSION
    assert mine.session_id == opened["sessionId"][2:]
    context = CallContext("http", None, mine)
    listed = api.call("session_listTokens", {"sessionId": opened["sessionId"]}, context)
    assert [t["tokenId"] for t in listed] == ["0x" + mine.id]
    api.call("session_close", {"sessionId": opened["sessionId"]}, context)
    assert api.credentials.authenticate(opened["token"]) is None
    error = api.error("node_time", None, context)  # the closed session's credential is dead
    assert error["code"] == Unauthorized.code


def test_the_operator_rotates_only_a_named_credential(users: Users) -> None:
    error = users.api.error("session_rotateToken", {"sessionId": users.alice})
    assert error["code"] == 203 and error["data"]["name"] == "tokenId"
    alice = users.api.credentials.authenticate(users.alice_token)
    assert alice is not None
    token_id = "0x" + alice.id
    rotated = users.api.call("session_rotateToken", {"sessionId": users.alice,
                                                     "tokenId": token_id})
    assert users.api.credentials.authenticate(users.alice_token) is None
    assert users.api.credentials.authenticate(rotated["token"]) is not None


@pytest.mark.parametrize("label", ["ok\x1b[2J\x1b[31m", "two\nlines", "\u202eevil", "nul\x00"])
def test_a_label_that_could_redraw_a_terminal_is_refused(users: Users, label: str) -> None:
    """A label is shown to the session's other users and the operator (`token list`): no
    escape sequence, line break or direction mark (the isolation review's finding)."""
    alice = users.context(users.alice_token)
    error = users.api.error("session_createToken", {
        "sessionId": users.alice, "scope": "read", "label": label}, alice)
    assert error["code"] == 203 and error["data"]["name"] == "label"
    listed = users.api.call("session_listTokens", {"sessionId": users.alice}, alice)
    assert all(t["label"] != label for t in listed)


def test_a_session_changes_its_credentials_at_a_bounded_rate() -> None:
    """Each change rewrites the node's sessions file: a session (even through a read-only
    credential rotating itself) may not change its credentials faster than
    limits.api_credential_changes, after a burst (audit finding 6)."""
    burst, per_second = 64, 4  # the documented defaults (docs/security.md)
    api = Api()
    session = api.session()
    made = 0
    refused: dict[str, Any] | None = None
    for _ in range(burst):
        reply = api.reply("session_createToken", {"sessionId": session, "scope": "read"})
        if "error" in reply:
            refused = reply["error"]
            break
        made += 1
        reply = api.reply("session_revokeToken", {"sessionId": session,
                                                  "tokenId": reply["result"]["tokenId"]})
        if "error" in reply:
            refused = reply["error"]
            break
        made += 1
    # session_open's own credential was the first change.
    assert made == burst - 1
    assert refused is not None and refused["code"] == 204
    assert "limits.api_credential_changes" in refused["message"]
    assert refused["data"]["retryAfter"] > 0
    api.clock.advance(1.0)
    for _ in range(per_second):
        api.call("session_createToken", {"sessionId": session, "scope": "read"})
    assert api.error("session_createToken", {"sessionId": session, "scope": "read"})[
        "code"] == 204
    other = api.session()  # per session
    api.call("session_createToken", {"sessionId": other, "scope": "read"})
