"""Bulk inserts and updates through SQLAlchemy without its per-row parameter processing.

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

from sqlalchemy import Insert, Table, TextClause, Update, bindparam, insert, update
from sqlalchemy.engine import Connection

_COMPILED: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}


def _key_bind(column: str) -> str:
    return f"key_{column}"  # never a column's own bind name


def _compiled(conn: Connection, table: Table, columns: tuple[str, ...], key_columns: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """The statement's SQL and its parameters' order (empty: the dialect takes named ones) -
    an insert of `columns`, or an update of them on the rows whose `key_columns` match."""
    cache_key = (conn.dialect.name, table.name, columns, key_columns)
    found = _COMPILED.get(cache_key)
    if found is None:
        values: dict[str, Any] = {name: bindparam(name) for name in columns}
        statement = update(table).where(*(table.c[key] == bindparam(_key_bind(key)) for key in key_columns)).values(values) if key_columns else insert(table).values(values)
        found = _COMPILED[cache_key] = _sql_and_order(statement, conn)
    return found


def _sql_and_order(statement: Insert | Update | TextClause, conn: Connection) -> tuple[str, tuple[str, ...]]:
    compiled = statement.compile(dialect=conn.dialect)
    return str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else ()


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
    _execute(conn, *_compiled(conn, table, columns), columns, rows)


def update_tuples(conn: Connection, table: Table, key_columns: tuple[str, ...], columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """Sets `columns` of the rows whose `key_columns` match: each of `rows` is a tuple of the
    keys' values and then `columns`' values. One executemany."""
    if not rows:
        return
    _execute(conn, *_compiled(conn, table, columns, key_columns), (*(_key_bind(key) for key in key_columns), *columns), rows)


_COMPILED_TEXT: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}


def execute_tuples(conn: Connection, statement: TextClause, names: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """Runs `statement` for each of `rows` (a tuple of the values of its bind parameters
    `names`) in one executemany."""
    if not rows:
        return
    cache_key = (conn.dialect.name, statement.text)
    found = _COMPILED_TEXT.get(cache_key)
    if found is None:
        found = _COMPILED_TEXT[cache_key] = _sql_and_order(statement, conn)
    _execute(conn, *found, names, rows)


def _execute(conn: Connection, sql: str, order: tuple[str, ...], names: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """One executemany of `sql` over `rows` (tuples of the parameters `names`), handed to the
    driver in the compiled statement's `order` - or by name, for a dialect that takes names."""
    if not order:
        conn.exec_driver_sql(sql, [dict(zip(names, row, strict=True)) for row in rows])
        return
    if order != names:
        places = [names.index(name) for name in order]
        positions = itemgetter(*places)
        rows = [positions(row) for row in rows] if len(places) > 1 else [(row[places[0]],) for row in rows]
    conn.exec_driver_sql(sql, list(rows))
