"""A message's row in the materialised view (`messages` table), as the node writes it: pure,
so the worker processes that read segments carried whole build rows without loading the
store's libraries."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from appliance import documents, policy, segments


def view_values(channel_id: str, doc_id: str, state: segments.MessageState) -> dict[str, Any]:
    """A message as the view shows it: its row's columns (VIEW_COLUMNS) and its reactions,
    which are stored apart (`message_reactions`)."""
    return {
        "message_id": state.message_id,
        "channel_id": channel_id,
        "doc_id": doc_id,
        "author": state.author,
        "created_at": state.created_at,
        "text": state.text,
        "root_id": state.root_id,
        "edited_at": state.edited_at,
        "deleted": state.deleted,
        "reactions": reactions_json(state.reactions),
        "files": json.dumps([{"name": f.name, "size": f.size, "hash": f.hash} for f in state.files]) if state.files else "[]",
        "mentions": mentions_json(state.mentions),
        "tampered": state.tampered,
        "deleted_by": state.deleted_by,
    }


# Most messages have no reactions, files or mentions: the literals spare a bulk import ~8 us a message.


def head_view_values(head: documents.ChannelHead) -> dict[str, Any]:
    """A channel's view row (table channels, its id aside) as its head says."""
    return {
        "name": head.name,
        "purpose": head.purpose,
        "kind": head.kind,
        "archived": head.archived,
        "created_by": head.created_by,
        "created_at": head.created_at,
        "members": json.dumps(head.members, sort_keys=True),
        "read_only": head.read_only,
        "former": json.dumps(list(head.former)),
        "requires": policy.encode(head.requires) if head.requires != documents.UNSATISFIABLE else "-=-",
    }


def reactions_json(reactions: Mapping[str, Sequence[str]]) -> str:
    """The `reactions` column: emoji -> user hexes."""
    return json.dumps(reactions, sort_keys=True) if reactions else "{}"


def mentions_json(mentions: Sequence[str]) -> str:
    """The `mentions` column: user hexes."""
    return json.dumps(list(mentions)) if mentions else "[]"


VIEW_COLUMNS = ("message_id", "channel_id", "doc_id", "author", "created_at", "text", "root_id", "edited_at", "deleted", "files", "mentions", "tampered", "deleted_by")
_IN_ORDER = itemgetter(*VIEW_COLUMNS)


def view_tuple(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's values (as `view_values` gives them) in VIEW_COLUMNS order."""
    return tuple(_IN_ORDER(values))


def view_row(channel_id: str, doc_id: str, state: segments.MessageState) -> tuple[Any, ...]:
    """A message's row in the view as a tuple of VIEW_COLUMNS values."""
    return view_tuple(view_values(channel_id, doc_id, state))


def reactions_row(doc_id: str, state: segments.MessageState) -> tuple[str, str, str]:
    """A message's reactions as the view stores them: (message id, segment, reactions_json)."""
    return (state.message_id, doc_id, reactions_json(state.reactions))
