"""The terms of service: publishing a version (admins), accepting it (each user, signed with
their own key), who stands where (admins), and the gate that keeps a user who has not accepted
the current version from reading or writing anything (`TermsGate`).

Terms and acceptances are signed records in the directory document (appliance/terms.py), so
they reach every node the directory reaches; the current version and who accepted it are
resolved from the accepted entries by the roster (`Roster.terms`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from appliance import certs, ids, terms
from appliance.audit_actions import AuditAction
from appliance.directory_records import Record
from appliance.errors import InvalidInput, NotFound, PermissionDenied, TermsNotAccepted
from appliance.kernel import Kernel
from appliance.model import TermsInfo, TermsStanding
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster

AddEntries = Callable[[Sequence[Record], AuditAction, dict[str, object]], Awaitable[None]]
"""DirectoryService.add_entries: signed entries into the directory, audited, in one transaction."""

SHOW_COMMAND = "rallypoint terms show"
ACCEPT_COMMAND = "rallypoint terms accept"


class TermsGate:
    """The one check every read and write of a user's makes: no current terms, or the acting
    user accepted them. Admins are bound too: the terms are the workspace's rules for everyone
    who reads it, and an admin's acceptance is the record a compliance officer asks for."""

    def __init__(self, identity: IdentityService, roster: Roster) -> None:
        self._identity = identity
        self._roster = roster

    def require_reading(self, action: str) -> None:
        """What reading content takes: the node unlocked, a user signed in, and the current
        terms accepted by them."""
        self._identity.require_reader()
        self.require_accepted(action)

    def require_accepted(self, action: str) -> None:
        state = self._roster.terms
        user = self._identity.user_key
        if state.current is None or not state.binds(user):
            return
        name = self._roster.user_name(user.hex())
        raise TermsNotAccepted(
            f"{name} has not accepted the terms of service (version {state.current.version}, {state.current.title!r}), so {action} is refused: "
            f"read them with `{SHOW_COMMAND}`, then accept them with `{ACCEPT_COMMAND}`"
        )


class TermsService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, add_entries: AddEntries) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._add_entries = add_entries

    def current(self) -> TermsInfo | None:
        """The terms in force (the highest version a trusted admin published), None if none."""
        record = self._roster.terms.current
        return None if record is None else self._info(record)

    def pending(self) -> TermsInfo | None:
        """The current terms if the acting user has not accepted them yet, else None: what the
        console shows before anything else."""
        state = self._roster.terms
        return self.current() if state.binds(self._identity.user_key) else None

    def _info(self, record: terms.Terms) -> TermsInfo:
        publisher = "workspace key" if record.issuer == self._identity.row.workspace_key else self._roster.user_name(record.issuer.hex())
        return TermsInfo(record.version, record.title, record.text, record.published_at, publisher, record.fingerprint.hex())

    async def publish(self, version: int, title: str, text: str) -> TermsInfo:
        """Signs a new version with the acting admin's key and writes it, with that admin's own
        acceptance, into the directory; every node that gets the directory enforces it."""
        issuer = await self._identity.require_admin("terms publish")
        version, title, text = terms.check_version(version), terms.check_title(title), terms.check_text(text)
        current = self._roster.terms.current
        if current is not None and version <= current.version:
            raise InvalidInput(f"version {version} is not newer than the current terms (version {current.version}): publish version {current.version + 1} or higher")
        now = self._kernel.clock()
        record = terms.publish_terms(issuer, workspace=self._identity.row.workspace_key, version=version, title=title, text=text, published_at=now)
        acceptance = terms.accept_terms(issuer, terms=record, node=self._identity.row.node_key, accepted_at=now)
        detail: dict[str, object] = {"version": version, "title": title, "terms": record.fingerprint.hex(), "bytes": len(text.encode("utf-8", "surrogatepass"))}
        await self._add_entries([record, acceptance], AuditAction.TERMS_PUBLISHED, detail)
        return self._info(record)

    async def accept(self, version: int | None = None) -> TermsStanding:
        """The acting user accepts the current terms (`version`, if given, must be it: what was
        read is what is accepted), signed with their own key, on this node. Accepting terms
        already accepted changes nothing."""
        current = self._roster.terms.current
        if current is None:
            raise NotFound("no terms of service are published in this workspace")
        if version is not None and version != current.version:
            raise InvalidInput(f"the current terms are version {current.version}, not {version}: read them with `{SHOW_COMMAND}`")
        user = self._identity.user_key
        self._identity.acting_cert()  # a revoked or unknown user accepts nothing
        if self._roster.terms.accepted(user) is None:
            signer = self._identity.keys.users.get(user)
            if signer is None:
                raise PermissionDenied("this user's key is not unlocked on this node")
            acceptance = terms.accept_terms(signer, terms=current, node=self._identity.row.node_key, accepted_at=self._kernel.clock())
            detail: dict[str, object] = {"version": current.version, "terms": current.fingerprint.hex(), "node": self._identity.node_id}
            await self._add_entries([acceptance], AuditAction.TERMS_ACCEPTED, detail)
        return self._standing(user, self._roster.current.users[user])

    async def status(self) -> list[TermsStanding]:
        """Every current user of the workspace, whether they accepted the current terms, and
        the newest version they accepted, when and on which node (admins only)."""
        await self._identity.require_admin("terms status")
        users = sorted(self._roster.current.users.items(), key=lambda item: item[1].name)
        return [self._standing(key, cert) for key, cert in users]

    def _standing(self, key: bytes, cert: certs.Certificate) -> TermsStanding:
        state = self._roster.terms
        latest = state.latest(key)
        return TermsStanding(
            user=cert.name,
            key=key,
            role=cert.role,
            accepted_version=None if latest is None else latest.version,
            accepted_at=None if latest is None else latest.accepted_at,
            node_name=None if latest is None else self._roster.node_names.get(latest.node, "?"),
            node_id=None if latest is None else ids.key_id(latest.node),
            current=not state.binds(key),
        )
