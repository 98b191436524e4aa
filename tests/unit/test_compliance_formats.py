"""The compliance export's formatters, its signed JSON lines and its encryption, as pure
functions: CSV round-trips through the csv module, the Actiance XML parses with xml.etree
whatever the text, every EML parses with the email package, a changed signed line is named,
and an encrypted export opens only with its key and only whole."""

from __future__ import annotations

import csv
import dataclasses
import email
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import certs, changes, crypto, export_csv, export_globalrelay
from appliance.compliance_records import ChangeProof, ExportFilter, ExportFormat, ExportHeader, ExportRecord, FileMeta, Provenance, Reaction, RecordKind, iso_utc
from appliance.export_encoders import Encoder, ZipEntry, encode_part
from appliance.export_sealing import CHUNK_BYTES, SealedExportError, SealingWriter, new_identity, open_sealed, parse_identity, parse_recipient
from appliance.export_segment import Channel
from appliance.export_signed import FORMAT_NAME, SignedLines, canonical, record_body, record_halves
from appliance.export_verify import verify_lines
from appliance.export_zip import ZipStream

WORKSPACE = crypto.new_signing_key(bytes([1]) * 32)
NODE = crypto.new_signing_key(bytes([2]) * 32)
ALICE = crypto.new_signing_key(bytes([3]) * 32)
STRANGER = crypto.new_signing_key(bytes([4]) * 32)
WS = bytes(WORKSPACE.verify_key)
DOC = "c0ffee/seg/000000"

NASTY = ["<b>&amp;</b>", "]]>", "\x00\x01\x1b[31m", '"quoted", comma\r\nline', "=?utf-8?b?AAA?=", "--boundary", "\ud7ff\ue000\ufffe", "Ω🎉\u202e"]
NASTY += ["x\r\nBcc: victim@example.com", "\nSubject: forged", "next\u0085line\u2028", "<evil@x>, other@y", "é" * 700, "a" * 1000, "=_rallypoint_"]
hostile = st.text(st.characters(codec="utf-8"), max_size=80) | st.sampled_from(NASTY)


def cert(kind: certs.SubjectKind, key: bytes, name: str, role: certs.Role) -> bytes:
    return certs.issue_certificate(WORKSPACE, workspace=WS, kind=kind, key=key, name=name, role=role, issued_at=1_000).encoded


CERTS = (cert(certs.SubjectKind.NODE, bytes(NODE.verify_key), "alpha", certs.Role.NODE), cert(certs.SubjectKind.USER, bytes(ALICE.verify_key), "alice", certs.Role.MEMBER))


def header(fmt: ExportFormat = ExportFormat.JSONL, name: str = "acme") -> ExportHeader:
    return ExportHeader(fmt, name, WS.hex(), "NODEID", "alpha", bytes(NODE.verify_key).hex(), CERTS, ExportFilter(), 1_700_000_000_000, bytes(ALICE.verify_key).hex())


def record(
    n: int = 0, text: str = "hello", *, channel: str = "general", user_name: str = "alice", file_name: str = "a.txt", kind: RecordKind = RecordKind.POST, signer: object = ALICE
) -> ExportRecord:
    change_hash = crypto.sha256(f"change {n}".encode())
    signature = crypto.sign(signer, changes.signing_payload(DOC, change_hash))  # type: ignore[arg-type]
    return ExportRecord(
        record_id=f"01MSG{n:021d}/{kind.value}/0",
        kind=kind,
        message_id=f"01MSG{n:021d}",
        channel_id="c0ffee",
        channel_name=channel,
        channel_kind="public",
        author=bytes(ALICE.verify_key).hex(),
        author_name=user_name,
        at=1_700_000_000_000 + n,
        posted_at=1_700_000_000_000 + n,
        text=text,
        root_id=None,
        files=(FileMeta(file_name, 3, "ab" * 32),),
        reactions=(Reaction("👍", "cd" * 32, user_name),),
        withheld=False,
        tampered=False,
        proof=ChangeProof(DOC, change_hash.hex(), change_hash.hex(), signature.hex()),
        provenance=Provenance("NODEID", "alpha", 1_700_000_000_100 + n),
    )


def signed_export(records: list[ExportRecord]) -> list[bytes]:
    lines = SignedLines(lambda m: crypto.sign(NODE, m))
    out = [lines.start(header())] + [lines.add_halves(*record_halves(r)) for r in records] + [lines.finish()]
    return out


