"""Operator-facing interfaces: the `rallypoint` command and the Textual console.
They orchestrate only; all work happens in `appliance` (and, later, `sync`)."""
