"""Per-user sign-in and MFA on one node (issue 16 points 1-4): each local user's key opens only
with that user's secret, failed sign-ins are audited and rate-limited across restarts, TOTP
codes are checked against the node's clock with a skew window and never twice, recovery codes
work once, admins require and reset MFA, and homes from before the upgrade move over."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

from appliance import crypto
from appliance.errors import MfaCodeRequired, NotSignedIn, SignInLockedOut, SignInRefused
from appliance.node import Node
from appliance.services.signed_in import SignInStep
from tests.conftest import FAST, PASSPHRASE, connect_node_db

START = 1_800_000_000_000
BOB_FIRST = "bob-initial-1"
BOB_OWN = "bob's own secret"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


async def _alice_and_bob(home: Path, clock: Clock) -> None:
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=clock) as alice:
        await alice.chat.create_channel("general")
        added = await alice.directory.add_user("bob", secret=BOB_FIRST)
        assert added.initial_secret is None and added.local


async def _actions(node: Node) -> list[tuple[str, object]]:
    return [(e.action, e.detail.get("reason", e.detail.get("user"))) for e in await node.audit.entries()]


async def test_a_second_local_user_signs_in_with_their_own_secret_and_the_operator_cannot_act_as_them(tmp_path: Path) -> None:
    home, clock = tmp_path / "alpha", Clock()
    await _alice_and_bob(home, clock)
    with pytest.raises(SignInRefused, match="wrong user name or secret"):
        await Node.open(home, PASSPHRASE, as_user="bob", clock=clock)  # the passphrase is not bob's secret
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:
        assert node.identity.whoami().user_name == "alice"
        assert bytes.fromhex(next(u.key.hex() for u in node.directory.users() if u.name == "bob")) not in node.identity.keys.users
        result = await node.signin.sign_in("bob", BOB_FIRST)
        assert result.steps == (SignInStep.CHANGE_SECRET,)
        with pytest.raises(NotSignedIn):  # nothing is signed until bob sets his own secret
            await node.chat.post("general", "too early")
        with pytest.raises(Exception, match="not the one you were given"):
            await node.signin.change_secret(BOB_FIRST)
        assert (await node.signin.change_secret(BOB_OWN)).complete
        await node.chat.post("general", "hello from bob")
        node.signin.sign_out()
        with pytest.raises(NotSignedIn):
            await node.chat.post("general", "after sign-out")
        for read in (node.views.list_channels(), node.views.read("general"), node.views.search("hello")):
            with pytest.raises(NotSignedIn):  # nothing is read either until the next sign-in
                await read
        actions = await _actions(node)
        assert ("signed_in", "bob") in actions and ("secret_changed", "bob") in actions
    with pytest.raises(SignInRefused):
        await Node.open(home, PASSPHRASE, as_user="bob", user_secret=BOB_FIRST, clock=clock)  # the initial one is gone
    async with await Node.open(home, PASSPHRASE, as_user="bob", user_secret=BOB_OWN, clock=clock) as bob:
        assert bob.identity.whoami().user_name == "bob"
        assert [(m.author, m.text) for m in await bob.views.read("general")] == [("bob", "hello from bob")]


async def test_wrong_secrets_are_refused_audited_and_locked_out_across_a_restart(tmp_path: Path) -> None:
    home, clock = tmp_path / "alpha", Clock()
    await _alice_and_bob(home, clock)
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:
        with pytest.raises(SignInRefused, match="wrong user name or secret"):
            await node.signin.sign_in("nobody", "whatever secret")  # same answer as a wrong secret
        for _ in range(4):
            with pytest.raises(SignInRefused, match="wrong user name or secret"):
                await node.signin.sign_in("bob", "not bob's secret")
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:  # a restart keeps the count
        with pytest.raises(SignInRefused):
            await node.signin.sign_in("bob", "not bob's secret")  # the fifth: locked out for 30 s
        with pytest.raises(SignInLockedOut, match="try again in 30 s"):
            await node.signin.sign_in("bob", BOB_FIRST)  # even the right secret waits
        actions = await _actions(node)
        assert actions.count(("sign_in_failed", "wrong secret")) == 5
        assert ("sign_in_failed", "unknown user") in actions and ("sign_in_failed", "locked out") in actions
        assert [e.detail["failures"] for e in await node.audit.entries() if e.action == "sign_in_locked_out"] == [5]
    clock.now += 31_000
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:
        with pytest.raises(SignInRefused):
            await node.signin.sign_in("bob", "still wrong")  # the sixth: 60 s
        clock.now += 59_000
        with pytest.raises(SignInLockedOut, match="in 1 s"):
            await node.signin.sign_in("bob", BOB_FIRST)
        clock.now += 1_000
        assert (await node.signin.sign_in("bob", BOB_FIRST)).user == "bob"  # a success ends the count
        with pytest.raises(SignInRefused):
            await node.signin.sign_in("bob", "wrong again")
        assert (await node.signin.sign_in("bob", BOB_FIRST)).user == "bob"


async def _enrol(node: Node, clock: Clock) -> tuple[pyotp.TOTP, list[str]]:
    enrolment = node.signin.mfa.begin_enrol()
    assert enrolment.uri.startswith("otpauth://totp/") and enrolment.secret in enrolment.uri
    app = pyotp.TOTP(enrolment.secret)  # the authenticator app
    codes, _ = await node.signin.mfa.confirm_enrol(app.at(clock.now // 1000))
    return app, codes


async def test_totp_codes_within_the_window_are_accepted_once_and_recovery_codes_once(tmp_path: Path) -> None:
    home, clock = tmp_path / "alpha", Clock()
    await _alice_and_bob(home, clock)
    async with await Node.open(home, PASSPHRASE, as_user="bob", user_secret=BOB_FIRST, clock=clock) as node:
        await node.signin.change_secret(BOB_OWN)
        app, codes = await _enrol(node, clock)
        assert len(codes) == 10 and len(set(codes)) == 10
        assert (await node.signin.mfa.status()).enrolled
    with pytest.raises(MfaCodeRequired):
        await Node.open(home, PASSPHRASE, as_user="bob", user_secret=BOB_OWN, clock=clock)
    clock.now += 60_000  # two steps on
    at = clock.now // 1000
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:
        with pytest.raises(SignInRefused, match="wrong or already used code"):
            await node.signin.sign_in("bob", BOB_OWN, app.at(at - 60))  # two steps behind: outside +-1
        assert (await node.signin.sign_in("bob", BOB_OWN, app.at(at + 30))).complete  # one step ahead (skew)
        with pytest.raises(SignInRefused, match="wrong or already used code"):
            await node.signin.sign_in("bob", BOB_OWN, app.at(at + 30))  # the same code again: a replay
        with pytest.raises(SignInRefused):
            await node.signin.sign_in("bob", BOB_OWN, app.at(at))  # older than the last accepted step
        with pytest.raises(SignInRefused):
            await node.signin.sign_in("bob", "not bob's secret", app.at(at + 60))  # a good code needs the secret too
        assert (await node.signin.sign_in("bob", BOB_OWN, codes[3].lower())).complete  # a recovery code
        with pytest.raises(SignInRefused):
            await node.signin.sign_in("bob", BOB_OWN, codes[3])  # once only
        assert (await node.signin.mfa.status()).recovery_codes_left == 9
        reasons = [e.detail.get("reason") for e in await node.audit.entries() if e.action == "sign_in_failed"]
        assert reasons == ["wrong code", "replayed code", "replayed code", "wrong secret", "wrong code"]
        assert [e.action for e in await node.audit.entries()].count("recovery_code_used") == 1
    clock.now += 120_000
    at = clock.now // 1000
    async with await Node.open(home, PASSPHRASE, clock=clock) as alice:
        with pytest.raises(SignInRefused):
            await alice.signin.sign_in("bob", BOB_OWN, app.at(at - 60))  # two steps behind
        await alice.signin.sign_in("alice", PASSPHRASE)
        await alice.signin.mfa.set_window(3)  # a field box whose clock drifted
        assert (await alice.signin.sign_in("bob", BOB_OWN, app.at(at - 60))).complete
    with connect_node_db(home / "node.db") as db:  # the operator sees no TOTP secret
        sealed = db.execute("SELECT sealed_secret FROM user_mfa").fetchone()[0]
        assert app.secret.encode() not in sealed


async def test_admins_require_mfa_for_a_role_and_reset_a_users_mfa(tmp_path: Path) -> None:
    home, clock = tmp_path / "alpha", Clock()
    await _alice_and_bob(home, clock)
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:
        with pytest.raises(Exception, match="unknown role"):
            await node.signin.mfa.require("captain")
        assert (await node.signin.mfa.require("member")).required == "member"
        result = await node.signin.sign_in("bob", BOB_FIRST)
        assert result.steps == (SignInStep.CHANGE_SECRET, SignInStep.ENROL_MFA)
        assert not (await node.signin.change_secret(BOB_OWN)).complete
        with pytest.raises(NotSignedIn):
            await node.chat.post("general", "not yet")
        _, _ = await _enrol(node, clock)
        assert node.signin.result is not None and node.signin.result.complete
        await node.chat.post("general", "enrolled")
        with pytest.raises(Exception, match="needs the admin role"):
            await node.signin.mfa.reset("bob")
        with pytest.raises(Exception, match="needs the admin role"):
            await node.signin.set_console_lock(60)
        clock.now += 30_000
        await node.signin.sign_in("alice", PASSPHRASE)  # alice is an admin, MFA is required of members only
        await node.signin.mfa.reset("bob")
        await node.signin.mfa.require(None)
        assert await node.signin.set_console_lock(300) == 300 and await node.signin.console_lock_seconds() == 300
        entries = [(e.action, e.detail) for e in await node.audit.entries()]
        assert ("mfa_reset", {"user": "bob", "was_enrolled": True}) in entries
        assert [d["required"] for a, d in entries if a == "mfa_required_set"] == ["member", "off"]
        assert ("console_lock_set", {"seconds": 300}) in entries
        assert [d["action"] for a, d in entries if a == "permission_denied"] == ["mfa reset", "console lock"]
        assert (await node.signin.sign_in("bob", BOB_OWN)).complete  # no code asked any more


async def test_a_home_from_before_per_user_sign_in_moves_its_keys(tmp_path: Path) -> None:
    """The store as the previous version left it: every user's key under the data key."""
    home, clock = tmp_path / "alpha", Clock()
    await _alice_and_bob(home, clock)
    async with await Node.open(home, PASSPHRASE, as_user="bob", user_secret=BOB_FIRST, clock=clock) as node:
        await node.signin.change_secret(BOB_OWN)
        data_key = node.identity.keys.data_key
        bob_key, bob_seed = node.identity.user_key, bytes(node.identity.user_signing_key())
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:
        alice_key, alice_seed = node.identity.row.default_user, bytes(node.identity.user_signing_key())
    with connect_node_db(home / "node.db") as db:
        db.execute("DELETE FROM user_secrets")
        for pub, seed in ((alice_key, alice_seed), (bob_key, bob_seed)):
            db.execute("INSERT INTO sealed_secrets (public_key, kind, sealed) VALUES (?, 'user', ?)", (pub, crypto.secretbox_seal(data_key, seed, crypto.random_bytes(24))))
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:  # alice's key moves under the passphrase
        await node.chat.post("general", "after the upgrade")
        with pytest.raises(SignInRefused, match="an admin sets a one-time one with `rallypoint user reset-secret bob`"):
            await node.signin.sign_in("bob", BOB_FIRST)
        await node.signin.sign_in("alice", PASSPHRASE)
        reset = await node.signin.reset_secret("bob")
        assert not reset.rekeyed and len(reset.secret) == 19
        assert (await node.signin.sign_in("bob", reset.secret)).steps == (SignInStep.CHANGE_SECRET,)
        await node.signin.change_secret(BOB_OWN)
        await node.chat.post("general", "bob after the upgrade")
        actions = await _actions(node)
        assert ("secret_changed", "alice") in actions and ("secret_reset", "bob") in actions
    with connect_node_db(home / "node.db") as db:
        assert db.execute("SELECT count(*) FROM sealed_secrets WHERE kind = 'user'").fetchone() == (0,)
        assert sorted(r[0] for r in db.execute("SELECT public_key FROM user_secrets")) == sorted([alice_key, bob_key])


async def test_an_admin_reset_of_a_forgotten_secret_gives_the_user_a_new_key(tmp_path: Path) -> None:
    home, clock = tmp_path / "alpha", Clock()
    await _alice_and_bob(home, clock)
    async with await Node.open(home, PASSPHRASE, clock=clock) as node:
        old = node.directory.current.user_by_name("bob")
        assert old is not None
        with pytest.raises(Exception, match="change your own secret"):
            await node.signin.reset_secret("alice")
        reset = await node.signin.reset_secret("bob", "handed-over-1")
        assert reset.rekeyed and reset.secret == "handed-over-1"
        new = node.directory.current.user_by_name("bob")
        assert new is not None and new.key != old.key and new.role == old.role
        assert old.key in node.directory.current.revoked
        assert [u.name for u in node.signin.local_users()] == ["alice", "bob"]
        assert (await node.signin.sign_in("bob", "handed-over-1")).steps == (SignInStep.CHANGE_SECRET,)
        await node.signin.change_secret(BOB_OWN)
        await node.chat.post("general", "bob with a new key")
        assert node.identity.whoami().user_key == new.key

