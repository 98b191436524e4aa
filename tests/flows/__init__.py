"""Flows tier: node and multi-service behaviour in one process, against real stores in tmp homes."""
