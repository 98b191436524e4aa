"""Contracts tier: one acceptance suite per port, run on every implementation of it, the real
one and the in-memory twin shipped with the code alike (the models: automerge-repo's storage and
network adapter suites).

The convention, checked by tests/unit/test_shape.py for every Protocol in sync/ports.py, the
store's `Storage` and the change feed's `Feed`:

- The suite is `tests/contracts/test_<port>.py` (the port's name in snake case; the store's is
  test_store.py) and names its port at module level: `PORT = Feed` (the Protocol, imported).
- It lists the implementations it runs at module level, as classes imported from appliance/,
  sync/ or tui/ (never defined in tests/), two at least: a list,
  `IMPLEMENTATIONS = [ChangeFeed, RecordingFeed]`, or a dict from test id to class,
  `IMPLEMENTATIONS = {"stream": StreamChannel, "memory": MemoryChannel}`.
- Every test runs on each of them, through a fixture or a parametrize over it:
  `@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__name__)` or
  `@pytest.fixture(params=list(IMPLEMENTATIONS))`; the fixture builds the implementation (each
  may need its own construction: branch there, not in the tests). A test that only one
  implementation can run does not belong in the suite.
"""
