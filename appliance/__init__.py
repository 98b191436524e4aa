"""The Rallypoint node, the bottom layer: everything one node holds and does on its own.

- Pure modules (bytes in and out; time and randomness as parameters; no asyncio, SQLAlchemy,
  sockets): ids, the strict CBOR profile, crypto, certificates and the directory's
  resolution, signed changes and their verifier, channel documents, the audit chain and its
  actions, the network policy.
- The store: SQLAlchemy async over SQLite (WAL), the schema and its Alembic migrations; the
  only package that imports SQLAlchemy.
- The node's services, one job each, in a one-way order: a kernel (the store, the write lock,
  the change feed, the audit trail), then identity, replica, directory, views, blobs,
  enrollment, custody, chat, exchange, intake and peers.
- `appliance.node.Node`, the facade: it opens, joins, restores and closes a node and holds the
  services as attributes (`node.chat.post(...)`, `node.views.read(...)`).

Imports nothing from `sync` or `tui`, nor textual or zeroconf. Its errors derive from
`RallypointError` (appliance/errors.py draws the tree)."""

__version__ = "0.1.0"
