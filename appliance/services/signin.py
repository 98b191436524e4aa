"""Signing in as one of this node's local users. Unlocking the node (the passphrase) opens the
node's own keys; each local user's signing key is sealed under a key derived from THAT user's
secret (appliance.user_keys), so whoever unlocked the node cannot act as another user.

A sign-in checks the user's secret (and their TOTP or recovery code when they enrolled), keeps
their key in memory and makes them the acting user - or, while they still have a step to take
(set their own secret, enrol MFA), keeps them from acting until they took it. Failed sign-ins
are counted per user in the store (a restart does not reset them) and every one is audited.
Admins reset a user's secret (a one-time one the user replaces) and set the console's idle
lock; the MFA service (`.mfa`) enrols authenticators and holds the MFA settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nacl.signing
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, crypto, ids, totp, user_keys
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import InvalidInput, MfaCodeRequired, NotFound, RallypointError, SignInLockedOut, SignInRefused, WrongPassphrase
from appliance.feed import FeedEvent, NodeWiped
from appliance.kernel import Kernel
from appliance.services.directory import DirectoryService
from appliance.services.identity import IdentityService
from appliance.services.mfa import MfaService
from appliance.services.roster import Roster
from appliance.services.signed_in import Session, SignedIn, SignInResult, SignInStep
from appliance.settings_rows import read_setting, write_setting

REFUSED = "sign-in refused: wrong user name or secret"
CONSOLE_LOCK_SETTING = "console_lock_seconds"  # idle time before the console locks; 0 or absent: never
MAX_CONSOLE_LOCK_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class LocalUser:
    """A user whose key this node keeps (who may sign in here)."""

    name: str
    key: bytes
    role: certs.Role


@dataclass(frozen=True)
class SecretReset:
    user: str
    secret: str  # the one-time secret to hand over (shown once)
    rekeyed: bool  # the old key was sealed under a secret nobody knows: the user got a new key


class SignInService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, directory: DirectoryService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._directory = directory
        self._signed = SignedIn(identity)
        self.mfa = MfaService(kernel, identity, roster, self._signed)
        kernel.feed.subscribe(self._wiped)

    def _wiped(self, event: FeedEvent) -> None:
        """A remote wipe: the signed-in user's keys leave memory with everything else."""
        if isinstance(event, NodeWiped):
            self._signed.close()

    def local_users(self) -> list[LocalUser]:
        """Who may sign in on this node (what the console lists), by name."""
        current = self._roster.current.users
        return sorted((LocalUser(c.name, k, c.role) for k, c in current.items() if k in self._identity.keys.local), key=lambda u: u.name)

    @property
    def result(self) -> SignInResult | None:
        """The open session's state: None before a sign-in and after a sign-out."""
        session = self._signed.session
        return None if session is None else session.result()

    async def sign_in(self, name: str, secret: str, totp_code: str | None = None) -> SignInResult:
        """Signs `name` in with their secret (and code, when they enrolled MFA). Raises
        SignInRefused (one message whether the name or the secret was wrong), SignInLockedOut
        or MfaCodeRequired (the secret was right; ask for the code and call again)."""
        cert = self._roster.current.user_by_name(name)
        if cert is None or cert.key not in self._identity.keys.local:
            await asyncio.to_thread(user_keys.derive, secret, self._kernel.rng(crypto.SALT_BYTES), self._identity.row.kdf)  # as slow as a real try
            await self._audit_failure(None, name, "unknown user")
            raise SignInRefused(REFUSED)
        return await self._sign_in(cert.key, name, secret, totp_code, audited=True)

    async def sign_in_own(self, secret: str, totp_code: str | None = None) -> SignInResult:
        """Signs the node's own user in (the passphrase is their secret until they change it), as
        the node opens; a success is not audited, as an unlock is not."""
        user = self._identity.row.default_user
        cert = self._roster.current.user(user)
        return await self._sign_in(user, cert.name if cert else ids.key_id(user), secret, totp_code, audited=False)

    async def _sign_in(self, user: bytes, name: str, secret: str, totp_code: str | None, *, audited: bool) -> SignInResult:
        async with self._kernel.store.reading() as conn:
            failures = (await conn.execute(select(t.sign_in_failures.c.locked_until).where(t.sign_in_failures.c.public_key == user))).first()
            enrolled = await self._has_mfa(conn, user)
        locked_until = (failures.locked_until if failures is not None else 0) or 0
        if locked_until and locked_until > (now := self._kernel.clock()):
            await self._audit_failure(user, name, "locked out")
            raise SignInLockedOut(f"too many failed sign-ins as {name}: try again in {(locked_until - now + 999) // 1000} s")
        opened = await self._open_key(user, name, secret)
        if opened is None:
            await self._failed(user, name, "wrong secret")
            raise SignInRefused(REFUSED)
        key, derived, salt, must_change = opened
        if enrolled and totp_code is None:
            raise MfaCodeRequired(f"{name} also signs in with a code from their authenticator app (or a recovery code)")
        # Only what must be recorded is written (a code used, failures cleared, the sign-in
        # audited): the node's own user still signs in on a node the disk left read-only.
        writes = enrolled or failures is not None or audited
        async with self._kernel.store.transaction() if writes else self._kernel.store.reading() as conn:
            verdict = await self.mfa.check(conn, user, name, derived, totp_code) if enrolled and totp_code is not None else None
            accepted = not enrolled or verdict in (totp.CodeVerdict.ACCEPTED, totp.CodeVerdict.RECOVERY_USED)
            steps = [SignInStep.CHANGE_SECRET] if must_change else []
            if accepted:
                if failures is not None:
                    await conn.execute(delete(t.sign_in_failures).where(t.sign_in_failures.c.public_key == user))
                if await self.mfa.must_enrol(conn, user):
                    steps.append(SignInStep.ENROL_MFA)
                if audited:
                    await self._kernel.audit(conn, self._kernel.clock(), user.hex(), AuditAction.SIGNED_IN, {"user": name, "mfa": enrolled, "steps": [str(s) for s in steps]})
        if not accepted:
            await self._failed(user, name, "replayed code" if verdict is totp.CodeVerdict.REPLAYED else "wrong code")
            raise SignInRefused("sign-in refused: wrong or already used code")
        return self._signed.open(Session(user, name, key, derived, salt, steps))

    async def _has_mfa(self, conn: AsyncConnection, user: bytes) -> bool:
        return (await conn.execute(select(t.user_mfa.c.public_key).where(t.user_mfa.c.public_key == user))).first() is not None

    async def _open_key(self, user: bytes, name: str, secret: str) -> tuple[nacl.signing.SigningKey, bytes, bytes, bool] | None:
        """The user's key, their derived key, its salt and whether they must change their secret;
        None when the secret is wrong. The node's own user, whose key is still sealed under the
        data key (a home from before per-user sign-in), has it moved under the passphrase."""
        kdf = self._identity.row.kdf
        async with self._kernel.store.reading() as conn:
            row = (await conn.execute(select(t.user_secrets).where(t.user_secrets.c.public_key == user))).mappings().first()
            legacy = (await conn.execute(select(t.sealed_secrets.c.sealed).where(t.sealed_secrets.c.public_key == user, t.sealed_secrets.c.kind == "user"))).scalar()
            ident = (await conn.execute(select(t.node_identity.c.sealed_data_key, t.node_identity.c.kdf_salt))).first()
        if row is not None:
            derived = await asyncio.to_thread(user_keys.derive, secret, row["salt"], kdf)
            seed = user_keys.open_sealed(derived, row["sealed"])
            return None if seed is None else (crypto.new_signing_key(seed), derived, row["salt"], bool(row["must_change"]))
        if legacy is None or ident is None:  # not a local user after all (removed meanwhile)
            await self._audit_failure(user, name, "no key on this node")
            raise SignInRefused(REFUSED)
        if user != self._identity.row.default_user:
            await self._audit_failure(user, name, "no secret of their own yet")
            raise SignInRefused(f"{name} has no secret of their own yet: an admin sets a one-time one with `rallypoint user reset-secret {name}`")
        try:
            await asyncio.to_thread(crypto.open_with_passphrase, secret, ident.sealed_data_key, ident.kdf_salt, kdf)
        except WrongPassphrase:
            return None
        key = self._legacy_key(legacy)
        salt = self._kernel.rng(crypto.SALT_BYTES)
        derived = await asyncio.to_thread(user_keys.derive, secret, salt, kdf)
        async with self._kernel.store.transaction() as conn:
            await self._keep_key(conn, user, key, derived, salt, must_change=False)
            await self._kernel.audit(conn, self._kernel.clock(), user.hex(), AuditAction.SECRET_CHANGED, {"user": name, "upgrade": "key moved from the data key under the user's secret"})
        return key, derived, salt, False

    def _legacy_key(self, sealed: bytes) -> nacl.signing.SigningKey:
        seed = crypto.secretbox_open(self._identity.keys.data_key, sealed)
        if seed is None:
            raise RallypointError("a sealed user key is damaged")
        return crypto.new_signing_key(seed)

    async def _keep_key(self, conn: AsyncConnection, user: bytes, key: nacl.signing.SigningKey, derived: bytes, salt: bytes, *, must_change: bool) -> None:
        """Stores `user`'s key sealed under their derived key, in place of any earlier copy."""
        sealed = user_keys.seal(derived, bytes(key), self._kernel.rng(crypto.NONCE_BYTES))
        now = self._kernel.clock()
        values = {"salt": salt, "sealed": sealed, "must_change": must_change, "changed_at": now}
        if (await conn.execute(update(t.user_secrets).where(t.user_secrets.c.public_key == user).values(**values))).rowcount == 0:
            await conn.execute(insert(t.user_secrets).values(public_key=user, **values))
        await conn.execute(delete(t.sealed_secrets).where(t.sealed_secrets.c.public_key == user, t.sealed_secrets.c.kind == "user"))

    async def _failed(self, user: bytes, name: str, reason: str) -> None:
        """Counts a failure in a row for `user`, and locks them out for a while from the fifth."""
        now = self._kernel.clock()
        async with self._kernel.store.transaction() as conn:
            before = (await conn.execute(select(t.sign_in_failures.c.failures).where(t.sign_in_failures.c.public_key == user))).scalar()
            failures = (before or 0) + 1
            until = totp.locked_until_after(failures, now)
            values = {"failures": failures, "locked_until": until, "last_failure_at": now}
            if before is None:
                await conn.execute(insert(t.sign_in_failures).values(public_key=user, **values))
            else:
                await conn.execute(update(t.sign_in_failures).where(t.sign_in_failures.c.public_key == user).values(**values))
            await self._kernel.audit(conn, now, "-", AuditAction.SIGN_IN_FAILED, {"user": name, "reason": reason, "failures": failures})
            if until:
                await self._kernel.audit(conn, now, "-", AuditAction.SIGN_IN_LOCKED_OUT, {"user": name, "failures": failures, "until": until})

    async def _audit_failure(self, user: bytes | None, name: str, reason: str) -> None:
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), "-", AuditAction.SIGN_IN_FAILED, {"user": name[:64], "reason": reason})

    def sign_out(self) -> None:
        """Drops the signed-in user's keys from memory."""
        self._signed.close()

    async def change_secret(self, new_secret: str) -> SignInResult:
        """The signed-in user sets their own secret (also while it is their due step); their key
        and TOTP secret are sealed again under it. A must-change secret cannot be kept."""
        session = self._signed.require()
        user_keys.check_secret(new_secret)
        kdf = self._identity.row.kdf
        if SignInStep.CHANGE_SECRET in session.steps and await asyncio.to_thread(user_keys.derive, new_secret, session.salt, kdf) == session.derived:
            raise InvalidInput("choose a secret of your own, not the one you were given")
        salt = self._kernel.rng(crypto.SALT_BYTES)
        derived = await asyncio.to_thread(user_keys.derive, new_secret, salt, kdf)
        async with self._kernel.store.transaction() as conn:
            await self._keep_key(conn, session.user, session.key, derived, salt, must_change=False)
            await self.mfa.reseal(conn, session.user, session.derived, derived)
            await self._kernel.audit(conn, self._kernel.clock(), session.user.hex(), AuditAction.SECRET_CHANGED, {"user": session.name})
        session.derived, session.salt = derived, salt
        return self._signed.done(SignInStep.CHANGE_SECRET)

    async def reset_secret(self, name: str, one_time: str | None = None) -> SecretReset:
        """Admin: gives local user `name` a one-time secret (made up when not given) that they
        must replace at their next sign-in; their lock-out ends. A key still under the data key
        moves under it (and that copy goes); a key sealed under a secret nobody knows any more,
        or one this node lost (a user its certificate homes here whom the kit made at enrollment
        did not hold), cannot be opened by anyone, so the user gets a new key, certified with their name and
        role, and the old one is revoked. Audited."""
        issuer = await self._identity.require_admin("user reset-secret")
        cert = self._roster.current.user_by_name(name)
        homed_here = cert is not None and cert.home == self._identity.row.node_key  # a key this node lost (recovered from a kit made at enrollment)
        if cert is None or (cert.key not in self._identity.keys.local and not homed_here):
            raise NotFound(f"no local user {name!r} on this node")
        if cert.key == self._identity.user_key:
            raise InvalidInput("change your own secret with `rallypoint user change-secret`")
        secret = one_time or user_keys.one_time_secret(self._kernel.rng(user_keys.ONE_TIME_SECRET_CHARS))
        user_keys.check_secret(secret)
        async with self._kernel.store.reading() as conn:
            legacy = (await conn.execute(select(t.sealed_secrets.c.sealed).where(t.sealed_secrets.c.public_key == cert.key, t.sealed_secrets.c.kind == "user"))).scalar()
        salt = self._kernel.rng(crypto.SALT_BYTES)
        derived = await asyncio.to_thread(user_keys.derive, secret, salt, self._identity.row.kdf)
        actor = self._identity.user_key.hex()
        if legacy is not None:
            key = self._legacy_key(legacy)
            async with self._kernel.store.transaction() as conn:
                await self._keep_key(conn, cert.key, key, derived, salt, must_change=True)
                await self._forget(conn, cert.key)
                await self._kernel.audit(conn, self._kernel.clock(), actor, AuditAction.SECRET_RESET, {"user": name, "rekeyed": False})
            return SecretReset(name, secret, False)
        key = crypto.new_signing_key(self._kernel.rng(32))
        new = bytes(key.verify_key)
        now = self._kernel.clock()
        workspace = self._identity.row.workspace_key
        revocation = certs.issue_revocation(issuer, workspace=workspace, subject=cert.key, reason=f"secret reset: {name} has a new key", revoked_at=now)
        renewed = certs.issue_certificate(
            issuer, workspace=workspace, kind=certs.SubjectKind.USER, key=new, name=name, role=cert.role, issued_at=now, home=self._identity.row.node_key, attributes=cert.attributes
        )

        async def rekey(conn: AsyncConnection) -> None:
            await self._keep_key(conn, new, key, derived, salt, must_change=True)
            await conn.execute(delete(t.user_secrets).where(t.user_secrets.c.public_key == cert.key))
            await self._forget(conn, cert.key)

        detail: dict[str, object] = {"user": name, "rekeyed": True, "old_key": cert.key.hex(), "key": new.hex()}
        await self._directory.add_entries([revocation, renewed], AuditAction.SECRET_RESET, detail, rekey)
        self._identity.keys.local.discard(cert.key)
        self._identity.keys.local.add(new)
        return SecretReset(name, secret, True)

    async def _forget(self, conn: AsyncConnection, user: bytes) -> None:
        """What a reset ends: the lock-out, and an authenticator sealed under the old secret."""
        await conn.execute(delete(t.sign_in_failures).where(t.sign_in_failures.c.public_key == user))
        await conn.execute(delete(t.user_mfa).where(t.user_mfa.c.public_key == user))
        await conn.execute(delete(t.recovery_codes).where(t.recovery_codes.c.public_key == user))

    async def console_lock_seconds(self) -> int:
        """Idle seconds before the console locks (0: it does not)."""
        async with self._kernel.store.reading() as conn:
            value = await read_setting(conn, CONSOLE_LOCK_SETTING)
        return int(value) if value else 0

    async def set_console_lock(self, seconds: int) -> int:
        """Admin: the console's idle lock (0 turns it off); audited."""
        await self._identity.require_admin("console lock")
        if not 0 <= seconds <= MAX_CONSOLE_LOCK_SECONDS:
            raise InvalidInput(f"the idle lock is 0 (off) to {MAX_CONSOLE_LOCK_SECONDS} seconds")
        async with self._kernel.store.transaction() as conn:
            await write_setting(conn, CONSOLE_LOCK_SETTING, str(seconds) if seconds else None)
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.CONSOLE_LOCK_SET, {"seconds": seconds})
        return seconds
