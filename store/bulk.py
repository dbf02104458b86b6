"""Many rows in one ``INSERT ... ON CONFLICT DO NOTHING``, the fastest way each database has.

The planners write a page of up to ``LOYALCAST_BATCH_SIZE`` delivery rows at
a time. How those rows travel matters at a million members:

- **PostgreSQL:** one statement whose parameters are one array per column,
  ``INSERT ... SELECT * FROM unnest($1::bigint[], $2::varchar[], ...)``. The
  statement text is the same for every page, whatever its size, and the
  server receives a dozen parameters instead of rows x columns. SQLAlchemy's
  executemany ("insertmanyvalues") would send multi-row ``VALUES`` with about
  14 placeholders per row: at 1,000 rows, parsing that statement was most of
  a broadcast plan's time. A column that holds the same value in every row
  (the campaign, the run, ``now``) is sent once as a scalar rather than as an
  array.
- **SQLite:** executemany of the compiled statement; the driver loops in C
  and there is no network in between.

Updating a page of rows, each with values of its own (a deliver job
recording what the provider answered for 1,000 messages), is the same
shape: :func:`update_many` is one ``UPDATE ... FROM unnest(...)`` joined on
the key on PostgreSQL, where executemany would send, and the server plan
and run, one ``UPDATE`` per row; executemany on SQLite.

The same holds for reading or updating a page of rows by id: :func:`among`
is ``column = ANY(:array)`` on PostgreSQL, one parameter, where ``IN`` would
render (and make the driver parse) one placeholder per id: for 1,000 ids,
10 ms of CPU per statement against 2.5 ms. A filter beside such a page
(``status IN (...)``) goes through :func:`unindexed`, so that the page is
always found by key, whatever the table's statistics say.

Streaming a large read is the third case: :func:`stream_tuples` hands out
plain tuples from a psycopg server-side cursor on PostgreSQL, where
SQLAlchemy's result would build a ``Row`` per row and pop each from a buffer
(0.3 s of the 1.1 s it took to stream the 345,000 lots of a 30-day expiry
scan at a million members).

Values pass through each column's SQLAlchemy type on both paths (an
``ARRAY`` applies its item type's bind processing to every element), so a
naive datetime given for a ``UTCDateTime`` column is refused the same way.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    any_,
    bindparam,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from .engine import insert_ignore

__all__ = ["among", "insert_ignore_many", "stream_tuples", "unindexed", "update_many"]


def among(session: Session, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN values`` for a page of ids or keys, as the session's database runs it best.

    On PostgreSQL ``column = ANY(:array)``: one bound parameter however many
    values, so the statement text is the same for every page. Elsewhere
    ``column IN (...)``.
    """
    values = list(values)
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(values)  # type: ignore[no-any-return]
    array_type = ARRAY(column.type)
    return column == any_(cast(bindparam(None, values, type_=array_type), array_type))  # type: ignore[no-any-return]


def unindexed(column: Any) -> Any:
    """``column`` as no index matches it (``column || ''``), for a filter beside :func:`among`.

    A statement that picks a page of rows by key and also filters them, such
    as a deliver job's ``id = ANY(:page) AND status IN ('pending', 'deferred')``,
    must find the page by key. Given the filter's column bare, PostgreSQL may
    instead read every row the filter matches through an index on that
    column and keep the page's: it does whenever its statistics say such rows
    are rare, and they say so for as long as they predate a broadcast's
    rows (a table of mostly final rows, which autoanalyze does not revisit
    during one run). Each page then costs a scan of all the pending rows:
    7 ms for a claim of 20 with 20,000 pending, and growing with the run.
    Wrapped, the filter can only be checked on the rows the key finds. Text
    columns only; the same SQL on SQLite.
    """
    return column.concat("")


