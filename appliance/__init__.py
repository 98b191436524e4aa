"""The Rallypoint node: identity and keys, the store, channels as Automerge documents,
membership and roles, and the audit log. Imports nothing from `sync` or `tui`."""

__version__ = "0.1.0"
