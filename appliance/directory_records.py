"""What the directory document holds - certificates, revocations, terms of service and their
acceptances - decoded by the prefix of their root keys, and the rule that judges a batch of
directory changes from elsewhere. Pure: documents, bytes and time in, verdicts out.

Admins write every kind of entry. Any other user of the workspace may write exactly one thing:
their own acceptance of the terms. A change is judged by what it did (its document just
before it against the document with it), never by its author alone."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from automerge._automerge import Document

from appliance import certs, documents, ids, terms
from appliance.changes import VerifiedChange
from appliance.errors import CertificateInvalid, ChangeRejected
from appliance.graph import ancestors

Record = certs.Certificate | certs.Revocation | terms.Terms | terms.Acceptance

KIND_OF_PREFIX = {"cert:": "certificate", "rev:": "revocation", terms.TERMS_PREFIX: "terms", terms.ACCEPTANCE_PREFIX: "acceptance"}
"""A directory key's prefix and the kind `directory_entries.kind` stores its entry as."""


def kind_of_key(key: str) -> str:
    for prefix, kind in KIND_OF_PREFIX.items():
        if key.startswith(prefix):
            return kind
    raise CertificateInvalid(f"directory key {key[:24]!r} holds no known kind of entry")


def decode_record(kind: str, data: bytes) -> Record:
    """An entry as stored (`directory_entries.kind`), its signature checked."""
    if kind == "certificate":
        return certs.decode_certificate(data)
    if kind == "revocation":
        return certs.decode_revocation(data)
    if kind == "terms":
        return terms.decode_terms(data)
    if kind == "acceptance":
        return terms.decode_acceptance(data)
    raise CertificateInvalid(f"unknown kind of directory entry {kind[:24]!r}")


def record_kind(record: Record) -> str:
    if isinstance(record, certs.Certificate):
        return "certificate"
    if isinstance(record, certs.Revocation):
        return "revocation"
    return "terms" if isinstance(record, terms.Terms) else "acceptance"


def record_key(record: Record) -> str:
    """Its root key in the directory document."""
    prefix = next(p for p, kind in KIND_OF_PREFIX.items() if kind == record_kind(record))
    return f"{prefix}{record.fingerprint.hex()}"


def split_records(records: Iterable[Record]) -> tuple[list[certs.Certificate], list[certs.Revocation], list[terms.Terms], list[terms.Acceptance]]:
    found: tuple[list[certs.Certificate], list[certs.Revocation], list[terms.Terms], list[terms.Acceptance]] = ([], [], [], [])
    for record in records:
        if isinstance(record, certs.Certificate):
            found[0].append(record)
        elif isinstance(record, certs.Revocation):
            found[1].append(record)
        elif isinstance(record, terms.Terms):
            found[2].append(record)
        else:
            found[3].append(record)
    return found


def publishers(directory: certs.Directory, certificates: Iterable[certs.Certificate]) -> frozenset[bytes]:
    """Whose terms count, by `directory`: its workspace key, and every user it trusts (not
    revoked) who was certified an admin - terms an admin published stay in force when that
    admin steps down, not when they are revoked."""
    admins = {c.key for c in certificates if c.kind == certs.SubjectKind.USER and c.role == certs.Role.ADMIN and (c.issuer == directory.workspace or c.issuer in directory.users)}
    return frozenset({directory.workspace, *(key for key in admins if key in directory.users)})


