"""Malformed HTTP sent straight to gunicorn, as raw bytes over a socket: every answer is a 4xx, never a 500.

nginx stands in front in production and refuses most of this itself (``test_hardening_proxy.py``),
but the API must hold without it. A request whose headers are fine and whose body is not only
fails while the app reads the body, inside gunicorn's reader: a chunk size that is not hex, a
chunk without its CRLF, a bare CR in a chunk extension, a trailer that is not a header (each a
gunicorn ``ParseException``), a body that ends early (an ``OSError``, which Werkzeug answers
itself). Each is a 400: the API's JSON under /api, an error page on the web form. Then
gunicorn closes the connection: where a next request would start is unknown, so a request
sent behind the bad body is never served.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.functional.hardening_support import assert_json_error, raw_exchange
from tests.helpers import TestKey

MULTIPART = "multipart/form-data; boundary=b"
PART = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'

# Chunked bodies gunicorn refuses as it reads them, by the error it raises.
BAD_CHUNKED_BODIES = {
    "InvalidChunkSize": b"ZZZ\r\n" + PART + b"\r\n0\r\n\r\n",
    "InvalidChunkSize-empty": b"\r\n" + PART + b"\r\n0\r\n\r\n",
    "ChunkMissingTerminator": b"%x\r\n" % len(PART) + PART + b"XX0\r\n\r\n",
    "InvalidChunkExtension": b"%x;a=\rb\r\n" % len(PART) + PART + b"\r\n0\r\n\r\n",
    "InvalidHeaderName-trailer": b"%x\r\n" % len(PART) + PART + b"\r\n0\r\nno colon here\r\n\r\n",
}


def exchange(api_url: str, data: bytes, half_close: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is (then end the sending side when ``half_close``); return the whole answer."""
    address = urlsplit(api_url)
    assert address.hostname and address.port
    return raw_exchange(address.hostname, address.port, data, half_close)


def chunked_post(path: str, body: bytes, headers: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: {MULTIPART}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head.encode() + body


@pytest.mark.parametrize("body", BAD_CHUNKED_BODIES.values(), ids=BAD_CHUNKED_BODIES.keys())
def test_a_malformed_chunked_upload_is_400_json(api_url: str, api_key: TestKey, body: bytes) -> None:
    request = chunked_post("/api/v1/jobs", body, f"Authorization: Bearer {api_key.key}\r\n")
    status, headers, answer = exchange(api_url, request + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert headers["content-type"] == "application/json", answer
    assert len(answer) == int(headers["content-length"]), "the request behind the bad body was answered"
    assert_json_error(status, json.loads(answer), 400, "bad_request")


def test_a_chunked_upload_cut_short_is_400_json(api_url: str, api_key: TestKey) -> None:
    """The client stops sending in the middle of a chunk but still reads the answer."""
    request = chunked_post("/api/v1/jobs", b"%x\r\n" % 1000 + PART, f"Authorization: Bearer {api_key.key}\r\n")
    status, headers, answer = exchange(api_url, request, half_close=True)
    assert headers["content-type"] == "application/json", answer
    assert_json_error(status, json.loads(answer), 400, "bad_request")


def test_a_malformed_chunked_sign_in_is_a_400_page(api_url: str) -> None:
    """The web form's CSRF check reads the body first: the error is a page, as every web error is."""
    status, headers, answer = exchange(api_url, chunked_post("/sign-in", BAD_CHUNKED_BODIES["InvalidChunkSize"]))
    assert status == 400 and headers["content-type"].startswith("text/html"), answer
    assert b"<h1>" in answer
