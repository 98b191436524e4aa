"""The signed JSON-lines form of a compliance export. Every line is canonical JSON (sorted
keys, no spaces, UTF-8) with a "sig" member added at its end: the exporting node's Ed25519 signature over the
line's canonical bytes without it, under SIGNATURE_DOMAIN.

    line 1:  {"type": "header", workspace, node, certificates (base64), filters, created_at, ...}
    line n:  {"type": "record", "line": n, record fields, "author_key", "proof", "provenance"}
    last:    {"type": "end", "line": n, "records": count, "digest": SHA-256 of every line before}

A record names its line, so a record moved elsewhere fails; the end line signs the count and a
digest of all lines, so a cut, extended or reordered file fails even where each line alone
holds. Pure: values in, bytes out; the signing key is a callable."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from appliance.compliance_records import ExportHeader, ExportRecord, iso_utc

FORMAT_NAME = "rallypoint-compliance-export/1"
SIGNATURE_DOMAIN = b"rallypoint/compliance-export/v1\x00"

Sign = Callable[[bytes], bytes]  # message -> 64-byte Ed25519 signature


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def header_body(header: ExportHeader) -> dict[str, Any]:
    return {
        "type": "header",
        "format": FORMAT_NAME,
        "line": 1,
        "workspace": {"name": header.workspace_name, "key": header.workspace_key},
        "node": {"id": header.node_id, "name": header.node_name, "key": header.node_key},
        "certificates": [base64.b64encode(c).decode() for c in header.certificates],
        "filters": header.filters.as_json(),
        "created_at": iso_utc(header.created_at),
        "created_at_ms": header.created_at,
        "exported_by": header.exported_by,
    }


def record_body(record: ExportRecord, line: int) -> dict[str, Any]:
    proof, came = record.proof, record.provenance
    return {
        "type": "record",
        "line": line,
        "id": record.record_id,
        "kind": record.kind.value,
        "message_id": record.message_id,
        "channel": {"id": record.channel_id, "name": record.channel_name, "kind": record.channel_kind},
        "author_key": record.author,
        "author": record.author_name,
        "at": iso_utc(record.at),
        "at_ms": record.at,
        "posted_at_ms": record.posted_at,
        "text": record.text,
        "root_id": record.root_id,
        "files": [{"name": f.name, "size": f.size, "hash": f.hash} for f in record.files],
        "reactions": [{"emoji": r.emoji, "user_key": r.user, "user": r.user_name} for r in record.reactions],
        "withheld": record.withheld,
        "tampered": record.tampered,
        "proof": None if proof is None else {"doc_id": proof.doc_id, "change_hash": proof.change_hash, "signed_hash": proof.signed_hash, "signature": proof.signature},
        "provenance": None
        if came is None
        else {"received_from": came.received_from, "received_from_name": came.received_from_name, "received_at": iso_utc(came.received_at), "received_at_ms": came.received_at},
    }


def signed_line(body: dict[str, Any], sign: Sign) -> bytes:
    """The body's canonical JSON with "sig" added last (a reader re-canonicalises without it)."""
    data = canonical(body)
    signature = sign(SIGNATURE_DOMAIN + data)
    return data[:-1] + b',"sig":"' + signature.hex().encode() + b'"}\n'


class SignedLines:
    """Writes the lines in order, keeping the count and the running digest for the end line."""

    def __init__(self, sign: Sign) -> None:
        self._sign = sign
        self._digest = hashlib.sha256()
        self._line = 0
        self.records = 0

    def _emit(self, body: dict[str, Any]) -> bytes:
        line = signed_line(body, self._sign)
        self._digest.update(line)
        return line

    def start(self, header: ExportHeader) -> bytes:
        self._line = 1
        return self._emit(header_body(header))

    def add(self, record: ExportRecord) -> bytes:
        self._line += 1
        self.records += 1
        return self._emit(record_body(record, self._line))

    def finish(self) -> bytes:
        body = {"type": "end", "line": self._line + 1, "records": self.records, "digest": self._digest.hexdigest()}
        return signed_line(body, self._sign)
