"""Terms of service and their acceptances: signed records, and which terms are current and who
accepted them. Pure functions of bytes and time.

A terms record (CBOR [body, signature], domain `rallypoint/terms/v1\\x00`) is published by an
admin of a workspace: a version (increasing), a title and a text. An acceptance (domain
`rallypoint/terms-acceptance/v1\\x00`) is signed by the user it names: which terms (their
fingerprint and version), on which node, when. Both live in the directory document, under
"terms:<fingerprint>" and "accept:<fingerprint>", and travel with it."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import nacl.signing

from appliance import cbor, certs, crypto
from appliance.errors import CertificateInvalid, InvalidInput

TERMS_DOMAIN = b"rallypoint/terms/v1\x00"
ACCEPTANCE_DOMAIN = b"rallypoint/terms-acceptance/v1\x00"
TERMS_PREFIX = "terms:"
ACCEPTANCE_PREFIX = "accept:"
MAX_TEXT_BYTES = 64 * 1024  # the text as UTF-8
MAX_TITLE = 120
MAX_VERSION = 2**31 - 1
T = TypeVar("T")


class TermsInvalid(CertificateInvalid):
    """A terms record or an acceptance that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class Terms:
    """One published version of the workspace's terms of service."""

    workspace: bytes
    version: int
    title: str
    text: str
    issuer: bytes  # the admin (or workspace) key that signed it
    published_at: int  # ms since the epoch
    signature: bytes
    encoded: bytes = field(compare=False, repr=False)

    @property
    def fingerprint(self) -> bytes:
        return crypto.sha256(self.encoded)

    @property
    def key(self) -> str:
        """Its root key in the directory document."""
        return f"{TERMS_PREFIX}{self.fingerprint.hex()}"


@dataclass(frozen=True)
class Acceptance:
    """A user's signed statement that they accepted one version of the terms, on one node."""

    workspace: bytes
    terms: bytes  # the accepted terms record's fingerprint
    version: int
    user: bytes  # the user who accepted, and whose key signed this
    node: bytes  # the node it was accepted on
    accepted_at: int
    signature: bytes
    encoded: bytes = field(compare=False, repr=False)

    @property
    def fingerprint(self) -> bytes:
        return crypto.sha256(self.encoded)

    @property
    def key(self) -> str:
        return f"{ACCEPTANCE_PREFIX}{self.fingerprint.hex()}"


def check_title(title: str) -> str:
    cleaned = title.strip()
    if not cleaned or len(cleaned) > MAX_TITLE or any(not c.isprintable() for c in cleaned):
        raise InvalidInput(f"invalid terms title: 1-{MAX_TITLE} printable characters on one line")
    return cleaned


def check_text(text: str) -> str:
    if not text.strip():
        raise InvalidInput("the terms have no text")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(f"the terms are too long ({size:,} bytes, at most {MAX_TEXT_BYTES:,})")
    return text


def check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidInput(f"invalid terms version {version!r}: a whole number from 1")
    return version


def publish_terms(issuer_key: nacl.signing.SigningKey, *, workspace: bytes, version: int, title: str, text: str, published_at: int) -> Terms:
    body = cbor.encode(
        {
            "v": 1,
            "kind": "terms",
            "workspace": workspace,
            "version": check_version(version),
            "title": check_title(title),
            "text": check_text(text),
            "issuer": bytes(issuer_key.verify_key),
            "published_at": published_at,
        }
    )
    return decode_terms(cbor.encode([body, crypto.sign(issuer_key, TERMS_DOMAIN + body)]))


def accept_terms(user_key: nacl.signing.SigningKey, *, terms: Terms, node: bytes, accepted_at: int) -> Acceptance:
    body = cbor.encode(
        {
            "v": 1,
            "kind": "acceptance",
            "workspace": terms.workspace,
            "terms": terms.fingerprint,
            "version": terms.version,
            "user": bytes(user_key.verify_key),
            "node": node,
            "accepted_at": accepted_at,
        }
    )
    return decode_acceptance(cbor.encode([body, crypto.sign(user_key, ACCEPTANCE_DOMAIN + body)]))


def _body(encoded: bytes, what: str, kind: str, fields: set[str]) -> tuple[dict[str, object], bytes, bytes]:
    try:
        body, body_bytes, signature = certs.split_signed(encoded, what)
    except InvalidInput as exc:
        raise TermsInvalid(str(exc)) from exc
    if not isinstance(body, dict) or body.get("v") != 1 or body.get("kind") != kind:
        raise TermsInvalid(f"{what}: unsupported version or kind")
    if set(body) != fields | {"v", "kind"}:
        raise TermsInvalid(f"{what}: unexpected fields")
    return body, body_bytes, signature


