"""What the feed's twin adds to the contract it shares with the node's feed
(tests/contracts/test_feed.py): it keeps every event published through it, in order."""

from __future__ import annotations

from appliance.feed import FeedEvent, RecordingFeed
from tests.contracts.test_feed import EVENTS, ScriptedStore


def test_the_recording_feed_keeps_every_event_it_published() -> None:
    feed = RecordingFeed(ScriptedStore().poll)
    seen: list[FeedEvent] = []
    with feed.subscribe(seen.append):
        for event in EVENTS[:2]:
            feed.publish(event)
    feed.publish(EVENTS[2])
    assert feed.events == EVENTS[:3] and seen == EVENTS[:2]
