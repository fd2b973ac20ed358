"""Hand-written statements on PostgreSQL through psycopg's own cursor, in the caller's
transaction: parameters bound by the server (the ORM's cursor writes each one into the
statement's text, bytes as hex) and, where asked, results in binary (a bytea comes as its
bytes, jsonb parsed). Used on the hot paths: a sync's page writes, a list page's reads.

Each statement is logged as the ORM logs its own (`connection.queries`, so Django's
CaptureQueriesContext and the benches count it) whenever queries are being logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection

_FEW = 3


class Cursor:
    """The few cursor methods the hand-written paths use, logged like the ORM's."""

    def __init__(self, raw: psycopg.Cursor[Any], logged: bool) -> None:
        self.raw, self.logged = raw, logged

    # Errors come out as Django's (django.db.OperationalError, ...), as from the ORM's cursor, and
    # mark the connection as Django marks it: callers catch them, and a connection cut mid-page
    # is closed and opened again like any other.

    def execute(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False) -> None:
        started = time.monotonic()
        try:
            with connection.wrap_database_errors:
                self.raw.execute(sql, params, binary=binary)
        finally:
            self._log(sql, started)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        started = time.monotonic()
        try:
            with connection.wrap_database_errors:
                if len(rows) <= _FEW:  # a round trip each costs less than psycopg's pipeline for them
                    for row in rows:
                        self.raw.execute(sql, row)
                else:
                    self.raw.executemany(sql, rows)
        finally:
            self._log(f"{len(rows)} times: {sql}", started)

    @property
    def rowcount(self) -> int:
        return self.raw.rowcount

    def fetchall(self) -> list[tuple[Any, ...]]:
        with connection.wrap_database_errors:
            return self.raw.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        with connection.wrap_database_errors:
            return self.raw.fetchone()

    def _log(self, sql: str, started: float) -> None:
        if self.logged:
            connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})


@contextmanager
def cursor() -> Iterator[Cursor]:
    """A server-binding cursor on the default database (PostgreSQL only)."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
        yield Cursor(raw, connection.queries_logged)


def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of a query; on PostgreSQL with server-bound parameters and binary results, on
    any other database through the ORM's cursor."""
    if connection.vendor != "postgresql":
        with connection.cursor() as plain:
            plain.execute(sql, params)
            return plain.fetchall()
    with cursor() as pg:
        pg.execute(sql, params, binary=True)
        return pg.fetchall()
