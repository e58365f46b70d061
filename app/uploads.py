"""Stream uploaded files straight to the storage volume while hashing them.

Werkzeug's form parser asks the request for a stream per file part; this
request class hands it an :class:`storage.blobs.IncomingFile` on the volume, so
no upload is held in memory. Whatever a request leaves behind (a rejected file,
a body cut off at the size limit) is removed when the request ends.
"""

from __future__ import annotations

from typing import IO

from flask import Flask, Request, current_app, request

from storage.blobs import IncomingFile


class UploadRequest(Request):
    """A request whose file parts are written to temp files on the storage volume."""

    @property
    def incoming_files(self) -> list[IncomingFile]:
        return self.environ.setdefault("yolo_jobs.incoming", [])

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        incoming = current_app.extensions["yolo_storage"].blobs.new_incoming()
        self.incoming_files.append(incoming)
        return incoming  # type: ignore[return-value]


def _discard_leftovers(_exc: BaseException | None = None) -> None:
    for incoming in request.environ.get("yolo_jobs.incoming", ()):
        incoming.discard()


def init_app(app: Flask) -> None:
    app.request_class = UploadRequest
    app.config.setdefault("MAX_FORM_MEMORY_SIZE", 64 * 1024)
    app.teardown_request(_discard_leftovers)
