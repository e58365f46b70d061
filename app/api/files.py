"""/api/v1/files: stored file metadata and content, of the files the tenant holds (``files.ownership``)."""

from __future__ import annotations

import mimetypes
import uuid

from flask import Response, jsonify, send_file
from werkzeug.utils import secure_filename

from app.api import bp
from app.api.schemas import IMAGE_TYPES, ErrorBody, FileInfo, FilePath, binary, header
from app.auth import tenant_scope
from app.errors import ApiError
from app.extensions import db_session, get_storage
from app.serializers import file_json
from files.ownership import HeldFile
from jobs.queries import find_file
from storage.media import CONTENT_TYPES as VIDEO_TYPES
from storage.tables import StoredFile


def held_file(file_id: uuid.UUID, tenant_id: uuid.UUID | None) -> HeldFile:
    """The file as the tenant holds it (its own name, since when; any tenant's for None, an admin); 404 for a file
    it does not hold."""
    found = find_file(db_session(), file_id, tenant_id)
    if found is None:
        raise ApiError(404, "not_found", "No file with this id.")
    return found


def download_name(filename: str | None, file: StoredFile) -> str:
    """A safe attachment name: the sanitised original name with the extension of the sniffed type."""
    extension = mimetypes.guess_extension(file.content_type) or ""
    stem = secure_filename((filename or "").rsplit(".", 1)[0]) or file.sha256[:16]
    return f"{stem}{extension}"


@bp.get("/files/<uuid:file_id>", responses={200: FileInfo, 404: ErrorBody})
def show_file(path: FilePath) -> Response:
    """A stored file's metadata: SHA-256, size, sniffed type, width and height (a video's as it is shown)."""
    held = held_file(path.file_id, tenant_scope())
    return jsonify({**file_json(held), "filename": held.filename})


CONTENT = binary(
    "The bytes, as an attachment, typed by their sniffed type: an image's, or a video's container's "
    "(`video/x-<name>` for a container not listed; `application/octet-stream`: neither, uploaded weights "
    "or stored by an older release).",
    *IMAGE_TYPES,
    *VIDEO_TYPES.values(),
    "application/octet-stream",
    headers=header("Content-Disposition", "`attachment` with a sanitised file name."),
)


@bp.get("/files/<uuid:file_id>/content", responses={200: CONTENT, 404: ErrorBody, 410: ErrorBody})
def file_content(path: FilePath) -> Response:
    """A stored file's bytes, as an attachment under the name the tenant gave it.

    410 `gone` after retention deleted them.
    """
    return send_held(held_file(path.file_id, tenant_scope()))


def send_held(held: HeldFile) -> Response:
    """The bytes of a file the tenant holds as an attachment under the tenant's own name (:data:`CONTENT`), or
    410 `gone` once retention deleted them."""
    file, filename = held.file, held.filename
    if file.deleted_at is not None:
        raise ApiError(410, "gone", "This file's bytes were deleted by the retention policy.")
    blobs = get_storage().blobs
    if not blobs.exists(file.path):
        raise ApiError(410, "gone", "This file's bytes are no longer on the storage volume.")
    return send_file(
        blobs.path_of(file.path),
        mimetype=file.content_type,
        as_attachment=True,
        download_name=download_name(filename, file),
    )
