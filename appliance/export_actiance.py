"""Compliance export as Actiance XML (the shape Mattermost writes): a FileDump holding one
Conversation per channel, with the participants entering, each message, file transfers and the
participants leaving. Records arrive grouped by channel; a Conversation is closed when the next
channel starts, so the document streams. Pure: records in, bytes out.

XML 1.0 cannot carry some characters at all (most C0 controls, lone surrogates, U+FFFE/FFFF):
each is written as U+FFFD; the CSV and JSON-lines forms keep the text exactly."""

from __future__ import annotations

import re
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

    def add(self, record: ExportRecord) -> bytes:
        out: list[str] = []
        if record.channel_id != self._channel:
            out.append(self._close())
            self._channel = record.channel_id
            out.append(f"<Conversation Perspective={_attr(record.channel_name)}>\n")
            out.append(_el("RoomID", f"{record.channel_kind} - {record.channel_name} - {record.channel_id}") + "\n")
            out.append(_el("StartTimeUTC", str(record.at // 1000)) + "\n")
        if record.author not in self._participants:
            self._participants[record.author] = record.author_name
            out.append(f"<ParticipantEntered>{_user(record.author, record.author_name)}{_el('DateTimeUTC', str(record.at // 1000))}</ParticipantEntered>\n")
        self._last_at = max(self._last_at, record.at)
        content = record.text if record.kind != RecordKind.DELETION else f"deleted by {record.author_name}"
        out.append(
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
        )
        for f in record.files:
            when = _el("DateTimeUTC", str(record.at // 1000))
            who = _user(record.author, record.author_name)
            out.append(f"<FileTransferStarted>{who}{_el('FileName', f.name)}{when}</FileTransferStarted>\n")
            out.append(f"<FileTransferEnded>{who}{_el('FileName', f.name)}{_el('UserFileName', f.hash)}{_el('FileSize', str(f.size))}{when}</FileTransferEnded>\n")
        return "".join(out).encode()

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


def _user(user: str, name: str) -> str:
    return _el("LoginName", name) + _el("UserType", "user") + _el("CorporateEmailID", f"{name}@{user[:16]}.rallypoint")
