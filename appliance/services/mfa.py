"""Second factor for local users: enrolment of an authenticator app (TOTP, RFC 6238), the
check of a code or a one-time recovery code at sign-in, and the admin's settings - who must
use MFA, how much clock skew is accepted - and reset of a user's enrolment. The TOTP secret
is sealed under the user's secret-derived key, so the node's operator cannot read it."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, crypto, totp, user_keys
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import InvalidInput, NotFound, RallypointError, SignInRefused
from appliance.kernel import Kernel
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster
from appliance.services.signed_in import SignedIn, SignInResult, SignInStep
from appliance.settings_rows import read_setting, write_setting

REQUIRED_SETTING = "mfa_required"  # "all", a role, or absent (nobody must)
WINDOW_SETTING = "totp_window"  # steps of 30 s accepted either side of now
EVERYONE = "all"


@dataclass(frozen=True)
class MfaEnrolment:
    """What the user copies into their authenticator app: the URI (as a QR code) or the secret."""

    user: str
    secret: str
    uri: str


@dataclass(frozen=True)
class MfaStatus:
    user: str
    enrolled: bool
    recovery_codes_left: int
    required: bool


@dataclass(frozen=True)
class MfaPolicy:
    required: str | None  # EVERYONE, a role, or None
    window: int


class MfaService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, signed: SignedIn) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._signed = signed
        self._enrolling: tuple[bytes, str] | None = None  # (user, TOTP secret) until confirmed

    async def policy(self) -> MfaPolicy:
        async with self._kernel.store.reading() as conn:
            return await self._policy(conn)

    async def _policy(self, conn: AsyncConnection) -> MfaPolicy:
        window = await read_setting(conn, WINDOW_SETTING)
        return MfaPolicy(await read_setting(conn, REQUIRED_SETTING), int(window) if window else totp.DEFAULT_WINDOW)

    async def must_enrol(self, conn: AsyncConnection, user: bytes) -> bool:
        """Whether MFA is required of `user` (by their role) and they have not enrolled."""
        required = (await self._policy(conn)).required
        cert = self._roster.current.user(user)
        if required is None or (required != EVERYONE and (cert is None or cert.role != required)):
            return False
        return not await self._enrolled(conn, user)

    async def _enrolled(self, conn: AsyncConnection, user: bytes) -> bool:
        return (await conn.execute(select(t.user_mfa.c.public_key).where(t.user_mfa.c.public_key == user))).first() is not None

    async def status(self) -> MfaStatus:
        """The signed-in user's enrolment."""
        session = self._signed.require()
        async with self._kernel.store.reading() as conn:
            enrolled = await self._enrolled(conn, session.user)
            left = len((await conn.execute(select(t.recovery_codes.c.id).where(t.recovery_codes.c.public_key == session.user, t.recovery_codes.c.used_at.is_(None)))).all())
            policy = await self._policy(conn)
        cert = self._roster.current.user(session.user)
        required = policy.required == EVERYONE or (policy.required is not None and cert is not None and cert.role == policy.required)
        return MfaStatus(session.name, enrolled, left, required)

    def begin_enrol(self) -> MfaEnrolment:
        """A new TOTP secret for the signed-in user (also while enrolment is their due step);
        nothing is stored until a code from the app confirms it."""
        session = self._signed.require()
        secret = totp.new_secret(self._kernel.rng(totp.SECRET_BYTES))
        self._enrolling = (session.user, secret)
        return MfaEnrolment(session.name, secret, totp.provisioning_uri(secret, session.name, self._identity.row.workspace_name))

    async def confirm_enrol(self, code: str) -> tuple[list[str], SignInResult]:
        """Stores the secret once `code` matches it, replacing any earlier enrolment, and returns
        the ten recovery codes (shown once: only their salted hashes are kept)."""
        session = self._signed.require()
        if self._enrolling is None or self._enrolling[0] != session.user:
            raise InvalidInput("start the enrolment first (a new secret for the authenticator app)")
        secret = self._enrolling[1]
        now = self._kernel.clock()
        async with self._kernel.store.reading() as conn:
            window = (await self._policy(conn)).window
        check = totp.check_code(secret, code, now, window, 0)
        if check.verdict is not totp.CodeVerdict.ACCEPTED:
            raise SignInRefused("that code does not match: check the app's clock and type the code it shows now")
        codes = totp.new_recovery_codes(self._kernel.rng(totp.RECOVERY_CODES * totp.RECOVERY_CODE_CHARS))
        sealed = user_keys.seal(session.derived, secret.encode("ascii"), self._kernel.rng(crypto.NONCE_BYTES))
        async with self._kernel.store.transaction() as conn:
            await self._forget(conn, session.user)
            await conn.execute(insert(t.user_mfa).values(public_key=session.user, sealed_secret=sealed, enrolled_at=now, last_step=check.step))
            for plain in codes:
                salt = self._kernel.rng(totp.RECOVERY_SALT_BYTES)
                await conn.execute(insert(t.recovery_codes).values(public_key=session.user, salt=salt, digest=totp.recovery_digest(plain, salt)))
            await self._kernel.audit(conn, now, session.user.hex(), AuditAction.MFA_ENROLLED, {"user": session.name})
        self._enrolling = None
        return codes, self._signed.done(SignInStep.ENROL_MFA)

    async def check(self, conn: AsyncConnection, user: bytes, name: str, derived: bytes, code: str) -> totp.CodeVerdict | None:
        """At sign-in, in its transaction: None when `user` has not enrolled; else the verdict
        on `code` - a TOTP code in the window and newer than the last one accepted, or an
        unused recovery code (then used up, and audited)."""
        row = (await conn.execute(select(t.user_mfa).where(t.user_mfa.c.public_key == user))).mappings().first()
        if row is None:
            return None
        now = self._kernel.clock()
        if totp.looks_like_recovery_code(code):
            unused = (await conn.execute(select(t.recovery_codes).where(t.recovery_codes.c.public_key == user, t.recovery_codes.c.used_at.is_(None)))).mappings().all()
            for candidate in unused:
                if hmac.compare_digest(totp.recovery_digest(code, candidate["salt"]), candidate["digest"]):
                    await conn.execute(update(t.recovery_codes).where(t.recovery_codes.c.id == candidate["id"]).values(used_at=now))
                    await self._kernel.audit(conn, now, user.hex(), AuditAction.RECOVERY_CODE_USED, {"user": name, "left": len(unused) - 1})
                    return totp.CodeVerdict.RECOVERY_USED
            return totp.CodeVerdict.WRONG
        opened = user_keys.open_sealed(derived, row["sealed_secret"])
        if opened is None:
            raise RallypointError(f"{name}'s sealed TOTP secret is damaged: an admin can reset their MFA")
        verdict = totp.check_code(opened.decode("ascii"), code, now, (await self._policy(conn)).window, row["last_step"])
        if verdict.verdict is totp.CodeVerdict.ACCEPTED:
            await conn.execute(update(t.user_mfa).where(t.user_mfa.c.public_key == user).values(last_step=verdict.step))
        return verdict.verdict

    async def reseal(self, conn: AsyncConnection, user: bytes, old: bytes, new: bytes) -> None:
        """The user's secret changed: their TOTP secret moves under the new derived key."""
        row = (await conn.execute(select(t.user_mfa.c.sealed_secret).where(t.user_mfa.c.public_key == user))).first()
        if row is None:
            return
        opened = user_keys.open_sealed(old, row.sealed_secret)
        if opened is None:
            raise RallypointError("the sealed TOTP secret is damaged: an admin can reset this user's MFA")
        sealed = user_keys.seal(new, opened, self._kernel.rng(crypto.NONCE_BYTES))
        await conn.execute(update(t.user_mfa).where(t.user_mfa.c.public_key == user).values(sealed_secret=sealed))

    async def _forget(self, conn: AsyncConnection, user: bytes) -> bool:
        gone = (await conn.execute(delete(t.user_mfa).where(t.user_mfa.c.public_key == user))).rowcount
        await conn.execute(delete(t.recovery_codes).where(t.recovery_codes.c.public_key == user))
        return bool(gone)

    async def reset(self, name: str) -> None:
        """Admin: removes `name`'s authenticator and recovery codes (a lost phone); audited."""
        await self._identity.require_admin("mfa reset")
        cert = self._roster.current.user_by_name(name)
        if cert is None or cert.key not in self._identity.keys.local:
            raise NotFound(f"no local user {name!r} on this node")
        async with self._kernel.store.transaction() as conn:
            had = await self._forget(conn, cert.key)
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.MFA_RESET, {"user": name, "was_enrolled": had})

    async def require(self, scope: str | None) -> MfaPolicy:
        """Admin: MFA for everyone (EVERYONE), for one role, or for nobody (None); audited."""
        await self._identity.require_admin("mfa require")
        if scope is not None and scope != EVERYONE:
            scope = certs.check_role(scope)
        async with self._kernel.store.transaction() as conn:
            await write_setting(conn, REQUIRED_SETTING, scope)
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.MFA_REQUIRED_SET, {"required": scope or "off"})
            return await self._policy(conn)

    async def set_window(self, steps: int) -> MfaPolicy:
        """Admin: how many 30 s steps either side of the node's clock a code may be from; audited."""
        await self._identity.require_admin("mfa window")
        if not 0 <= steps <= totp.MAX_WINDOW:
            raise InvalidInput(f"the window is 0 to {totp.MAX_WINDOW} steps of {totp.STEP_SECONDS} s either side")
        async with self._kernel.store.transaction() as conn:
            await write_setting(conn, WINDOW_SETTING, str(steps))
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.MFA_WINDOW_SET, {"window": steps})
            return await self._policy(conn)