def judge_directory_batch(
    trial: Document,
    verified: Sequence[VerifiedChange],
    *,
    workspace: bytes,
    known_revocations: Sequence[certs.Revocation],
    existing: Sequence[certs.Certificate],
    now_ms: int,
    load: Callable[[bytes], Document],
    empty: Callable[[], Document],
) -> tuple[list[Record], certs.Directory]:
    """Judges directory changes from elsewhere; `trial` is the document with them applied.

    Each change is judged on the directory as of that change (its history, just before or with
    it, and the revocations known here), so that a concurrent demotion of its author, arriving
    first or not, decides nothing. An admin's change may write anything, but a terms record in
    it must be signed by an admin (or the workspace key) of that directory; anyone else's
    change may only add acceptances of terms the document holds, each signed by its author.
    Every acceptance is written by the user it names. `load` makes a document of change bytes,
    `empty` an empty one. Returns every record of the trial and the directory it resolves to;
    raises ChangeRejected with the reason."""
    decoded: dict[str, Record] = {}

    def record(key: str, data: bytes) -> Record:
        if key not in decoded:
            try:
                decoded[key] = decode_record(kind_of_key(key), data)
            except CertificateInvalid as exc:
                raise ChangeRejected(f"directory entry {key[:16]}…: {exc}") from exc
        return decoded[key]

    def records(values: dict[str, object]) -> list[Record]:
        return [record(key, value[1]) for key, value in values.items() if key.startswith(documents.RECORD_PREFIXES) and _bytes_value(value)]  # type: ignore[index]

    history = trial.get_changes([])  # in causal order
    graph = {c.hash: b"".join(c.deps) for c in history}
    raw = {c.hash: c.raw_bytes for c in history}
    versions: dict[frozenset[bytes], _Version] = {}

    def version(past: frozenset[bytes], make: Callable[[], Document]) -> _Version:
        if past not in versions:
            doc = make()
            values = documents.root_values(doc)
            found_certs, found_revs, _, _ = split_records(records(values))
            versions[past] = _Version(doc, values, certs.resolve_directory(workspace, found_certs, [*found_revs, *known_revocations], now_ms))
        return versions[past]

    def with_change(doc: Document, change: bytes) -> Document:
        copy = doc.fork()
        documents.apply_changes(copy, [change])
        return copy

    for change in verified:
        # The document as it was just before the change, loaded from that history (Document.fork_at
        # can panic on some histories: automerge 0.7.2 "MissingOps") unless known already - in a
        # line of changes, as the previous one left it - then with the change: one fork and one
        # change applied, not a history loaded, per change.
        past = frozenset(ancestors(graph, change.header.deps))
        before = version(past, lambda past=past: load(b"".join(c.raw_bytes for c in history if c.hash in past)) if past else empty())  # type: ignore[misc]
        after = version(past | {change.header.hash}, lambda before=before, change=change: with_change(before.doc, raw[change.header.hash]))  # type: ignore[misc]
        author = change.header.author
        # An admin before the change (a self-demotion) or after it (the first admin's own certificate).
        admin = before.directory.is_admin(author) or after.directory.is_admin(author)
        problem = _judge_change(author, admin, _written(before.values, after.values), after, workspace, record)
        if problem is not None:
            raise ChangeRejected(problem)
    found_certs, found_revs, _, _ = split_records(records(documents.root_values(trial)))
    trial_directory = certs.resolve_directory(workspace, [*existing, *found_certs], [*known_revocations, *found_revs], now_ms)
    return list(decoded.values()), trial_directory


@dataclass(frozen=True)
class _Version:
    """The directory document at one point of its history: its root values, its directory."""

    doc: Document
    values: dict[str, object]
    directory: certs.Directory


def _bytes_value(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and value[0] == documents.Bytes and isinstance(value[1], bytes)


def _written(old: dict[str, object], new: dict[str, object]) -> dict[str, object]:
    """The root keys a change set or changed (value), or deleted (None)."""
    changed: dict[str, object] = {key: value for key, value in new.items() if old.get(key) != value}
    changed.update({key: None for key in old if key not in new})
    return changed


def _judge_change(author: bytes, admin: bool, written: dict[str, object], after: _Version, workspace: bytes, record: Callable[[str, bytes], Record]) -> str | None:
    """Why one directory change is refused, or None."""
    directory = after.directory
    cert = directory.user(author)
    who = cert.name if cert is not None else ids.key_id(author)
    if not admin and not written:
        return f"directory change by {who}, who is not an admin"
    for key, value in sorted(written.items()):
        kind = terms.record_of_key(key)
        if kind is None:
            if not admin:
                return f"directory change by {who}, who is not an admin: only admins change certificates and revocations"
            continue
        if not _bytes_value(value):
            return f"directory change by {who} removes or garbles {key[:16]}…: terms and acceptances are only ever added"
        entry = record(key, value[1])  # type: ignore[index]
        if key != record_key(entry):
            return f"directory entry {key[:16]}… is not stored under its own fingerprint"
        if isinstance(entry, terms.Terms):
            problem = _judge_terms(entry, directory, workspace)
            if problem is None and not admin:
                problem = f"terms version {entry.version} written by {who}, who is not an admin"
        else:
            assert isinstance(entry, terms.Acceptance)
            problem = _judge_acceptance(entry, author, who, directory, workspace, after.values, record)
        if problem is not None:
            return problem
    return None


def _judge_terms(entry: terms.Terms, directory: certs.Directory, workspace: bytes) -> str | None:
    if entry.workspace != workspace:
        return f"terms version {entry.version} are for another workspace"
    if entry.issuer != workspace and not directory.is_admin(entry.issuer):
        signer = directory.user(entry.issuer)
        name = signer.name if signer is not None else ids.key_id(entry.issuer)
        return f"terms version {entry.version} signed by {name}, who is not an admin of this workspace"
    return None


def _judge_acceptance(
    entry: terms.Acceptance, author: bytes, who: str, directory: certs.Directory, workspace: bytes, values: dict[str, object], record: Callable[[str, bytes], Record]
) -> str | None:
    if entry.workspace != workspace:
        return "a terms acceptance for another workspace"
    if entry.user != author:
        named = directory.user(entry.user)
        return f"an acceptance of the terms by {named.name if named else ids.key_id(entry.user)} written by {who}: each user records only their own"
    if directory.user(author) is None:
        return f"an acceptance of the terms by {who}, who is not a user of this workspace"
    value = values.get(f"{terms.TERMS_PREFIX}{entry.terms.hex()}")
    held = record(f"{terms.TERMS_PREFIX}{entry.terms.hex()}", value[1]) if _bytes_value(value) else None  # type: ignore[index]
    if not isinstance(held, terms.Terms) or held.version != entry.version:
        return f"{who} accepted terms version {entry.version}, which the directory does not hold"
    return None
