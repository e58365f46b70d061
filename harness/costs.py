"""Counting what a request costs the services: SQL statements sent, and Redis commands received.

Shared by the lean-path tests and ``bench/api_post.py``, so a figure the benchmark
reports is the one a test holds down.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from sqlalchemy import Engine, event

from harness.processes import wait_until


@contextmanager
def counting_statements(engine: Engine) -> Iterator[Counter[str]]:
    """Count what ``engine`` sends to the server while the block runs: each statement by its
    first word, each connection check (``ping``), and the BEGIN and COMMIT (or ROLLBACK) of
    each transaction."""
    counts: Counter[str] = Counter()

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counts[statement.split(None, 1)[0].upper()] += 1

    def on_end(ending: str) -> Any:
        def listener(conn: Any) -> None:
            if conn.connection.dbapi_connection.autocommit:  # psycopg2 sent no BEGIN, and sends no COMMIT
                return
            counts["BEGIN"] += 1
            counts[ending] += 1

        return listener

    dialect = engine.dialect
    do_ping = dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        counts["ping"] += 1
        return do_ping(dbapi_connection)

    listeners = [("before_cursor_execute", on_execute), ("commit", on_end("COMMIT")), ("rollback", on_end("ROLLBACK"))]
    dialect.do_ping = counted_ping  # type: ignore[method-assign]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield counts
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)
        dialect.do_ping = do_ping  # type: ignore[method-assign]


class RedisMonitor:
    """Records the commands clients send to one Redis database while it runs (``MONITOR``); the
    commands a Lua script runs count as its one EVALSHA."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.commands: list[str] = []
        self._monitor = self.client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        try:
            for command in self._monitor.listen():
                if command["db"] == self.db and command.get("client_type") != "lua":  # a script's own commands
                    self.commands.append(command["command"])
        except (redis.ConnectionError, OSError, ValueError, AttributeError):  # stop() closed the connection
            return

    def stop(self, about: str | None = None) -> Counter[str]:
        """Stop recording; return the counts by command name, without the PING that marks the end. With
        ``about``, only of the commands whose text holds it (a task id): another task's late write is not counted."""
        self.client.ping()  # recorded after every command sent before it
        wait_until(lambda: "PING" in self.commands, 5, interval=0.05, what="MONITOR to record our PING")
        self._monitor.connection.disconnect()
        self._thread.join(5)
        self.client.close()
        counts = Counter(text.split(" ", 1)[0].upper() for text in self.commands if about is None or about in text)
        counts.pop("PING", None)
        return counts