def _get(body: dict[str, object], name: str, kind: type[T], what: str) -> T:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TermsInvalid(f"{what}: field {name!r} missing or of the wrong type")
    if isinstance(value, bytes) and len(value) != crypto.KEY_BYTES:
        raise TermsInvalid(f"{what}: field {name!r} is not 32 bytes")
    return value


def decode_terms(encoded: bytes) -> Terms:
    """Parses a terms record and checks its signature by its issuer; whether the issuer is an
    admin is the directory's call."""
    what = "terms record"
    body, body_bytes, signature = _body(encoded, what, "terms", {"workspace", "version", "title", "text", "issuer", "published_at"})
    try:
        version = check_version(_get(body, "version", int, what))
        title = check_title(_get(body, "title", str, what))
        text = check_text(_get(body, "text", str, what))
    except InvalidInput as exc:
        raise TermsInvalid(f"{what}: {exc}") from exc
    record = Terms(
        workspace=_get(body, "workspace", bytes, what),
        version=version,
        title=title,
        text=text,
        issuer=_get(body, "issuer", bytes, what),
        published_at=_get(body, "published_at", int, what),
        signature=signature,
        encoded=encoded,
    )
    if not crypto.verify(record.issuer, TERMS_DOMAIN + body_bytes, signature):
        raise TermsInvalid(f"{what} version {version}: its signature does not verify")
    return record


def decode_acceptance(encoded: bytes) -> Acceptance:
    """Parses an acceptance and checks that the user it names signed it."""
    what = "terms acceptance"
    body, body_bytes, signature = _body(encoded, what, "acceptance", {"workspace", "terms", "version", "user", "node", "accepted_at"})
    try:
        version = check_version(_get(body, "version", int, what))
    except InvalidInput as exc:
        raise TermsInvalid(f"{what}: {exc}") from exc
    record = Acceptance(
        workspace=_get(body, "workspace", bytes, what),
        terms=_get(body, "terms", bytes, what),
        version=version,
        user=_get(body, "user", bytes, what),
        node=_get(body, "node", bytes, what),
        accepted_at=_get(body, "accepted_at", int, what),
        signature=signature,
        encoded=encoded,
    )
    if not crypto.verify(record.user, ACCEPTANCE_DOMAIN + body_bytes, signature):
        raise TermsInvalid(f"{what} of version {version}: not signed by the user it names")
    return record


@dataclass(frozen=True)
class TermsState:
    """The terms as this node judges them at one instant: the current version (None: no terms
    published) and every acceptance of a trusted version, per user, oldest first."""

    current: Terms | None
    published: tuple[Terms, ...]  # trusted versions, oldest first
    acceptances: dict[bytes, tuple[Acceptance, ...]]

    def accepted(self, user: bytes) -> Acceptance | None:
        """The user's acceptance of the current terms; None if none (or no terms)."""
        if self.current is None:
            return None
        fingerprint = self.current.fingerprint
        return next((a for a in reversed(self.acceptances.get(user, ())) if a.terms == fingerprint), None)

    def binds(self, user: bytes) -> bool:
        """Whether `user` must still accept the current terms before reading or posting."""
        return self.current is not None and self.accepted(user) is None

    def latest(self, user: bytes) -> Acceptance | None:
        """The user's acceptance of the highest version they accepted."""
        found = self.acceptances.get(user, ())
        return max(found, key=lambda a: (a.version, a.accepted_at)) if found else None


NO_TERMS = TermsState(None, (), {})


def resolve_terms(workspace: bytes, publishers: Collection[bytes], records: Iterable[Terms], acceptances: Iterable[Acceptance]) -> TermsState:
    """The current terms are the highest version among the records of `workspace` signed by a
    trusted publisher (the workspace key or an admin); ties go to the later, then the greater
    fingerprint, so every node picks the same. An acceptance counts when its user signed it
    for a trusted record, at that record's version."""
    trusted = sorted(
        (r for r in records if r.workspace == workspace and (r.issuer == workspace or r.issuer in publishers)),
        key=lambda r: (r.version, r.published_at, r.fingerprint),
    )
    by_fingerprint = {r.fingerprint: r for r in trusted}
    accepted: dict[bytes, list[Acceptance]] = {}
    for acceptance in acceptances:
        record = by_fingerprint.get(acceptance.terms)
        if acceptance.workspace == workspace and record is not None and record.version == acceptance.version:
            accepted.setdefault(acceptance.user, []).append(acceptance)
    return TermsState(
        current=trusted[-1] if trusted else None,
        published=tuple(trusted),
        acceptances={user: tuple(sorted(found, key=lambda a: (a.accepted_at, a.fingerprint))) for user, found in accepted.items()},
    )


def record_of_key(key: str) -> str | None:
    """Which kind of terms entry a directory root key holds ("terms", "acceptance"), if any."""
    if key.startswith(TERMS_PREFIX):
        return "terms"
    if key.startswith(ACCEPTANCE_PREFIX):
        return "acceptance"
    return None
