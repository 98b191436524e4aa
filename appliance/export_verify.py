"""Checks a signed JSON-lines compliance export offline, from its bytes and the workspace key
alone: the exporting node's signatures (format /2: the header, each checkpoint and the end line,
every record line's SHA-256 against the one its checkpoint lists; format /1: every line), that
node's and every author's certificate chained to the workspace key, each record's author
signature over its change, the line numbers, and the end line's count and digest. Every problem
is named by its line (and record id). Pure."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance import certs, changes, crypto
from appliance.errors import CertificateInvalid, InvalidInput
from appliance.export_signed import FORMAT_NAME, FORMAT_V1, SIGNATURE_DOMAIN, SIGNATURE_DOMAIN_V1, canonical, line_hash

MAX_REPORTED = 1000  # problems listed; a wholly wrong file says the first of them
MAX_UNCHECKED = 8192  # record lines held waiting for their checkpoint: bounds a crafted file (writers use 512)
_DOMAINS = {FORMAT_NAME: SIGNATURE_DOMAIN, FORMAT_V1: SIGNATURE_DOMAIN_V1}


@dataclass(frozen=True)
class _Pending:
    """A record line of format /2 waiting for the checkpoint that lists its hash."""

    line: int
    record_id: str | None
    hash: str


@dataclass(frozen=True)
class Problem:
    line: int
    record_id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (record {self.record_id})" if self.record_id else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class VerifyReport:
    records: int
    problems: tuple[Problem, ...]
    workspace_key: str
    workspace_key_from_file: bool  # no key was given: the file's own was used (compare it with the one you trust)
    node_id: str
    node_name: str
    created_at: str
    complete: bool  # the end line was there and matched

    @property
    def ok(self) -> bool:
        return not self.problems and self.complete


def _certified(workspace: bytes, encoded: Iterable[bytes]) -> tuple[dict[bytes, certs.Certificate], list[str]]:
    """Certificates that chain to `workspace` through admins (validity times aside: a record
    stays authored by who was certified when it was written), by subject key."""
    decoded, bad = [], []
    for data in encoded:
        try:
            decoded.append(certs.decode_certificate(data))
        except (CertificateInvalid, InvalidInput) as exc:
            bad.append(str(exc))
    issuers, accepted = {workspace}, {}
    changed = True
    while changed:
        changed = False
        for cert in decoded:
            if cert.workspace != workspace or cert.issuer not in issuers or cert.fingerprint in accepted:
                continue
            accepted[cert.fingerprint] = cert
            if cert.kind == certs.SubjectKind.USER and cert.role == certs.Role.ADMIN and cert.key not in issuers:
                issuers.add(cert.key)
                changed = True
    return {c.key: c for c in accepted.values()}, bad


def _hex(value: object, size: int) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == size else None


class _Checker:
    def __init__(self, workspace_key: bytes | None) -> None:
        self.given = workspace_key
        self.workspace = workspace_key or b""
        self.node_key = b""
        self.node_id = self.node_name = self.created_at = ""
        self.certified: dict[bytes, certs.Certificate] = {}
        self.problems: list[Problem] = []
        self.digest = hashlib.sha256()
        self.records = 0
        self.seen: set[str] = set()
        self.ended = False
        self.complete = False
        self.format = FORMAT_NAME
        self.pending: list[_Pending] = []  # format /2: record lines since the last checkpoint
        self.first = 2  # format /2: the first line the next checkpoint must cover
        self.named: set[int] = set()  # lines a problem names already

    @property
    def every_line_signed(self) -> bool:
        return self.format == FORMAT_V1

    def problem(self, line: int, record_id: str | None, reason: str) -> None:
        self.named.add(line)
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(Problem(line, record_id, reason))

    def signed(self, body: dict[str, Any]) -> bool:
        signature = _hex(body.pop("sig", None), crypto.SIGNATURE_BYTES)
        return signature is not None and bool(self.node_key) and crypto.verify(self.node_key, _DOMAINS[self.format] + canonical(body), signature)

    def header(self, body: dict[str, Any]) -> None:
        if body.get("type") != "header" or body.get("format") not in _DOMAINS:
            self.problem(1, None, f"not a {FORMAT_NAME} (or {FORMAT_V1}) header")
            return
        self.format = str(body["format"])
        workspace, node = body.get("workspace") or {}, body.get("node") or {}
        in_file = _hex(workspace.get("key") if isinstance(workspace, dict) else None, 32)
        if self.given is None:
            self.workspace = in_file or b""
        elif in_file != self.given:
            self.problem(1, None, "the file names another workspace key than the one given")
        self.node_key = _hex(node.get("key") if isinstance(node, dict) else None, 32) or b""
        if isinstance(node, dict):
            self.node_id, self.node_name = str(node.get("id", "")), str(node.get("name", ""))
        self.created_at = str(body.get("created_at", ""))
        if not self.signed(body):
            self.problem(1, None, "the header's signature does not match: the header was changed")
        encoded = []
        for item in body.get("certificates") or []:
            try:
                encoded.append(base64.b64decode(str(item), validate=True))
            except (binascii.Error, ValueError):
                self.problem(1, None, "a certificate is not base64")
        self.certified, bad = _certified(self.workspace, encoded)
        for reason in bad:
            self.problem(1, None, f"a certificate does not hold: {reason}")
        node_cert = self.certified.get(self.node_key)
        if node_cert is None or node_cert.kind != certs.SubjectKind.NODE:
            self.problem(1, None, "the exporting node is not certified by the workspace key")

    def unreadable(self, number: int, raw: bytes) -> None:
        self.problem(number, None, "not a JSON object: the line was cut or changed")
        self.hold(number, None, raw)

    def hold(self, number: int, record_id: str | None, raw: bytes) -> None:
        """Format /2: a record line's hash, until its checkpoint comes."""
        if self.every_line_signed:
            return
        if len(self.pending) >= MAX_UNCHECKED:
            self.problem(number, record_id, f"no signed checkpoint covers the {MAX_UNCHECKED} lines before this one: lines were added or a checkpoint removed")
            self.pending, self.first = [], number
        self.pending.append(_Pending(number, record_id, line_hash(raw)))

    def record(self, number: int, body: dict[str, Any], raw: bytes) -> None:
        record_id = str(body.get("id")) if body.get("id") is not None else None
        self.records += 1
        self.hold(number, record_id, raw)
        if self.every_line_signed and not self.signed(body):
            self.problem(number, record_id, "the record was changed: its signature by the exporting node does not match")
            return
        if body.get("line") != number:
            self.problem(number, record_id, f"the record was signed as line {body.get('line')}: lines were moved, removed or added")
        if record_id in self.seen:
            self.problem(number, record_id, "the record appears twice")
        self.seen.add(record_id or "")
        author = _hex(body.get("author_key"), 32)
        cert = self.certified.get(author) if author else None
        if author is None or cert is None or cert.kind != certs.SubjectKind.USER:
            self.problem(number, record_id, "its author is not certified by the workspace key")
            return
        proof = body.get("proof")
        if proof is None:
            return  # an event whose change this node could not name (listed in the report of the export)
        signed_hash = _hex(proof.get("signed_hash") if isinstance(proof, dict) else None, 32)
        signature = _hex(proof.get("signature") if isinstance(proof, dict) else None, 64)
        doc_id = proof.get("doc_id") if isinstance(proof, dict) else None
        if signed_hash is None or signature is None or not isinstance(doc_id, str):
            self.problem(number, record_id, "its change proof is malformed")
        elif not crypto.verify(author, changes.signing_payload(doc_id, signed_hash), signature):
            self.problem(number, record_id, f"its author's change signature does not hold for {cert.name}")

    def checkpoint(self, number: int, body: dict[str, Any], digest: str) -> bool:
        """Format /2: the lines since the last checkpoint against the hashes this one lists;
        False when the checkpoint itself does not hold (its lines are then left unchecked)."""
        pending, first = self.pending, self.first
        self.pending, self.first = [], number + 1
        what = "the end line" if body.get("type") == "end" else "the checkpoint"
        if not self.signed(body):
            self.problem(number, None, f"{what} was changed: its signature does not match (lines {first} to {number - 1} are unchecked)")
            return False
        hashes = body.get("hashes")
        if body.get("line") != number or body.get("first") != first or not isinstance(hashes, list) or len(hashes) != len(pending):
            self.problem(number, None, f"{what} was signed for lines {body.get('first')} to {_before(body.get('line'))}, not {first} to {number - 1}: lines were moved, removed or added")
            return False
        for held, signed in zip(pending, hashes, strict=True):
            if held.hash != signed and held.line not in self.named:
                self.problem(held.line, held.record_id, "the record was changed: it is not the line the exporting node signed")
        if body.get("digest") != digest and not self.problems:  # a changed line was named already
            self.problem(number, None, "the lines differ from those signed (reordered or changed)")
        return True

    def end(self, number: int, body: dict[str, Any], digest: str) -> None:
        self.ended = True
        if not self.every_line_signed:
            if not self.checkpoint(number, body, digest):
                return
            if body.get("records") != self.records:
                self.problem(number, None, f"the file held {body.get('records')} records when signed; {self.records} are here")
            else:
                self.complete = body.get("digest") == digest
            return
        if not self.signed(body):
            self.problem(number, None, "the end line was changed: its signature does not match")
            return
        if body.get("line") != number or body.get("records") != self.records:
            self.problem(number, None, f"the file held {body.get('records')} records when signed; {self.records} are here")
        elif body.get("digest") != digest:
            if not self.problems:  # a changed line was named already
                self.problem(number, None, "the lines differ from those signed (reordered or changed)")
        else:
            self.complete = True


