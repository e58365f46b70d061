"""/api/v1/files: stored file metadata and content."""

from __future__ import annotations

import mimetypes

from flask import Response, jsonify, send_file
from werkzeug.utils import secure_filename

from app.api import bp
from app.api.jobs import parse_uuid
from app.errors import ApiError
from app.serializers import file_json
from app.store import get_storage
from storage.files import get_file, original_filename
from storage.models import StoredFile


def _stored_file(file_id: str) -> tuple[StoredFile, str | None]:
    with get_storage().session() as session:
        file = get_file(session, parse_uuid(file_id, "file"))
        if file is None:
            raise ApiError(404, "not_found", "No file with this id.")
        return file, original_filename(session, file.id)


def download_name(filename: str | None, file: StoredFile) -> str:
    """A safe attachment name: the sanitised original name with the extension of the sniffed type."""
    extension = mimetypes.guess_extension(file.content_type) or ""
    stem = secure_filename((filename or "").rsplit(".", 1)[0]) or file.sha256[:16]
    return f"{stem}{extension}"


@bp.get("/files/<file_id>")
def get_file_metadata(file_id: str) -> Response:
    file, filename = _stored_file(file_id)
    return jsonify({**file_json(file), "filename": filename})


@bp.get("/files/<file_id>/content")
def file_content(file_id: str) -> Response:
    file, filename = _stored_file(file_id)
    if file.deleted_at is not None:
        raise ApiError(410, "gone", "This file's bytes were deleted by the retention policy.")
    storage = get_storage()
    if not storage.blobs.exists(file.path):
        raise ApiError(410, "gone", "This file's bytes are no longer on the storage volume.")
    return send_file(
        storage.blobs.path_of(file.path),
        mimetype=file.content_type,
        as_attachment=True,
        download_name=download_name(filename, file),
    )
