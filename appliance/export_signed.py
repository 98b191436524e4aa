"""The signed JSON-lines form of a compliance export (format /2). Every line is canonical JSON
(sorted keys, no spaces, UTF-8). The exporting node signs (Ed25519, under SIGNATURE_DOMAIN) the
header, a checkpoint every CHECKPOINT_EVERY records and the end line, each with a "sig" member
added at its end over the line's canonical bytes without it; a checkpoint and the end line list
the SHA-256 of every line since the previous one, so one signature vouches for hundreds of
records and a changed record is still named by its line.

    line 1:  {"type": "header", "format", "checkpoint_every", workspace, node, certificates (base64), filters, created_at, ...}
    line n:  {"type": "record", "line": n, record fields, "author_key", "proof", "provenance"}
    line c:  {"type": "checkpoint", "line": c, "first": f, "hashes": [SHA-256 of lines f..c-1],
              "records": records so far, "digest": SHA-256 of every line before c}
    last:    {"type": "end", the checkpoint's members for the lines since the last one}

A record names its line and a checkpoint the lines it covers, so a record moved elsewhere
fails; the end line signs the count and a digest of all lines, so a cut, extended or
reordered file fails even where each line alone holds. Format /1 (every line signed, no
checkpoints) is still verified (appliance/export_verify.py). Pure: values in, bytes out; the
signing key is a callable."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from appliance.compliance_records import ExportHeader, ExportRecord, iso_utc

FORMAT_NAME = "rallypoint-compliance-export/2"
SIGNATURE_DOMAIN = b"rallypoint/compliance-export/v2\x00"
FORMAT_V1 = "rallypoint-compliance-export/1"  # every line signed: what earlier releases wrote
SIGNATURE_DOMAIN_V1 = b"rallypoint/compliance-export/v1\x00"
CHECKPOINT_EVERY = 512  # records a signature vouches for: an Ed25519 signature a line capped the rate near 22,000 lines/s

Sign = Callable[[bytes], bytes]  # message -> 64-byte Ed25519 signature


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def header_body(header: ExportHeader) -> dict[str, Any]:
    return {
        "type": "header",
        "format": FORMAT_NAME,
        "checkpoint_every": CHECKPOINT_EVERY,
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


_LINE_KEY = b'"line":0,'


def record_halves(record: ExportRecord) -> tuple[bytes, bytes]:
    """The record's canonical line before and after its line number, which only the writer
    knows (the halves are made where the record is, the line numbered in order): the only
    "line" key of a record's body is its own (a string's quotes are escaped; keys of the
    nested objects are others)."""
    data = canonical(record_body(record, 0))
    cut = data.index(_LINE_KEY)
    return data[: cut + 7], data[cut + 8 :]


def signed_line(body: dict[str, Any], sign: Sign, domain: bytes = SIGNATURE_DOMAIN) -> bytes:
    """The body's canonical JSON with "sig" added last (a reader re-canonicalises without it)."""
    data = canonical(body)
    signature = sign(domain + data)
    return data[:-1] + b',"sig":"' + signature.hex().encode() + b'"}\n'


def line_hash(line: bytes) -> str:
    """What a checkpoint lists for a line: the SHA-256 of its bytes, newline included."""
    return hashlib.sha256(line).hexdigest()


class SignedLines:
    """Writes the lines in order, keeping the count, the running digest and the hashes of the
    lines since the last checkpoint."""

    def __init__(self, sign: Sign, checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self._sign = sign
        self._every = checkpoint_every
        self._digest = hashlib.sha256()
        self._line = 0
        self._first = 2  # the first line the next checkpoint covers
        self._hashes: list[str] = []
        self.records = 0

    def _emit(self, line: bytes) -> bytes:
        self._line += 1
        self._digest.update(line)
        return line

    def start(self, header: ExportHeader) -> bytes:
        return self._emit(signed_line(header_body(header), self._sign))

    def add_halves(self, before: bytes, after: bytes) -> bytes:
        """A record's line from its `record_halves`, numbered; a checkpoint after it when due."""
        line = self._emit(before + str(self._line + 1).encode() + after + b"\n")
        self._hashes.append(line_hash(line))
        self.records += 1
        if len(self._hashes) < self._every:
            return line
        return line + self._emit(signed_line(self._covering("checkpoint"), self._sign))

    def _covering(self, kind: str) -> dict[str, Any]:
        body = {"type": kind, "line": self._line + 1, "first": self._first, "hashes": self._hashes, "records": self.records, "digest": self._digest.hexdigest()}
        self._first, self._hashes = self._line + 2, []
        return body

    def finish(self) -> bytes:
        return self._emit(signed_line(self._covering("end"), self._sign))
