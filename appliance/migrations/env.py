"""Alembic environment: the node hands in an open connection (see appliance.store)."""

from alembic import context

from appliance.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
