"""Certificates, revocations and the resolved directory. Pure functions of bytes and time.

A certificate says: this key is this user (with a workspace role) or this node, issued by
the workspace key or by an admin whose own certificate chains to the workspace key.
The directory a node trusts is computed from every certificate and revocation it has
ever seen (append-only), never from what a document currently shows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import nacl.signing

from appliance import cbor, crypto, policy
from appliance.errors import CertificateInvalid, InvalidInput

CERT_DOMAIN = b"rallypoint/certificate/v1\x00"
REVOCATION_DOMAIN = b"rallypoint/revocation/v1\x00"
RECOVERY_DOMAIN = b"rallypoint/recovery-incarnation/v1\x00"
MAX_NAME = 64
T = TypeVar("T")


class Role(StrEnum):
    """What a certificate lets its subject do, as certificates and the store spell it."""

    ADMIN = "admin"
    MEMBER = "member"
    OBSERVER = "observer"
    NODE = "node"  # every node certificate's role
    REVOKED = "revoked"  # never in a certificate: what `whoami` says of a user whose certificate is gone


ROLES = (Role.ADMIN, Role.MEMBER, Role.OBSERVER)  # the roles a user certificate grants


class SubjectKind(StrEnum):
    """Who a certificate is about."""

    USER = "user"
    NODE = "node"


class Trust(StrEnum):
    """How this node treats another node, by the directory (and, for LAN sightings, the
    workspace it announces)."""

    TRUSTED = "trusted"  # a current node of this workspace
    UNKNOWN = "unknown"  # no certificate here (yet): an enrollment still to arrive, or a stranger
    REVOKED = "revoked"
    OTHER_WORKSPACE = "other workspace"  # seen on the LAN announcing another workspace


@dataclass(frozen=True)
class Certificate:
    workspace: bytes
    kind: SubjectKind
    key: bytes
    name: str
    role: Role  # users: one of ROLES; nodes: Role.NODE
    issuer: bytes
    issued_at: int  # ms since the epoch
    expires_at: int | None
    signature: bytes
    encoded: bytes = field(compare=False, repr=False)
    home: bytes | None = None  # users: the node holding the user's key (routes private channels)
    attributes: policy.Attributes = ()  # users: what an admin assigned (organisation, clearance...), sorted
    recovery: bytes | None = None  # nodes: commits to the incarnation of the kit the admin made at enrollment

    @property
    def fingerprint(self) -> bytes:
        return crypto.sha256(self.encoded)

    def recovers_as(self, incarnation: bytes) -> bool:
        """Whether `incarnation` is the one this node's enrollment-time recovery kit presents."""
        return self.recovery is not None and self.recovery == recovery_commitment(incarnation)

    def valid_at(self, now_ms: int) -> bool:
        return self.issued_at <= now_ms + 5 * 60_000 and (
            self.expires_at is None or now_ms < self.expires_at
        )


@dataclass(frozen=True)
class Revocation:
    workspace: bytes
    subject: bytes
    reason: str
    issuer: bytes
    revoked_at: int
    signature: bytes
    encoded: bytes = field(compare=False, repr=False)

    @property
    def fingerprint(self) -> bytes:
        return crypto.sha256(self.encoded)


def recovery_commitment(incarnation: bytes) -> bytes:
    """What a node certificate carries of its enrollment-time recovery kit's incarnation: a peer
    that sees the node come back presenting it knows the kit's holder, not a copy of the lost
    disk or of its enrollment file, brought it back (appliance/recovery.py)."""
    return crypto.sha256(RECOVERY_DOMAIN + incarnation)


