"""Reading and writing one row of the node's `settings` table, in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import schema as t


async def read_setting(conn: AsyncConnection, name: str) -> str | None:
    value: str | None = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == name))).scalar()
    return value


async def write_setting(conn: AsyncConnection, name: str, value: str | None) -> None:
    """Sets `name` to `value`; None removes it (the default applies again)."""
    if value is None:
        await conn.execute(delete(t.settings).where(t.settings.c.name == name))
    elif (await conn.execute(update(t.settings).where(t.settings.c.name == name).values(value=value))).rowcount == 0:
        await conn.execute(insert(t.settings).values(name=name, value=value))