@given(st.integers(-2_208_988_800_000, 4_102_444_800_000))  # 1900 to 2100
def test_times_are_iso_utc_to_the_millisecond(ms: int) -> None:
    assert iso_utc(ms) == datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- CSV, XML, EML ---------------------------------------------------------------------------


@given(text=hostile, channel=hostile, user=hostile, file_name=hostile)
def test_csv_rows_round_trip_through_the_csv_module(text: str, channel: str, user: str, file_name: str) -> None:
    rec = record(text=text, channel=channel, user_name=user, file_name=file_name)
    data = (export_csv.header() + export_csv.row(rec)).decode()
    rows = list(csv.reader(io.StringIO(data, newline="")))
    assert rows[0] == list(export_csv.COLUMNS)
    got = dict(zip(rows[0], rows[1], strict=True))
    assert (got["Post Message"], got["Channel Name"], got["Username"]) == (text, channel, user)
    assert json.loads(got["Attachments"]) == [{"name": file_name, "size": 3, "hash": "ab" * 32}]
    assert got["Change Hash"] == rec.proof.change_hash if rec.proof else False


@given(texts=st.lists(hostile, min_size=1, max_size=4), channel=hostile, user=hostile)
def test_actiance_xml_parses_and_keeps_the_text_it_can_carry(texts: list[str], channel: str, user: str) -> None:
    encoder = Encoder(ExportFormat.ACTIANCE, lambda m: crypto.sign(NODE, m))
    head = header(ExportFormat.ACTIANCE, name="<acme -- & co>")
    runs = [(Channel("c0ffee", channel, "public"), [record(n, t, channel=channel, user_name=user) for n, t in enumerate(texts)])]
    runs.append((Channel("beef", "x", "public"), [dataclasses.replace(record(99, "other channel", channel="x"), channel_id="beef")]))
    chunks = encoder.start(head) + [c for ch, run in runs for c in encoder.add_part(encode_part(ExportFormat.ACTIANCE, head, ch, run, {}, name_files=False))] + encoder.finish()
    data = b"".join(chunk.data for chunk in chunks)
    root = ElementTree.fromstring(data)
    conversations = root.findall("Conversation")
    assert len(conversations) == 2
    contents = [m.findtext("Content") for m in conversations[0].findall("Message")]
    carried = ["".join(c if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff" else "\ufffd" for c in t) for t in texts]
    assert carried == [(c or "") for c in contents]
    assert conversations[0].get("Perspective") == "".join(c if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff" else "\ufffd" for c in channel)


def shown(value: str) -> str:
    """A name as a header carries it: one line (control characters replaced)."""
    return "".join("\ufffd" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" else c for c in value)


# The email package reads a file name "<x>" or '"x"' as x (its unquote) and strips whitespace
# round it: a reader's quirks, not ours.
file_names = hostile.filter(lambda s: s.strip() == s != "" and (s[:1], s[-1:]) not in (("<", ">"), ('"', '"')))


@given(text=hostile, channel=hostile, user=hostile, file_name=file_names, data=st.binary(max_size=300))
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
def test_every_eml_parses_with_the_email_package(text: str, channel: str, user: str, file_name: str, data: bytes) -> None:
    rec = record(text=text, channel=channel, user_name=user, file_name=file_name)
    message = email.message_from_bytes(export_globalrelay.eml(header(ExportFormat.GLOBALRELAY), rec, {"ab" * 32: data}), policy=policy.default)
    assert message.defects == []
    body = message.get_body(("plain",))
    assert body is not None
    assert body.get_payload(decode=True).decode().split("\n\nReactions:")[0] == text  # base64: exact
    assert str(message["Subject"]) == shown(f"Rallypoint Message in #{channel} by {user}")
    # the parser folds white space, and keeps a space where a long name was split in encoded words
    assert "".join(message["From"].addresses[0].display_name.split()) == "".join(shown(user).split())
    attachments = list(message.iter_attachments())
    assert [(a.get_filename(), a.get_content()) for a in attachments] == [(file_name, data)]
    assert message["X-Rallypoint-Record"] == f"post {rec.record_id}"


def test_the_eml_form_is_a_zip_of_one_message_per_record() -> None:
    encoder = Encoder(ExportFormat.GLOBALRELAY, lambda m: crypto.sign(NODE, m))
    channel = Channel("c0ffee", "general", "public")
    buffer = io.BytesIO()
    archive = ZipStream(buffer)
    part = encode_part(ExportFormat.GLOBALRELAY, header(ExportFormat.GLOBALRELAY), channel, [record(n) for n in range(3)], {}, name_files=False)
    for chunk in [*encoder.start(header(ExportFormat.GLOBALRELAY)), *encoder.add_part(part), *encoder.finish()]:
        assert chunk.entry is not None
        archive.add_deflated(chunk.entry.name, chunk.data, chunk.entry.crc, chunk.entry.size)
    archive.close()
    with zipfile.ZipFile(buffer) as opened:
        assert opened.testzip() is None
        names = opened.namelist()
        emls = [opened.read(n) for n in names if n.endswith(".eml")]
    assert names[0] == "manifest.json" and len(emls) == 3
    assert emls[0] == export_globalrelay.eml(header(ExportFormat.GLOBALRELAY), record(0), {})


# --- signed JSON lines -------------------------------------------------------------------------


def test_a_whole_signed_export_verifies() -> None:
    report = verify_lines(signed_export([record(n) for n in range(5)]), WS)
    assert report.ok and report.records == 5 and report.problems == ()


FIELDS = {
    "text": lambda b: b | {"text": b["text"] + "!"},
    "author": lambda b: b | {"author": "mallory"},
    "author_key": lambda b: b | {"author_key": bytes(STRANGER.verify_key).hex()},
    "time": lambda b: b | {"at_ms": b["at_ms"] + 1},
    "channel": lambda b: b | {"channel": b["channel"] | {"name": "elsewhere"}},
    "files": lambda b: b | {"files": []},
    "reactions": lambda b: b | {"reactions": []},
    "proof": lambda b: b | {"proof": b["proof"] | {"signature": "00" * 64}},
    "provenance": lambda b: b | {"provenance": b["provenance"] | {"received_from": "OTHER"}},
    "kind": lambda b: b | {"kind": "edit"},
    "flag": lambda b: b | {"withheld": True},
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_changed_field_names_its_line_and_record(field: str) -> None:
    lines = signed_export([record(n) for n in range(4)])
    body = json.loads(lines[2])
    lines[2] = json.dumps(FIELDS[field](body), ensure_ascii=False).encode() + b"\n"
    report = verify_lines(lines, WS)
    assert not report.ok
    assert report.problems[0].line == 3 and report.problems[0].record_id == body["id"], report.problems


def test_a_record_resigned_by_the_node_but_not_its_author_is_named() -> None:
    lines = signed_export([record(0), record(1, signer=STRANGER)])
    report = verify_lines(lines, WS)
    assert [(p.line, "change signature" in p.reason) for p in report.problems] == [(3, True)]


@pytest.mark.parametrize("cut", ["end", "middle", "last_record"])
def test_a_cut_file_is_detected(cut: str) -> None:
    lines = signed_export([record(n) for n in range(4)])
    cut_lines = {"end": lines[:-1], "middle": lines[:2] + lines[3:], "last_record": lines[:-2] + lines[-1:]}[cut]
    report = verify_lines(cut_lines, WS)
    assert not report.ok and report.problems


def test_a_line_cut_mid_way_is_named() -> None:
    lines = signed_export([record(n) for n in range(3)])
    lines[2] = lines[2][:40]
    assert verify_lines(lines, WS).problems[0].line == 3


def test_reordered_records_are_detected() -> None:
    lines = signed_export([record(n) for n in range(4)])
    lines[2], lines[3] = lines[3], lines[2]
    report = verify_lines(lines, WS)
    assert {p.line for p in report.problems} >= {3, 4}


def test_another_workspace_key_fails_and_the_file_key_is_said_to_be_the_files() -> None:
    lines = signed_export([record(0)])
    assert not verify_lines(lines, bytes(STRANGER.verify_key)).ok
    assert verify_lines(lines).workspace_key_from_file


def test_a_header_with_a_changed_filter_or_certificate_fails() -> None:
    lines = signed_export([record(0)])
    body = json.loads(lines[0])
    lines[0] = json.dumps(body | {"filters": body["filters"] | {"users": ["nobody"]}}).encode() + b"\n"
    assert verify_lines(lines, WS).problems[0].line == 1


def test_an_uncertified_author_is_named() -> None:
    lines = SignedLines(lambda m: crypto.sign(NODE, m))
    stranger = dataclasses.replace(record(0, signer=STRANGER), author=bytes(STRANGER.verify_key).hex())
    out = [lines.start(header()), lines.add_halves(*record_halves(stranger)), lines.finish()]
    assert "not certified" in verify_lines(out, WS).problems[0].reason


# --- format /2: checkpoints ----------------------------------------------------------------------

V1_VECTOR = Path(__file__).resolve().parents[1] / "export_vectors" / "export_v1.jsonl"


def checkpointed(records: list[ExportRecord], every: int) -> list[bytes]:
    """A format /2 export with a checkpoint every `every` records, one line an item."""
    lines = SignedLines(lambda m: crypto.sign(NODE, m), checkpoint_every=every)
    data = lines.start(header()) + b"".join(lines.add_halves(*record_halves(r)) for r in records) + lines.finish()
    return data.splitlines(keepends=True)


def test_records_carry_no_signature_and_checkpoints_list_every_line() -> None:
    lines = checkpointed([record(n) for n in range(7)], every=3)
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds == ["header"] + ["record"] * 3 + ["checkpoint"] + ["record"] * 3 + ["checkpoint", "record", "end"]
    assert json.loads(lines[0])["format"] == FORMAT_NAME
    assert all("sig" not in json.loads(line) for line, kind in zip(lines, kinds, strict=True) if kind == "record")
    assert json.loads(lines[4])["hashes"] == [hashlib.sha256(line).hexdigest() for line in lines[1:4]]
    report = verify_lines(lines, WS)
    assert report.ok and report.records == 7


@given(st.data(), st.integers(1, 5), st.integers(1, 12))
@settings(max_examples=40, deadline=None)
def test_any_changed_record_is_named_by_line_and_id_whatever_the_checkpoints(data: st.DataObject, every: int, count: int) -> None:
    lines = checkpointed([record(n) for n in range(count)], every)
    records = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "record"]
    at = data.draw(st.sampled_from(records))
    body = json.loads(lines[at])
    change = data.draw(st.sampled_from(["text", "time", "provenance", "channel", "bytes"]))
    if change == "bytes":  # the same JSON, written another way
        lines[at] = json.dumps(body, ensure_ascii=True).encode() + b"\n"
    else:
        lines[at] = json.dumps(FIELDS[change](body), ensure_ascii=False).encode() + b"\n"
    report = verify_lines(lines, WS)
    assert not report.ok
    assert (report.problems[0].line, report.problems[0].record_id) == (at + 1, body["id"]), report.problems
    assert "the record was changed" in report.problems[0].reason


@pytest.mark.parametrize("fault", ["checkpoint_removed", "checkpoint_changed", "record_removed", "records_swapped_across", "line_added", "end_removed", "extended"])
def test_cut_reordered_or_extended_files_fail_across_checkpoints(fault: str) -> None:
    lines = checkpointed([record(n) for n in range(8)], every=3)
    # 0 header, 1-3 records, 4 checkpoint, 5-7 records, 8 checkpoint, 9-10 records, 11 end
    changed = {
        "checkpoint_removed": lines[:4] + lines[5:],
        "checkpoint_changed": lines[:4] + [lines[4].replace(b'"records":3', b'"records":4')] + lines[5:],
        "record_removed": lines[:6] + lines[7:],
        "records_swapped_across": lines[:3] + [lines[5], lines[4], lines[3]] + lines[6:],
        "line_added": lines[:6] + [lines[6]] + lines[6:],
        "end_removed": lines[:-1],
        "extended": lines + [lines[2]],
    }[fault]
    report = verify_lines(changed, WS)
    assert not report.ok and report.problems, fault


def test_an_export_of_format_1_still_verifies_and_names_a_changed_record() -> None:
    """The committed file an earlier release wrote (every line signed, no checkpoints)."""
    lines = V1_VECTOR.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[0])["format"] == "rallypoint-compliance-export/1"
    report = verify_lines(lines, WS)
    assert report.ok and report.records == 3 and report.complete
    body = json.loads(lines[2])
    lines[2] = json.dumps(body | {"text": "revised"}, ensure_ascii=False).encode() + b"\n"
    changed = verify_lines(lines, WS)
    assert (changed.problems[0].line, changed.problems[0].record_id) == (3, body["id"]) and "the record was changed" in changed.problems[0].reason
    assert not verify_lines(lines[:-1], WS).ok


# --- encryption --------------------------------------------------------------------------------


def sealed(data: bytes, recipient: bytes) -> bytes:
    out = io.BytesIO()
    writer = SealingWriter(out, recipient)  # type: ignore[arg-type]
    for start in range(0, len(data), 10_000):
        writer.write(data[start : start + 10_000])
    writer.close()
    return out.getvalue()


@given(st.binary(max_size=3 * CHUNK_BYTES + 10) | st.just(b"x" * (2 * CHUNK_BYTES)))
@settings(max_examples=20, deadline=None)
def test_encryption_round_trips_in_chunks(data: bytes) -> None:
    identity_text, public = new_identity()
    assert b"".join(open_sealed(io.BytesIO(sealed(data, parse_recipient(public))), parse_identity(identity_text))) == data


def test_a_wrong_key_a_cut_or_an_altered_file_is_refused() -> None:
    identity_text, public = new_identity()
    other, _ = new_identity()
    blob = sealed(b"y" * (CHUNK_BYTES * 2 + 5), parse_recipient(public))
    with pytest.raises(SealedExportError, match="not encrypted to this key"):
        list(open_sealed(io.BytesIO(blob), parse_identity(other)))
    with pytest.raises(SealedExportError, match="cut short"):
        list(open_sealed(io.BytesIO(blob[: len(blob) - 30]), parse_identity(identity_text)))
    with pytest.raises(SealedExportError, match="cut short"):  # whole chunks, the final one missing
        list(open_sealed(io.BytesIO(blob[: 8 + 80 + 24 + 2 * (4 + CHUNK_BYTES + 17)]), parse_identity(identity_text)))
    altered = bytearray(blob)
    altered[200] ^= 1
    with pytest.raises(SealedExportError, match="altered"):
        list(open_sealed(io.BytesIO(bytes(altered)), parse_identity(identity_text)))


def test_rows_written_at_once_are_the_rows_written_one_by_one() -> None:
    records = [record(n, text=NASTY[n % len(NASTY)]) for n in range(20)]
    assert export_csv.rows(records) == b"".join(export_csv.row(r) for r in records)


# --- parts: runs of records encoded apart (in workers), put in order by one Encoder ---------------


@given(text=hostile, user=hostile, channel=hostile, line=st.integers(2, 10**9))
def test_a_records_halves_around_its_line_number_are_its_canonical_line(text: str, user: str, channel: str, line: int) -> None:
    rec = record(0, text, user_name=user, channel=channel, file_name=text)
    before, after = record_halves(rec)
    assert before + str(line).encode() + after == canonical(record_body(rec, line))


def encoded(fmt: ExportFormat, runs: list[tuple[Channel, list[ExportRecord]]]) -> list[tuple[ZipEntry | None, bytes]]:
    """The file's bytes (one item), or the zip's entries, as the Encoder gives them."""
    encoder = Encoder(fmt, lambda m: crypto.sign(NODE, m))
    chunks = encoder.start(header(fmt))
    for channel, run in runs:
        chunks += encoder.add_part(encode_part(fmt, header(fmt), channel, run, {}, name_files=False))
    chunks += encoder.finish()
    if fmt == ExportFormat.GLOBALRELAY:
        return [(chunk.entry, chunk.data) for chunk in chunks]
    return [(None, b"".join(chunk.data for chunk in chunks))]


@given(st.data(), st.sampled_from(list(ExportFormat)), st.integers(1, 14), st.integers(0, 14))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_records_cut_into_parts_anywhere_encode_as_in_one_part(data: st.DataObject, fmt: ExportFormat, first: int, second: int) -> None:
    """Two channels' records by three authors, each channel cut at arbitrary points: the same
    bytes as one part a channel (who entered a Conversation, line numbers, checkpoints, entries)."""
    authors = [(bytes(key.verify_key).hex(), name) for key, name in ((ALICE, "alice"), (STRANGER, "mallory"), (NODE, "nodey"))]
    groups: list[tuple[Channel, list[ExportRecord]]] = []
    for channel, count in ((Channel("c0ffee", "general", "public"), first), (Channel("d00d", "ops", "private"), second)):
        if count:
            picks = data.draw(st.lists(st.sampled_from(authors), min_size=count, max_size=count))
            texts = data.draw(st.lists(hostile, min_size=count, max_size=count))
            made = [record(len(groups) * 100 + n, texts[n], channel=channel.name, user_name=name) for n, (_, name) in enumerate(picks)]
            groups.append((channel, [dataclasses.replace(r, channel_id=channel.channel_id, author=key) for r, (key, _) in zip(made, picks, strict=True)]))
    runs: list[tuple[Channel, list[ExportRecord]]] = []
    for channel, group in groups:
        cuts = sorted(data.draw(st.sets(st.integers(1, len(group)), max_size=4)))
        runs += [(channel, group[a:b]) for a, b in zip([0, *cuts], [*cuts, len(group)], strict=True)]
    assert encoded(fmt, runs) == encoded(fmt, groups)
