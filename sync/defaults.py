"""The defaults the command line shows in its help, apart from the modules that use them, so
that `rallypoint --help` loads none of the LAN or bundle machinery."""

from __future__ import annotations

MiB = 1024 * 1024
DEFAULT_PORT = 7373  # TCP, LAN sessions
DEFAULT_MAX_BYTES = 64 * MiB  # one bundle; more content goes into further bundles
