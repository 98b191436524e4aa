"""Compliance export as Actiance XML (the shape Mattermost writes): a FileDump holding one
Conversation per channel, with the participants entering, each message, file transfers and the
participants leaving. Records arrive grouped by channel; a Conversation is closed when the next
channel starts, so the document streams. A run of records is made into elements apart from the
Conversation (`messages`: in a worker process) and framed in order (`ActianceWriter.add_part`).
Pure: records in, bytes out.

XML 1.0 cannot carry some characters at all (most C0 controls, lone surrogates, U+FFFE/FFFF):
each is written as U+FFFD; the CSV and JSON-lines forms keep the text exactly."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

from appliance.compliance_records import ExportHeader, ExportRecord, RecordKind, iso_utc

_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def text(value: str) -> str:
    """`value` as XML character data: escaped (a carriage return too: a parser would read it as a
    line feed), characters XML cannot hold replaced."""
    return escape(_NOT_XML.sub("\ufffd", value)).replace("\r", "&#13;")


def _attr(value: str) -> str:
    return quoteattr(_NOT_XML.sub("\ufffd", value), {"\r": "&#13;", "\n": "&#10;", "\t": "&#9;"})


def _el(name: str, value: str) -> str:
    return f"<{name}>{text(value)}</{name}>"


class ActianceWriter:
    """Stateful only in which channel's Conversation is open and who has entered it."""

    def __init__(self) -> None:
        self._channel: str | None = None
        self._participants: dict[str, str] = {}  # user hex -> name, in order of entry
        self._last_at = 0

    def start(self, header: ExportHeader) -> bytes:
        comment = f"Rallypoint compliance export of {header.workspace_name} by node {header.node_name} ({header.node_id}) at {iso_utc(header.created_at)}"
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<!-- {text(comment).replace("--", "- -")} -->\n<FileDump xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'.encode()

    def add_part(self, channel_id: str, channel_name: str, channel_kind: str, pieces: Sequence[bytes], entrants: Sequence[Entrant], last_at: int) -> bytes:
        """A run of one channel's records, made by `messages` (where the records were): their
        elements, each author's entry into the Conversation before their first record in it."""
        if not pieces:
            return b""
        out: list[bytes] = []
        if channel_id != self._channel:
            out.append(self._close().encode())
            self._channel = channel_id
            opening = f"<Conversation Perspective={_attr(channel_name)}>\n" + _el("RoomID", f"{channel_kind} - {channel_name} - {channel_id}") + "\n"
            out.append((opening + _el("StartTimeUTC", str(entrants[0].at // 1000)) + "\n").encode())
        done = 0
        for entrant in entrants:
            if entrant.user in self._participants:
                continue
            self._participants[entrant.user] = entrant.name
            out.extend(pieces[done : entrant.first])
            done = entrant.first
            out.append(f"<ParticipantEntered>{_user(entrant.user, entrant.name)}{_el('DateTimeUTC', str(entrant.at // 1000))}</ParticipantEntered>\n".encode())
        out.extend(pieces[done:])
        self._last_at = max(self._last_at, last_at)
        return b"".join(out)

    def _close(self) -> str:
        if self._channel is None:
            return ""
        when = _el("DateTimeUTC", str(self._last_at // 1000))
        left = "".join(f"<ParticipantLeft>{_user(user, name)}{when}</ParticipantLeft>\n" for user, name in self._participants.items())
        end = _el("EndTimeUTC", str(self._last_at // 1000))
        self._channel, self._participants, self._last_at = None, {}, 0
        return left + end + "\n</Conversation>\n"

    def finish(self) -> bytes:
        return (self._close() + "</FileDump>\n").encode()


class Entrant(NamedTuple):
    """An author's first record in a run of records: they enter the Conversation before it."""

    first: int  # the run's index of their first record
    user: str  # hex
    name: str
    at: int  # ms


def messages(records: Sequence[ExportRecord]) -> tuple[list[bytes], list[Entrant]]:
    """Each record's elements (its Message and file transfers), and the first record of each
    author among them. Stateless: a run of records is made apart from the Conversation."""
    pieces: list[bytes] = []
    entrants: list[Entrant] = []
    seen: set[str] = set()
    for record in records:
        if record.author not in seen:
            seen.add(record.author)
            entrants.append(Entrant(len(pieces), record.author, record.author_name, record.at))
        pieces.append(_message(record))
    return pieces, entrants


def _message(record: ExportRecord) -> bytes:
    content = record.text if record.kind != RecordKind.DELETION else f"deleted by {record.author_name}"
    out = [
        "<Message>"
        + _user(record.author, record.author_name)
        + _el("DateTimeUTC", str(record.at // 1000))
        + _el("Content", content)
        + _el("MessageId", record.message_id)
        + _el("RecordId", record.record_id)
        + _el("Kind", record.kind.value)
        + (_el("PreviewsPost", record.root_id) if record.root_id else "")
        + "".join(f"<Reaction>{_el('Emoji', r.emoji)}{_el('LoginName', r.user_name)}</Reaction>" for r in record.reactions)
        + "</Message>\n"
    ]
    for f in record.files:
        when = _el("DateTimeUTC", str(record.at // 1000))
        who = _user(record.author, record.author_name)
        out.append(f"<FileTransferStarted>{who}{_el('FileName', f.name)}{when}</FileTransferStarted>\n")
        out.append(f"<FileTransferEnded>{who}{_el('FileName', f.name)}{_el('UserFileName', f.hash)}{_el('FileSize', str(f.size))}{when}</FileTransferEnded>\n")
    return "".join(out).encode()


def _user(user: str, name: str) -> str:
    return _el("LoginName", name) + _el("UserType", "user") + _el("CorporateEmailID", f"{name}@{user[:16]}.rallypoint")
