"""docs/node.md follows the code: it lists every table the schema declares and every audit
action the code writes (issue 14 point 8)."""

from __future__ import annotations

import re

from appliance import schema
from appliance.audit_actions import AuditAction
from tests.conftest import REPO

NODE_DOC = REPO / "docs" / "node.md"
SQLITE_ONLY = {"messages_fts"}  # the FTS5 index: created by the migration, not in the metadata


def first_column(section: str) -> set[str]:
    """The backquoted names in the first column of the tables of a section of docs/node.md."""
    text = NODE_DOC.read_text()
    match = re.search(rf"^## {re.escape(section)}\b.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/node.md has no section {section!r}"
    cells = re.findall(r"^\|([^|\n]*)\|", match.group(0), re.MULTILINE)
    return {name for cell in cells for name in re.findall(r"`([a-z_]+)`", cell)}


def test_every_table_is_listed() -> None:
    assert first_column("The store") == set(schema.metadata.tables) | SQLITE_ONLY


def test_every_audit_action_is_listed() -> None:
    assert first_column("Audit log") == {action.value for action in AuditAction}
