"""What the hardening tests share: images of any size made cheaply, JSON errors, /proc, a patient gunicorn start.

Used by ``test_hardening.py``, ``test_hardening_memory.py`` and ``test_hardening_proxy.py``.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

MB = 1_000_000


def assert_json_error(status: int, body: Any, expected_status: int, code: str) -> None:
    """``body`` is the API's error JSON with ``code``, under ``expected_status``."""
    assert status == expected_status, body
    assert isinstance(body, dict) and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour RGB PNG of any size, compressed row by row (the image is never in memory whole)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def noise_png(width: int, height: int) -> bytes:
    """A PNG of random pixels: it does not compress, so it is as large as its pixels."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM…) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def raw_exchange(host: str, port: int, data: bytes, half_close: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is (then end the sending side when ``half_close``); return the status, headers
    (lower-case names) and body of the answer, read until the server closes."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body
