"""The workspace directory as this node trusts it: resolved from every certificate and
revocation ever accepted (`directory_entries`), each entry decoded once."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from appliance import certs
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
        self._decoded: dict[tuple[str, bytes], certs.Certificate | certs.Revocation] = {}  # entries are checked once

    async def reload(self) -> None:
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.directory_entries.c.kind, t.directory_entries.c.data))).all()
        self.resolve([(row.kind, row.data) for row in rows])

    def resolve(self, entries: Iterable[tuple[str, bytes]]) -> None:
        self.current, decoded = self.resolved(entries)
        self.node_names = {e.key: e.name for e in decoded if isinstance(e, certs.Certificate) and e.kind == "node"}
        user_certs = sorted((e for e in decoded if isinstance(e, certs.Certificate) and e.kind == "user"), key=lambda c: c.issued_at)
        self.users_ever = {c.key: c for c in user_certs}  # newest certificate per user, revoked ones too

    def resolved(self, entries: Iterable[tuple[str, bytes]]) -> tuple[certs.Directory, list[certs.Certificate | certs.Revocation]]:
        decoded = []
        for kind, data in entries:
            entry = self._decoded.get((kind, data))
            if entry is None:
                try:
                    entry = self._decoded[(kind, data)] = decode_entry(kind, data)
                except CertificateInvalid:
                    continue  # stored entries were checked on arrival; a damaged one trusts nothing
            decoded.append(entry)
        return certs.resolve_directory(self._workspace_key, *split_entries(decoded), self._kernel.clock()), decoded

    def admin_hexes(self) -> frozenset[str]:
        return admin_hexes(self.current)

    def user_name(self, user_hex: str) -> str:
        try:
            cert = self.current.user(bytes.fromhex(user_hex))
        except ValueError:
            cert = None
        return cert.name if cert else f"unknown:{user_hex[:8]}"


def admin_hexes(directory: certs.Directory) -> frozenset[str]:
    return frozenset(k.hex() for k, c in directory.users.items() if c.role == "admin")


def decode_entry(kind: str, data: bytes) -> certs.Certificate | certs.Revocation:
    return certs.decode_certificate(data) if kind == "certificate" else certs.decode_revocation(data)


def split_entries(entries: Iterable[certs.Certificate | certs.Revocation]) -> tuple[list[certs.Certificate], list[certs.Revocation]]:
    found_certs: list[certs.Certificate] = []
    found_revs: list[certs.Revocation] = []
    for entry in entries:
        if isinstance(entry, certs.Certificate):
            found_certs.append(entry)
        else:
            found_revs.append(entry)
    return found_certs, found_revs


def entry_kind(entry: certs.Certificate | certs.Revocation) -> str:
    return "certificate" if isinstance(entry, certs.Certificate) else "revocation"
