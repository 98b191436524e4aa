"""Enrollment: an admin's invitation (certificates and fresh keys for a new node, sealed under
a one-time code) and the join path that installs one on the new node."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

from appliance import atrest, cbor, certs, coded, crypto, documents, identity, ids, recovery_kit
from appliance.audit_actions import AuditAction
from appliance.changes import SignedChange
from appliance.errors import EnrollmentRejected, InvalidInput, WrongPassphrase
from appliance.kernel import Kernel
from appliance.model import Enrollment, RecoveryKit
from appliance.services.directory import DirectoryService
from appliance.services.identity import IdentityRow, IdentityService, Keys, write_identity
from appliance.services.intake import IntakeService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster

ENROLLMENT_FORMAT = "rallypoint-enrollment/1"
MAX_ENROLLMENT_FILE_BYTES = 16 * 1024 * 1024  # certificates and the directory: far below this in any workspace
ENROLLMENT_CODE_CHARS = 12  # 60 bits, behind Argon2id "moderate": not brute-forceable offline


class EnrollmentService:
    def __init__(
        self, kernel: Kernel, identity: IdentityService, roster: Roster, replica: ReplicaService, directory: DirectoryService, intake: IntakeService
    ) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._replica = replica
        self._directory = directory
        self._intake = intake

    async def invite(
        self, node_name: str, user_name: str, role: str = "member", *, kdf: crypto.KdfParams = crypto.MODERATE, with_kit: bool = True
    ) -> Enrollment:
        """Certificates and fresh keys for a new node and its first user, sealed in a file
        that opens only with a one-time code shown here (so a lost stick exposes nothing).
        With `with_kit` (the default), also the node's recovery kit for the admin to keep
        (appliance/recovery_kit.py, KitKind.ENROLLMENT), sealed under a code of its own: the
        node's certificate commits to the kit's incarnation, so its peers accept the node when
        it comes back from that kit. Making the kit is audited (never its code)."""
        issuer = await self._identity.require_admin("invite")
        node_name, user_name, granted = certs.check_name(node_name), certs.check_name(user_name), certs.check_role(role)
        if self._roster.current.user_by_name(user_name) is not None:
            raise InvalidInput(f"user {user_name!r} already exists")
        node_key, user_key = crypto.new_signing_key(self._kernel.rng(32)), crypto.new_signing_key(self._kernel.rng(32))
        now = self._kernel.clock()
        ws = self._identity.row.workspace_key
        kit_incarnation = self._kernel.rng(identity.INCARNATION_BYTES) if with_kit else None
        commitment = certs.recovery_commitment(kit_incarnation) if kit_incarnation is not None else None
        issued = [
            certs.issue_certificate(
                issuer, workspace=ws, kind=certs.SubjectKind.NODE, key=bytes(node_key.verify_key), name=node_name, role=certs.Role.NODE, issued_at=now, recovery=commitment
            ),
            certs.issue_certificate(issuer, workspace=ws, kind=certs.SubjectKind.USER, key=bytes(user_key.verify_key), name=user_name, role=granted, issued_at=now, home=bytes(node_key.verify_key)),
        ]
        node_id = ids.key_id(bytes(node_key.verify_key))
        await self._directory.add_entries(issued, AuditAction.INVITED, {"node": node_name, "node_id": node_id, "user": user_name, "role": role})
        directory_changes = await self._replica.changes_for(documents.DIRECTORY_DOC, [])
        inner = cbor.encode(
            {
                "workspace_name": self._identity.row.workspace_name,
                "workspace_key": ws,
                "node_name": node_name,
                "node_seed": bytes(node_key),
                "user_seed": bytes(user_key),
                "invited_by": self._identity.node_id,
                "issued_at": now,
                "directory": [[c.data, c.signature or b""] for c in directory_changes],
            }
        )
        code = "".join(secrets.choice(ids.CROCKFORD) for _ in range(ENROLLMENT_CODE_CHARS))
        salt = self._kernel.rng(crypto.SALT_BYTES)
        data = await asyncio.to_thread(coded.seal, ENROLLMENT_FORMAT, inner, normalise_code(code), salt, self._kernel.rng(crypto.NONCE_BYTES), kdf)
        kit = None
        if kit_incarnation is not None:
            contents = recovery_kit.KitContents(
                workspace_name=self._identity.row.workspace_name,
                workspace_key=ws,
                node_name=node_name,
                node_seed=bytes(node_key),
                workspace_seed=None,
                default_user=bytes(user_key.verify_key),
                incarnation=kit_incarnation,
                kdf=joined_cost(kdf),
                users=(),
                directory=tuple((c.data, c.signature) for c in directory_changes),
                made_at=now,
                kind=recovery_kit.KitKind.ENROLLMENT,
                first_user_seed=bytes(user_key),
            )
            kit = await self._seal_kit(contents, node_id, kdf)
        return Enrollment(data=data, code=coded.shown(code), node_id=node_id, user_name=user_name, kit=kit)

    async def _seal_kit(self, contents: recovery_kit.KitContents, node_id: str, kdf: crypto.KdfParams) -> RecoveryKit:
        rng = self._kernel.rng
        sealed, kit_code = await asyncio.to_thread(recovery_kit.seal_new_kit, contents, rng(recovery_kit.KIT_CODE_CHARS), rng(crypto.SALT_BYTES), rng(crypto.NONCE_BYTES), kdf)
        async with self._kernel.store.transaction() as conn:
            made: dict[str, object] = {"node": node_id, "name": contents.node_name, "users": 1, "at_enrollment": True}
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.RECOVERY_KIT_MADE, made)
        return RecoveryKit(sealed, coded.shown(kit_code), node_id, 1)

    async def install(self, inner: dict[str, Any], passphrase: str, kdf: crypto.KdfParams, user_secret: str | None = None, key_file: atrest.KeyFile | None = None) -> None:
        """The join path, on the new node: imports the invitation's directory through the normal
        verification path, checks this node's own certificates resolve up to the workspace key,
        and only then writes its identity."""
        row, keys = self._identity.row, self._identity.keys
        signed = [SignedChange(data, sig or None) for data, sig in inner["directory"]]
        await self._intake.import_changes(documents.DIRECTORY_DOC, signed, received_from=inner["invited_by"])
        if self._roster.current.nodes.get(row.node_key) is None or self._roster.current.user(row.default_user) is None:
            raise EnrollmentRejected("the enrollment file's certificates do not verify up to its workspace key")
        await write_identity(self._kernel.store, row, keys, passphrase, kdf, self._kernel.rng, self._kernel.clock(), user_secret, key_file)
        async with self._kernel.store.transaction() as conn:
            joined = {"workspace": self._identity.workspace_id, "node": self._identity.node_id, "invited_by": inner["invited_by"]}
            await self._kernel.audit(conn, self._kernel.clock(), row.default_user.hex(), AuditAction.JOINED, joined)


def enrolled_identity(inner: dict[str, Any], incarnation: bytes, data_key: bytes, kdf: crypto.KdfParams) -> tuple[IdentityRow, Keys]:
    """The identity an opened enrollment file gives the new node."""
    node_key = crypto.new_signing_key(inner["node_seed"])
    user_key = crypto.new_signing_key(inner["user_seed"])
    row = IdentityRow(inner["workspace_name"], inner["workspace_key"], inner["node_name"], bytes(node_key.verify_key), bytes(user_key.verify_key), incarnation, kdf)
    return row, Keys(data_key, node_key, None, {row.default_user: user_key})


def joined_cost(kdf: crypto.KdfParams) -> crypto.KdfParams:
    """The Argon2id cost a node recovered from an enrollment-time kit seals its users' secrets and
    its data key at: what a join sets by default (INTERACTIVE), or the invitation's own cost when
    that is lower (a test's). The kit itself is sealed at the invitation's cost."""
    return kdf if kdf.memlimit <= crypto.INTERACTIVE.memlimit and kdf.opslimit <= crypto.INTERACTIVE.opslimit else crypto.INTERACTIVE


def normalise_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).upper().replace("O", "0").replace("I", "1").replace("L", "1")


def open_enrollment(data: bytes, code: str) -> dict[str, Any]:
    try:
        outer = cbor.decode(data, "enrollment file")
    except InvalidInput as exc:
        raise EnrollmentRejected(f"not an enrollment file ({exc})") from exc
    if isinstance(outer, dict) and outer.get("format") == identity.USED_ENROLLMENT_FORMAT:
        used_at = outer.get("used_at")
        when = f" at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(used_at / 1000))}" if isinstance(used_at, int) else ""
        raise EnrollmentRejected(f"this enrollment file was already used (by node {str(outer.get('node'))[:40]}{when}): ask an admin for a new invitation")
    if not isinstance(outer, dict) or outer.get("format") != ENROLLMENT_FORMAT:
        raise EnrollmentRejected("not a Rallypoint enrollment file (or an unsupported version)")
    try:
        inner_bytes = coded.unseal(outer, normalise_code(code))
    except InvalidInput as exc:
        raise EnrollmentRejected("enrollment file asks for an unreasonable key-derivation cost") from exc
    except WrongPassphrase as exc:
        raise EnrollmentRejected("wrong enrollment code (or the file was altered)") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise EnrollmentRejected("damaged enrollment file") from exc
    inner = cbor.decode(inner_bytes, "enrollment contents")
    if not isinstance(inner, dict):
        raise EnrollmentRejected("damaged enrollment contents")
    return inner
