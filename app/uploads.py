"""Stream uploaded files straight to the storage volume while hashing them.

Werkzeug's form parser asks the request for a stream per file part; this
request class hands it an :class:`storage.blobs.IncomingFile` on the volume, so
no upload is held in memory. Whatever a request leaves behind (a rejected file,
a body cut off at the size limit, a temp file on a full volume) is removed when the
request ends.

Plain form fields (``conf``, ``model``…) are read into memory, so each is capped by
Flask's ``MAX_FORM_MEMORY_SIZE`` (a larger one is 413 ``too_large``). Flask 3.1
defines that key with its own default (500 kB), so it is assigned here, not
``setdefault``. Werkzeug's multipart decoder applies the same limit to its read
buffer, file parts included: one read of :data:`PARSER_READ_BYTES` plus what is
left of the previous one (a part's headers cut by the read). At exactly 64 KiB
some file uploads got 413, so the limit is 80 KiB: a 64 KiB read and 16 KiB of part
headers; a plain field may be that long too.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import IO, cast

from flask import Flask, Request, request

from app.extensions import get_storage
from app.forms import MAX_FILES_PER_JOB
from config import Settings
from storage.blobs import IncomingFile

log = logging.getLogger(__name__)

# Werkzeug's MultiPartParser reads the body 64 KiB at a time (its ``buffer_size``).
PARSER_READ_BYTES = 64 * 1024
# The largest plain (non-file) form field read into memory, and Werkzeug's buffer limit: a
# read, plus a part's headers (a long filename) left over from the previous one.
MAX_FORM_MEMORY_SIZE = PARSER_READ_BYTES + 16 * 1024
# The plain fields a submission may carry besides its files (model, conf, iou, imgsz, callback_url, room to spare).
FORM_FIELDS = 16
# How much of the body is read from the WSGI server at once (gunicorn's largest recv()).
READ_AHEAD_BYTES = 1024 * 1024


class _ReadAhead(io.BufferedReader):
    """Reads the request body ahead in large pieces; closing it leaves the request's own stream open."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # already detached
            self.detach()


class UploadRequest(Request):
    """A request whose file parts are written to temp files on the storage volume."""

    @property
    def incoming_files(self) -> list[IncomingFile]:
        return self.environ.setdefault("yolo_jobs.incoming", [])

    def _get_stream_for_parsing(self) -> IO[bytes]:
        stream = super()._get_stream_for_parsing()
        if not isinstance(stream, io.RawIOBase):  # a body Flask already read whole (get_data)
            return stream
        return _ReadAhead(stream, READ_AHEAD_BYTES)

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        incoming = get_storage().blobs.new_incoming()
        self.incoming_files.append(incoming)
        return cast(IO[bytes], incoming)


def _discard_leftovers(_exc: BaseException | None = None) -> None:
    """Remove the request's temp files; never raise, so the response already built is still sent."""
    for incoming in request.environ.get("yolo_jobs.incoming", ()):
        try:
            incoming.discard()
        except OSError:
            log.warning("could not remove upload temp file %s", incoming.path, exc_info=True)


def init_app(app: Flask, settings: Settings) -> None:
    app.request_class = UploadRequest
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_MEMORY_SIZE
    # Werkzeug refuses a form of more parts (413) than this: every image and stored file one job may hold,
    # and the parameters.
    app.config["MAX_FORM_PARTS"] = MAX_FILES_PER_JOB + settings.files.max_job_files + FORM_FIELDS
    app.teardown_request(_discard_leftovers)
