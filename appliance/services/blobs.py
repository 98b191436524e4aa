"""Attachments: stored once by SHA-256, looked up by hash prefix, under a size limit an
admin sets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import crypto, ids
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import BlobTooLarge, InvalidInput, NotFound
from appliance.kernel import Kernel
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster
from appliance.services.terms import TermsGate

DEFAULT_MAX_BLOB_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes



class BlobsService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster) -> None:
        self._kernel = kernel
        self._identity = identity
        self._terms = TermsGate(identity, roster)  # an attachment is read like a message
        self.max_blob_bytes = DEFAULT_MAX_BLOB_BYTES

    async def load(self) -> None:
        async with self._kernel.store.reading() as conn:
            limit = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == "max_blob_bytes"))).scalar()
        if limit is not None:
            self.max_blob_bytes = int(limit)

    def check_attachment(self, attachment: Attachment) -> tuple[Attachment, bytes]:
        name = os.path.basename(attachment.name.replace("\\", "/"))
        if not name or len(name) > 255 or any(not c.isprintable() for c in name):
            raise InvalidInput(f"invalid attachment name {attachment.name!r}")
        if len(attachment.data) > self.max_blob_bytes:
            raise BlobTooLarge(f"{name} is {len(attachment.data)} bytes; the limit is {self.max_blob_bytes}")
        return Attachment(name, attachment.data), crypto.sha256(attachment.data)

    async def store(self, conn: AsyncConnection, digest: bytes, data: bytes) -> None:
        await conn.run_sync(self.store_in, digest, data, self._kernel.clock())

    @staticmethod
    def store_in(conn: Connection, digest: bytes, data: bytes, now: int) -> None:
        """Stores a blob unless it is there, in a synchronous connection's transaction."""
        exists = conn.execute(select(t.blobs.c.hash).where(t.blobs.c.hash == digest)).first()
        if exists is None:
            conn.execute(insert(t.blobs).values(hash=digest, size=len(data), data=data, added_at=now))

    async def blob(self, digest_hex: str) -> bytes:
        """An attachment by its hash, or by any unique start of it (`read` shows 12 hex digits)."""
        self._terms.require_reading("reading an attachment")
        low, high = ids.hash_prefix_range(digest_hex)
        matching = t.blobs.c.hash.between(low, high)
        async with self._kernel.store.reading() as conn:
            found: Sequence[bytes] = (await conn.execute(select(t.blobs.c.hash).where(matching).limit(2))).scalars().all()
            if len(found) > 1:
                count = (await conn.execute(select(func.count()).select_from(t.blobs).where(matching))).scalar_one()
                raise InvalidInput(f"{digest_hex} starts the hashes of {count} attachments on this node: give more of it")
            data: bytes | None = (await conn.execute(select(t.blobs.c.data).where(t.blobs.c.hash == found[0]))).scalar() if found else None
        if data is None:
            raise NotFound(f"this node does not have blob {digest_hex[:12]}")
        return data

    async def blob_count(self) -> int:
        async with self._kernel.store.reading() as conn:
            return (await conn.execute(select(func.count()).select_from(t.blobs))).scalar_one()

    async def set_max_blob_bytes(self, limit: int) -> None:
        await self._identity.require_admin("set attachment limit")
        if limit < 1:
            raise InvalidInput("the attachment limit must be positive")
        async with self._kernel.store.transaction() as conn:
            updated = await conn.execute(update(t.settings).where(t.settings.c.name == "max_blob_bytes").values(value=str(limit)))
            if updated.rowcount == 0:
                await conn.execute(insert(t.settings).values(name="max_blob_bytes", value=str(limit)))
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.SETTING_CHANGED, {"max_blob_bytes": limit})
        self.max_blob_bytes = limit
