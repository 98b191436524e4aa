"""The audit log as read back: entries, and the chain verified against this node's key."""

from __future__ import annotations

import json

from sqlalchemy import select

from appliance import audit
from appliance import schema as t
from appliance.kernel import Kernel
from appliance.model import AuditRecord
from appliance.services.identity import IdentityService


class AuditService:
    def __init__(self, kernel: Kernel, identity: IdentityService) -> None:
        self._kernel = kernel
        self._identity = identity

    async def entries(self, limit: int | None = None) -> list[AuditRecord]:
        query = select(t.audit_log).order_by(t.audit_log.c.seq.desc())
        if limit:
            query = query.limit(limit)
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [AuditRecord(r["seq"], r["at"], r["actor"], r["action"], json.loads(r["detail"])) for r in reversed(rows)]

    async def verify(self) -> audit.AuditVerdict:
        """The chain checked against this node's key; entries from before audit signing (up to
        the store's upgrade) count as legacy."""
        async with self._kernel.store.reading() as conn:
            legacy_until: int = (await conn.execute(select(t.node_identity.c.audit_legacy_until))).scalar_one()
            rows = (await conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq))).mappings().all()
        entries = (audit.AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["detail"], r["prev_hash"], r["hash"], r["signature"]) for r in rows)
        return audit.verify_chain(entries, self._identity.row.node_key, legacy_until=legacy_until)
