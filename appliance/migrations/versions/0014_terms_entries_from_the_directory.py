"""Terms of service and their acceptances are directory entries too (`directory_entries.kind`
"terms" and "acceptance"). A node of an earlier release stored the directory changes that
carried them - an admin wrote them - but only their certificates and revocations as entries:
the terms records and acceptances its directory document holds are added here, each decoded
(signature checked) first; which of them count is decided when the directory is resolved, as
for any entry. No schema change.

Revision ID: 0014
Revises: 0013
"""

import time

import sqlalchemy as sa
from alembic import op

from appliance import documents
from appliance.directory_records import decode_record, kind_of_key
from appliance.errors import ApplianceError

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_READER = bytes(48)  # an actor for a document that is only read


def upgrade() -> None:
    conn = op.get_bind()
    snapshot = conn.execute(sa.text("SELECT data FROM snapshots WHERE doc_id = 'directory'")).scalar()
    rows: list[bytes] = list(conn.execute(sa.text("SELECT data FROM changes WHERE doc_id = 'directory' AND data IS NOT NULL ORDER BY id")).scalars())
    logged = [bytes(data) for data in rows]
    if snapshot is None and not logged:
        return
    try:
        doc = documents.load_document(bytes(snapshot or b'') + b''.join(logged), _READER)
    except documents.DocumentError:
        return  # a directory that does not load is judged on the next import, as before
    stored: list[bytes] = list(conn.execute(sa.text("SELECT fingerprint FROM directory_entries")).scalars())
    known = {bytes(fingerprint) for fingerprint in stored}
    now = int(time.time() * 1000)
    for key, data in documents.directory_entries(doc, ('terms:', 'accept:')):
        try:
            record = decode_record(kind_of_key(key), data)
        except ApplianceError:
            continue  # a damaged entry trusts nothing
        if record.fingerprint not in known:
            known.add(record.fingerprint)
            conn.execute(
                sa.text("INSERT INTO directory_entries (fingerprint, kind, data, added_at) VALUES (:fingerprint, :kind, :data, :added_at)"),
                {'fingerprint': record.fingerprint, 'kind': kind_of_key(key), 'data': data, 'added_at': now},
            )


def downgrade() -> None:
    # Earlier releases keep only certificates and revocations as entries.
    op.execute("DELETE FROM directory_entries WHERE kind IN ('terms', 'acceptance')")
