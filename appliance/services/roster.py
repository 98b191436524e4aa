"""The workspace directory as this node trusts it: resolved from every certificate,
revocation, terms record and acceptance ever accepted (`directory_entries`), each entry
decoded once; the terms of service as they stand (`terms`) come with it."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from appliance import certs, directory_records, ids, terms
from appliance import schema as t
from appliance.errors import CertificateInvalid
from appliance.kernel import Kernel


class Roster:
    def __init__(self, kernel: Kernel, workspace_key: bytes) -> None:
        self._kernel = kernel
        self._workspace_key = workspace_key
        self.current = certs.resolve_directory(workspace_key, [], [], kernel.clock())
        self.node_names: dict[bytes, str] = {}
        self.users_ever: dict[bytes, certs.Certificate] = {}
        self.terms = terms.NO_TERMS
        self._decoded: dict[tuple[str, bytes], directory_records.Record] = {}  # entries are checked once

    async def reload(self) -> None:
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.directory_entries.c.kind, t.directory_entries.c.data))).all()
        self.resolve([(row.kind, row.data) for row in rows])

    def resolve(self, entries: Iterable[tuple[str, bytes]]) -> None:
        self.current, decoded = self.resolved(entries)
        self.node_names = {e.key: e.name for e in decoded if isinstance(e, certs.Certificate) and e.kind == "node"}
        user_certs = sorted((e for e in decoded if isinstance(e, certs.Certificate) and e.kind == "user"), key=lambda c: c.issued_at)
        self.users_ever = {c.key: c for c in user_certs}  # newest certificate per user, revoked ones too
        certificates, _, published, accepted = directory_records.split_records(decoded)
        self.terms = terms.resolve_terms(self._workspace_key, directory_records.publishers(self.current, certificates), published, accepted)

    def resolved(self, entries: Iterable[tuple[str, bytes]]) -> tuple[certs.Directory, list[directory_records.Record]]:
        decoded = []
        for kind, data in entries:
            entry = self._decoded.get((kind, data))
            if entry is None:
                try:
                    entry = self._decoded[(kind, data)] = directory_records.decode_record(kind, data)
                except CertificateInvalid:
                    continue  # stored entries were checked on arrival; a damaged one trusts nothing
            decoded.append(entry)
        found_certs, found_revs, _, _ = directory_records.split_records(decoded)
        return certs.resolve_directory(self._workspace_key, found_certs, found_revs, self._kernel.clock()), decoded

    def admin_hexes(self) -> frozenset[str]:
        return admin_hexes(self.current)

    def user_name(self, user_hex: str) -> str:
        try:
            cert = self.current.user(bytes.fromhex(user_hex))
        except ValueError:
            cert = None
        return cert.name if cert else ids.unknown_user(user_hex)


def admin_hexes(directory: certs.Directory) -> frozenset[str]:
    return frozenset(k.hex() for k, c in directory.users.items() if c.role == "admin")