def verify_lines(lines: Iterable[bytes], workspace_key: bytes | None = None) -> VerifyReport:
    checker = _Checker(workspace_key)
    number = 0
    for number, raw in enumerate(lines, start=1):
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            checker.unreadable(number, raw)
            checker.digest.update(raw)
            continue
        kind = body.get("type")
        if checker.ended:
            checker.problem(number, None, "a line after the end line: lines were added")
        elif number == 1:
            checker.header(body)
        elif kind == "end":
            checker.end(number, body, checker.digest.hexdigest())
        elif kind == "checkpoint" and not checker.every_line_signed:
            checker.checkpoint(number, body, checker.digest.hexdigest())
        else:
            checker.record(number, body, raw)
        checker.digest.update(raw)
    if number == 0:
        checker.problem(1, None, "the file is empty")
    elif not checker.ended:
        checker.problem(number + 1, None, "the file is cut: its end line is missing")
    return VerifyReport(
        records=checker.records,
        problems=tuple(sorted(checker.problems, key=lambda p: p.line)),  # a changed record is found at its checkpoint: named in file order
        workspace_key=checker.workspace.hex(),
        workspace_key_from_file=workspace_key is None,
        node_id=checker.node_id,
        node_name=checker.node_name,
        created_at=checker.created_at,
        complete=checker.complete,
    )


def _before(line: object) -> object:
    return line - 1 if isinstance(line, int) and not isinstance(line, bool) else line