def insert_ignore_many(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict_columns: Iterable[str],
    returning: Sequence[ColumnElement[Any]] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` into ``table``, skipping those that conflict on ``conflict_columns``.

    Every row must have the same keys (columns of ``table``). Returns the
    ``returning`` columns of the rows actually inserted (a conflict returns
    nothing), in no particular order; ``[]`` when ``returning`` is empty.

    Raises:
        ValueError: the rows do not all have the same keys, or a key is not a column.
    """
    if not rows:
        return []
    names = _columns_of(table, rows)
    dialect = session.get_bind().dialect.name
    stmt = insert_ignore(dialect, table, None, conflict_columns)
    if dialect == "postgresql":
        stmt = stmt.from_select(names, _unnest(table, names, rows))
        params: Any = None
    else:
        params = list(rows)
    if returning:
        inserted = session.execute(stmt.returning(*returning), params).all()
        return typing.cast("list[tuple[Any, ...]]", inserted)  # a Row is a tuple
    session.execute(stmt, params)
    return []


def update_many(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: str = "id",
    where: Iterable[ColumnElement[bool]] = (),
    values: Mapping[str, Any] | None = None,
) -> None:
    """Update each of ``rows``: the row of ``table`` whose ``key`` column equals its ``key``.

    Each row's other keys are columns set to its own values, ``values`` are
    set on every row alike, and ``where`` (conditions on ``table``'s columns)
    must also hold for a row to change. Every row must have the same keys.
    Write ``where`` so that executemany can run it on SQLite: ``or_`` of
    equalities rather than ``in_`` over a list.

    Raises:
        ValueError: the rows do not all have the same keys, a key is not a
            column, or a row lacks ``key``.
    """
    if not rows:
        return
    names = _columns_of(table, rows)
    if key not in names:
        raise ValueError(f"rows have no {key!r} to find them by")
    own = [name for name in names if name != key]
    stmt = update(table)
    if session.get_bind().dialect.name == "postgresql":
        given = _unnest(table, names, rows).subquery("given")
        stmt = stmt.where(table.c[key] == given.c[key], *where).values(
            {**{name: given.c[name] for name in own}, **(values or {})}
        )
        session.execute(stmt)
        return
    stmt = stmt.where(table.c[key] == bindparam(f"b_{key}"), *where).values(
        {**{name: bindparam(f"b_{name}") for name in own}, **(values or {})}
    )
    session.execute(stmt, [{f"b_{name}": row[name] for name in names} for row in rows])


def _columns_of(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys every one of ``rows`` has, each a column of ``table``."""
    names = list(rows[0])
    wanted = set(names)
    for number, row in enumerate(rows, start=1):
        if row.keys() != wanted:
            raise ValueError(
                f"row {number} of {len(rows)} has columns {sorted(row)}, not {sorted(wanted)}"
            )
    unknown = [name for name in names if name not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {unknown}")
    return names


def _unnest(table: Table, names: list[str], rows: Sequence[Mapping[str, Any]]) -> Any:
    """``SELECT`` of the rows as one typed array per column, a scalar where all rows agree."""
    columns = {name: [row[name] for row in rows] for name in names}
    same = {
        name: all(v == values[0] and type(v) is type(values[0]) for v in values)
        for name, values in columns.items()
    }
    if all(same.values()):  # identical rows: one array still gives the row count
        same[names[0]] = False
    varying: list[str] = []
    arrays: list[ColumnElement[Any]] = []
    constant: dict[str, ColumnElement[Any]] = {}
    for index, (name, values) in enumerate(columns.items()):
        column_type = table.c[name].type
        if same[name]:
            constant[name] = cast(
                bindparam(f"c{index}", values[0], type_=column_type), column_type
            ).label(name)
        else:
            array_type = ARRAY(column_type)
            arrays.append(cast(bindparam(f"a{index}", values, type_=array_type), array_type))
            varying.append(name)
    source = func.unnest(*arrays).table_valued(*varying).render_derived(name="u")
    return select(*(constant[name] if name in constant else source.c[name] for name in names))


def stream_tuples(
    connection: Connection, statement: Select[*tuple[Any, ...]], batch: int
) -> Generator[Sequence[tuple[Any, ...]]]:
    """The rows of ``statement``, ``batch`` at a time, never all in memory.

    On PostgreSQL plain tuples from a named (server-side) psycopg cursor in
    the connection's own transaction, which must stay open while iterating.
    Bound values pass through their SQLAlchemy types' bind processing as in
    any execute, but result values are the driver's own: no result
    processors, so select columns whose types have none on psycopg (or
    convert them in SQL). Elsewhere ``Result.partitions`` with ``yield_per``
    (SQLAlchemy rows, which unpack and compare as tuples). Errors are
    SQLAlchemy's on both. Closing the iterator closes the cursor.
    """
    if connection.dialect.name != "postgresql":
        result = connection.execute(statement, execution_options={"yield_per": batch})
        try:
            yield from typing.cast("Iterable[Sequence[tuple[Any, ...]]]", result.partitions())
        finally:
            result.close()
        return
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None and name in params:
            try:
                params[name] = process(params[name])
            except Exception as exc:  # as SQLAlchemy's execute reports a bad bound value
                raise StatementError(str(exc), str(compiled), params, exc) from exc
    driver = connection.connection.driver_connection
    assert driver is not None  # a live connection
    sql = str(compiled)
    try:
        with driver.cursor(name=f"loyalcast_{uuid.uuid4().hex}", binary=True) as cursor:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(batch):
                yield rows
    except dialect.loaded_dbapi.Error as exc:  # the same exception types as any execute
        raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error) from exc
