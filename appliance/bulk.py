"""Bulk inserts through SQLAlchemy without its per-row parameter processing.

An import of a hundred thousand changes writes a hundred thousand rows to the change log and
as many to the message view. SQLAlchemy's executemany builds and processes each row's
parameters in Python (~15 us a row: most of what a whole segment's import costs the parent).
These statements are compiled once per dialect and table, and the rows go to the driver as
tuples, in the compiled statement's order. Only for values the driver takes as they are:
int, str, bytes, bool and None."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.engine import Connection

_COMPILED: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}


def _compiled(conn: Connection, table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    key = (conn.dialect.name, table.name, columns)
    found = _COMPILED.get(key)
    if found is None:
        compiled = insert(table).values({name: bindparam(name) for name in columns}).compile(dialect=conn.dialect)
        order = tuple(compiled.positiontup or ()) if compiled.positional else ()
        found = _COMPILED[key] = (str(compiled), order)
    return found


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Inserts `rows` (each with the same keys) in one executemany."""
    if rows:
        columns = tuple(rows[0])
        pick = itemgetter(*columns)
        insert_tuples(conn, table, columns, [pick(row) for row in rows] if len(columns) > 1 else [(pick(row),) for row in rows])


def insert_tuples(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """Inserts `rows`, each a tuple of `columns`' values, in one executemany."""
    if not rows:
        return
    sql, order = _compiled(conn, table, columns)
    if not order:  # a dialect that takes named parameters
        conn.exec_driver_sql(sql, [dict(zip(columns, row, strict=True)) for row in rows])
        return
    if order != columns:
        positions = itemgetter(*(columns.index(name) for name in order))
        rows = [positions(row) for row in rows]
    conn.exec_driver_sql(sql, list(rows))
