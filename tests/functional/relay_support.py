"""A TCP relay in front of the API, for the client's resumable-upload tests: it counts the bytes clients send
(what a resume really put on the wire), can slow them down (so a test can kill a client half-way through a
file), and can cut the connection that carries a given byte (a dropped connection, as a network drops it)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

BUFFER = 64 * 1024


@dataclass
class Relay:
    """Relays ``upstream`` (a base URL) from a local port; ``rate`` caps client bytes per second, ``cut_at``
    closes, once, the connection whose client bytes reach that total."""

    upstream: str
    rate: float | None = None
    cut_at: int | None = None
    sent: int = 0  # bytes clients sent, over every connection
    cuts: int = 0
    open_connections: int = 0  # a killed client's last bytes still come through until its connection ends
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = field(default_factory=time.monotonic)
    _listener: socket.socket | None = None

    def __enter__(self) -> str:
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __exit__(self, *exc_info: object) -> None:
        assert self._listener is not None
        self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        parts = urlsplit(self.upstream)
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: the test is over
                return
            server = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80))
            with self._lock:
                self.open_connections += 1
            threading.Thread(target=self._upload, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _count(self, size: int) -> bool:
        """Count ``size`` client bytes; whether this connection is to be cut here."""
        with self._lock:
            self.sent += size
            if self.cut_at is not None and self.cuts == 0 and self.sent >= self.cut_at:
                self.cuts += 1
                return True
            return False

    def _upload(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(BUFFER):
                if self._count(len(data)):
                    break  # dropped mid-request: neither side hears a word more
                server.sendall(data)
                if self.rate is not None:
                    time.sleep(max(self.sent / self.rate - (time.monotonic() - self._started), 0.0))
        except OSError:
            pass
        finally:
            for end in (client, server):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            with self._lock:
                self.open_connections -= 1

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
