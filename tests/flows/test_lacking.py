"""What a peer lacks, counted without reading the graphs of documents it holds nothing of:
`documents_lacking` (the LAN session's first plan) must agree with what `delta_for` then sends,
and `heads_for` with the documents' own heads."""

from __future__ import annotations

from pathlib import Path

from appliance.changes import parse_change
from appliance.node import Node
from tests.conftest import make_workspace
from tests.flows.test_wholes import delta_to, import_delta


async def sent_counts(source: Node, target: Node) -> list[tuple[str, int]]:
    """Every document `delta_for` would send `target`, as changes, with how many."""
    delta = await source.exchange.delta_for([target.identity.node_key], wholes=False)
    return [(d.doc_id, len(d.changes)) for d in delta.documents]


async def test_documents_lacking_agrees_with_the_delta_for_held_partly_wholly_and_not_at_all(tmp_path: Path) -> None:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    async with alpha, bravo, charlie:
        general = (await alpha.chat.create_channel("general")).channel_id
        secret = (await alpha.chat.create_channel("secret", private=True)).channel_id  # charlie is no member: never lacks it
        await alpha.chat.post_many("general", [f"message {i}" for i in range(1100)])  # three segments
        await alpha.chat.post_many("secret", ["hush"] * 3)
        await import_delta(bravo, await delta_to(alpha, bravo), alpha)  # bravo's rows: one per actor of a segment
        await bravo.chat.post_many("general", ["from bravo"] * 3)
        segments = sorted(d for d in await bravo.replica.document_ids() if d.startswith(general) and "/seg/" in d)
        # As bravo believes: charlie holds the first segment, ten changes of the second, nothing else.
        tenth = parse_change((await alpha.replica.changes_for(segments[1], []))[9].data).hash
        await bravo.exchange.record_peer_heads(charlie.identity.node_key, {segments[0]: await alpha.replica.document_heads(segments[0]), segments[1]: [tenth]})

        expected = await sent_counts(bravo, charlie)
        assert await bravo.exchange.documents_lacking(charlie.identity.node_key) == expected
        by_doc = dict(expected)
        assert segments[0] not in by_doc and by_doc[segments[1]] == 512 - 10 and by_doc[segments[2]] == 1100 - 1024 + 3
        # alpha logs a row per change, and holds the private channel charlie may not receive
        assert await alpha.exchange.documents_lacking(charlie.identity.node_key) == await sent_counts(alpha, charlie)
        assert not any(doc_id.startswith(secret) for doc_id, _ in await alpha.exchange.documents_lacking(charlie.identity.node_key))

        heads = await bravo.exchange.heads_for(charlie.identity.node_key)
        assert heads == {doc_id: tuple(sorted(await bravo.replica.document_heads(doc_id))) for doc_id in heads}