def check_role(role: str) -> Role:
    """A role a user certificate may grant, from its spelling (what the CLI and console pass)."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {str(role)!r}; one of {', '.join(ROLES)}")
    return Role(role)


def check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME or any(c.isspace() or not c.isprintable() for c in cleaned) or cleaned.startswith("@"):
        raise InvalidInput(f"invalid name {name!r}: 1-{MAX_NAME} printable characters, no spaces, not starting with @")
    return cleaned


def issue_certificate(
    issuer_key: nacl.signing.SigningKey,
    *,
    workspace: bytes,
    kind: SubjectKind,
    key: bytes,
    name: str,
    role: Role,
    issued_at: int,
    expires_at: int | None = None,
    home: bytes | None = None,
    attributes: policy.Attributes = (),
    recovery: bytes | None = None,
) -> Certificate:
    if kind not in tuple(SubjectKind):
        raise InvalidInput(f"unknown certificate kind {str(kind)!r}")
    role = check_role(role) if kind == SubjectKind.USER else Role.NODE
    if home is not None and (kind != SubjectKind.USER or len(home) != crypto.KEY_BYTES):
        raise InvalidInput("only a user certificate names a home node, by its 32-byte key")
    attributes = policy.check_attributes(attributes)
    if attributes and kind != SubjectKind.USER:
        raise InvalidInput("only a user certificate carries attributes")
    optional: dict[str, object] = {} if home is None else {"home": home}
    if attributes:  # only when there are some: certificates without keep their bytes
        optional["attrs"] = dict(attributes)
    if recovery is not None:
        if kind != SubjectKind.NODE or len(recovery) != crypto.KEY_BYTES:
            raise InvalidInput("only a node certificate commits to a recovery incarnation, by its 32-byte hash")
        optional["recovery"] = recovery
    body = cbor.encode(
        {
            **optional,
            "v": 1,
            "kind": str(kind),  # the plain string: the signed bytes do not depend on the enum
            "workspace": workspace,
            "key": key,
            "name": check_name(name),
            "role": str(role),
            "issuer": bytes(issuer_key.verify_key),
            "issued_at": issued_at,
            "expires_at": expires_at,
        }
    )
    signature = crypto.sign(issuer_key, CERT_DOMAIN + body)
    return decode_certificate(cbor.encode([body, signature]))


def issue_revocation(
    issuer_key: nacl.signing.SigningKey, *, workspace: bytes, subject: bytes, reason: str, revoked_at: int
) -> Revocation:
    body = cbor.encode(
        {
            "v": 1,
            "kind": "revocation",
            "workspace": workspace,
            "subject": subject,
            "reason": reason[:200],
            "issuer": bytes(issuer_key.verify_key),
            "revoked_at": revoked_at,
        }
    )
    signature = crypto.sign(issuer_key, REVOCATION_DOMAIN + body)
    return decode_revocation(cbor.encode([body, signature]))


def split_signed(encoded: bytes, what: str) -> tuple[object, bytes, bytes]:
    """A signed record's envelope, CBOR [body, signature], taken apart: the decoded body, its
    bytes (what the signature covers) and the signature. InvalidInput when malformed."""
    outer = cbor.decode(encoded, what)
    if not (isinstance(outer, list) and len(outer) == 2 and all(isinstance(x, bytes) for x in outer)):
        raise InvalidInput(f"{what}: expected [body, signature]")
    body_bytes, signature = outer
    return cbor.decode(body_bytes, what), body_bytes, signature


def _split(encoded: bytes, what: str) -> tuple[dict[str, object], bytes, bytes]:
    try:
        body, body_bytes, signature = split_signed(encoded, what)
    except InvalidInput as exc:
        raise CertificateInvalid(str(exc)) from exc
    if not isinstance(body, dict) or body.get("v") != 1:
        raise CertificateInvalid(f"{what}: unsupported version")
    return body, body_bytes, signature


def _field(body: dict[str, object], name: str, kind: type[T], what: str) -> T:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise CertificateInvalid(f"{what}: field {name!r} missing or of the wrong type")
    if isinstance(value, bytes) and name in ("workspace", "key", "issuer", "subject", "home", "recovery") and len(value) != crypto.KEY_BYTES:
        raise CertificateInvalid(f"{what}: field {name!r} is not a 32-byte key")
    return value


def decode_certificate(encoded: bytes) -> Certificate:
    """Parses and checks the issuer's signature; whether the issuer is trusted is the directory's call."""
    body, body_bytes, signature = _split(encoded, "certificate")
    what = "certificate"
    kind = _field(body, "kind", str, what)
    required = {"v", "kind", "workspace", "key", "name", "role", "issuer", "issued_at", "expires_at"}
    optional = {"home", "attrs", "recovery"}
    user_only = {"home", "attrs"}
    if (
        kind not in tuple(SubjectKind)
        or not required <= set(body) <= required | optional
        or (set(body) & user_only and kind != SubjectKind.USER)
        or ("recovery" in body and kind != SubjectKind.NODE)
    ):
        raise CertificateInvalid("certificate: unexpected fields")
    expires_at = body["expires_at"]
    if expires_at is not None and not isinstance(expires_at, int):
        raise CertificateInvalid("certificate: bad expiry")
    workspace = _field(body, "workspace", bytes, what)
    key = _field(body, "key", bytes, what)
    name = _field(body, "name", str, what)
    role = _field(body, "role", str, what)
    issuer = _field(body, "issuer", bytes, what)
    issued_at = _field(body, "issued_at", int, what)
    home = _field(body, "home", bytes, what) if "home" in body else None
    recovery = _field(body, "recovery", bytes, what) if "recovery" in body else None
    attributes: policy.Attributes = ()
    if "attrs" in body:
        raw = _field(body, "attrs", dict, what)
        try:
            attributes = policy.check_attributes(raw.items())
        except InvalidInput as exc:
            raise CertificateInvalid(f"certificate: {exc}") from exc
        if not attributes:
            raise CertificateInvalid("certificate: an empty attribute map is left out, not written")
    if role not in (ROLES if kind == SubjectKind.USER else (Role.NODE,)):
        raise CertificateInvalid(f"certificate: unknown role {role!r}")
    cert = Certificate(
        workspace=workspace,
        kind=SubjectKind(kind),
        key=key,
        name=name,
        role=Role(role),
        issuer=issuer,
        issued_at=issued_at,
        expires_at=expires_at,
        signature=signature,
        encoded=encoded,
        home=home,
        attributes=attributes,
        recovery=recovery,
    )
    crypto.require_signature(cert.issuer, CERT_DOMAIN + body_bytes, signature, "certificate")
    return cert


def decode_revocation(encoded: bytes) -> Revocation:
    body, body_bytes, signature = _split(encoded, "revocation")
    what = "revocation"
    if body.get("kind") != "revocation" or set(body) != {"v", "kind", "workspace", "subject", "reason", "issuer", "revoked_at"}:
        raise CertificateInvalid("revocation: unexpected fields")
    rev = Revocation(
        workspace=_field(body, "workspace", bytes, what),
        subject=_field(body, "subject", bytes, what),
        reason=_field(body, "reason", str, what),
        issuer=_field(body, "issuer", bytes, what),
        revoked_at=_field(body, "revoked_at", int, what),
        signature=signature,
        encoded=encoded,
    )
    crypto.require_signature(rev.issuer, REVOCATION_DOMAIN + body_bytes, signature, "revocation")
    return rev


@dataclass(frozen=True)
class Directory:
    """Who this node trusts, resolved at one instant."""

    workspace: bytes
    users: dict[bytes, Certificate]  # key -> effective (newest) valid certificate
    nodes: dict[bytes, Certificate]
    revoked: dict[bytes, Revocation]
    # Users certified admin at some point (a demotion or revocation since included), through a
    # chain to the workspace key: whose past admin acts other nodes may still be relaying.
    ever_admins: frozenset[bytes] = frozenset()

    def user(self, key: bytes) -> Certificate | None:
        return self.users.get(key)

    def user_by_name(self, name: str) -> Certificate | None:
        for cert in self.users.values():
            if cert.name == name:
                return cert
        return None

    def is_admin(self, key: bytes) -> bool:
        cert = self.users.get(key)
        return cert is not None and cert.role == Role.ADMIN

    def trust_of(self, node_key: bytes) -> Trust:
        """The one trust rule for a node key: revoked wins, then a current node certificate."""
        if node_key in self.revoked:
            return Trust.REVOKED
        return Trust.TRUSTED if node_key in self.nodes else Trust.UNKNOWN


def resolve_directory(
    workspace: bytes, certificates: Iterable[Certificate], revocations: Iterable[Revocation], now_ms: int
) -> Directory:
    """Certificates chain to the workspace key through admins. Revocations are decided first,
    against every admin that was ever trusted, so a revocation never flips back when its
    issuer is revoked in turn (no cycles, one answer for any order of arrival)."""
    certs = [c for c in certificates if c.workspace == workspace]
    revs = [r for r in revocations if r.workspace == workspace]

    def closure(excluded: set[bytes]) -> dict[bytes, list[Certificate]]:
        issuers, accepted = {workspace}, {}
        changed = True
        while changed:
            changed = False
            for cert in certs:
                if cert.key in excluded or cert.issuer not in issuers or not cert.valid_at(now_ms):
                    continue
                if cert.fingerprint in accepted:
                    continue
                accepted[cert.fingerprint] = cert
                if cert.kind == SubjectKind.USER and cert.role == Role.ADMIN and cert.key not in issuers:
                    issuers.add(cert.key)
                    changed = True
        by_key: dict[bytes, list[Certificate]] = {}
        for cert in accepted.values():
            by_key.setdefault(cert.key, []).append(cert)
        return by_key

    ever_trusted = closure(set())
    revokers = {workspace} | {k for k, cs in ever_trusted.items() if any(c.kind == SubjectKind.USER and c.role == Role.ADMIN for c in cs)}
    revoked = {r.subject: r for r in sorted(revs, key=lambda r: r.revoked_at) if r.issuer in revokers}
    trusted = closure(set(revoked))
    newest = {k: max(cs, key=lambda c: (c.issued_at, c.fingerprint)) for k, cs in trusted.items()}
    return Directory(
        workspace=workspace,
        users={k: c for k, c in newest.items() if c.kind == SubjectKind.USER},
        nodes={k: c for k, c in newest.items() if c.kind == SubjectKind.NODE},
        revoked=revoked,
        ever_admins=frozenset(revokers - {workspace}),
    )
