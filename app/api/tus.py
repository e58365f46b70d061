"""/api/v1/uploads: resumable uploads by the tus 1.0 protocol (core, creation, expiration, termination, checksum).

A client creates an upload (``POST``, ``Upload-Length``), sends its bytes in pieces
(``PATCH`` at ``Upload-Offset``), asks where it stands after a dropped connection
(``HEAD``) and resumes there; the piece that brings it to its length makes it the
tenant's stored file (``File-Id``). These views only translate the protocol's headers
into :class:`resumable.service.UploadService` calls and its answers into headers;
its refusals are answered through ``app/refusals.py`` like every other. Every answer
under this path carries ``Tus-Resumable`` (:func:`_tus_headers`), a 412 ``Tus-Version`` too.

A PATCH's body is read from the WSGI stream a MiB at a time while it arrives (nginx
passes it on unbuffered, ``proxy/nginx.conf.in``), never whole. HEAD is answered by
the GET route (Flask routes one to the other): the same upload, headers only.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from flask import Response, current_app, jsonify, request, url_for
from pydantic import BaseModel, Field
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import http_date

from app.api import bp
from app.api.schemas import ID_SCHEMA, ErrorBody, RequestParameters, header
from app.auth import UPLOADS_PATH, current_principal, tenant_scope
from app.errors import ApiError
from app.extensions import db_session, get_settings, get_storage
from app.forms import clean_filename
from resumable.service import (
    CHECKSUM_ALGORITHMS,
    Checksum,
    Reader,
    UploadService,
    find_upload,
    stored_file_of,
)
from storage.tables import ResumableUpload, StoredFile

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,expiration,termination,checksum"
PIECE_TYPE = "application/offset+octet-stream"
# The name of an upload whose metadata names none.
UNNAMED_UPLOAD = "upload"
SERVICE_EXTENSION = "yolo_jobs.uploads"

Answer = tuple[Response, int, dict[str, str]]


def upload_service() -> UploadService:
    """The app's one upload service (its running hashes are per process)."""
    service = current_app.extensions.get(SERVICE_EXTENSION)
    if service is None:
        settings = get_settings()
        fresh = UploadService(get_storage(), settings.files, max_pixels=settings.worker.max_image_pixels)
        service = current_app.extensions.setdefault(SERVICE_EXTENSION, fresh)
    return service


# Requests


class UploadPath(BaseModel):
    upload_id: uuid.UUID = Field(
        description="The upload's id (from the creation's `Location`).", json_schema_extra=ID_SCHEMA
    )


class TusHeaders(RequestParameters):
    tus_resumable: str | None = Field(
        None, alias="Tus-Resumable", description=f"The protocol's version, `{TUS_VERSION}` (else 412)."
    )


class CreateHeaders(TusHeaders):
    upload_length: int = Field(
        alias="Upload-Length", ge=0, description="The file's size in bytes (413 past the largest)."
    )
    upload_metadata: str | None = Field(
        None,
        alias="Upload-Metadata",
        description="Comma-separated `key base64(value)` pairs; `filename` names the file, `filetype` is ignored "
        "(the type is sniffed from the bytes). `purpose` `weights` (admin keys only) sends model weights, a .pt or "
        ".onnx file, for `POST /api/v1/models`; without it the file must be an image or a video.",
    )


class PatchHeaders(TusHeaders):
    upload_offset: int = Field(alias="Upload-Offset", ge=0, description="Where this piece starts: the upload's offset.")
    upload_checksum: str | None = Field(
        None,
        alias="Upload-Checksum",
        description="`<algorithm> <base64 digest>` of this piece (md5, sha1 or sha256): on a mismatch (460) none "
        "of its bytes are kept.",
    )


# Responses


class UploadInfo(BaseModel):
    id: uuid.UUID
    file_id: uuid.UUID | None = Field(description="The stored file, once the upload is whole.")
    sha256: str | None = Field(description="The file's SHA-256, once whole.")
    size: int | None = Field(description="The stored file's size, once whole.")
    offset: int = Field(description="Bytes received and kept.")
    length: int = Field(description="Bytes announced (`Upload-Length`).")
    filename: str
    expires_at: datetime | None = Field(description="When the unfinished upload is removed; null once whole.")
    finished_at: datetime | None
    file_url: str | None = Field(description="The stored file's metadata, once whole.")


TUS_RESUMABLE = header("Tus-Resumable", f"`{TUS_VERSION}`.")
OFFSET = header("Upload-Offset", "The bytes the upload holds.", {"type": "integer"})
EXPIRES = header("Upload-Expires", "When the unfinished upload is removed (an HTTP date).")
FILE_ID = header("File-Id", "The stored file the upload became, once whole.", {"type": "string", "format": "uuid"})
CREATED = {
    "description": "Created; send its bytes by PATCH at `Location`.",
    "headers": {**header("Location", "The upload's URL."), **EXPIRES, **TUS_RESUMABLE, **FILE_ID},
}
APPENDED = {
    "description": "The piece is kept; `Upload-Offset` is where the next one starts.",
    "headers": {**OFFSET, **EXPIRES, **TUS_RESUMABLE, **FILE_ID},
}
TERMINATED = {"description": "The upload and its bytes are gone.", "headers": TUS_RESUMABLE}
PRECONDITION_FAILED = {
    "description": "`Tus-Resumable` is missing or not a version this server speaks (`Tus-Version`).",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    "headers": header("Tus-Version", f"`{TUS_VERSION}`."),
}
PIECE_BODY = {"required": True, "content": {PIECE_TYPE: {"schema": {"type": "string", "format": "binary"}}}}


# Views


@bp.post(
    "/uploads",
    responses={
        201: CREATED,
        400: ErrorBody,
        403: ErrorBody,
        412: PRECONDITION_FAILED,
        413: ErrorBody,
        415: ErrorBody,
        507: ErrorBody,
    },
    provide_automatic_options=False,
)
def create_upload(header: CreateHeaders) -> Answer:
    """Create a resumable upload (tus 1.0 Creation).

    The upload will hold `Upload-Length` bytes, named by `Upload-Metadata`; with `purpose` `weights` there, model
    weights for `POST /api/v1/models` (admin keys only), checked to be the .pt or .onnx their name says once
    whole. 400 `invalid_parameter` for another purpose; 403 `forbidden` for weights from another key; 415
    `unsupported_media` for weights named neither .pt nor .onnx;
    413 `too_large` past `MAX_FILE_BYTES`, `larger_than_quota` past the tenant's whole storage quota;
    507 `pending_uploads_quota_exceeded` past `QUOTA_PENDING_UPLOAD_BYTES` in unfinished uploads,
    `storage_quota_exceeded` past `QUOTA_STORAGE_BYTES`, `insufficient_storage` on a full volume.
    """
    _check_version(header)
    metadata = _parse_metadata(header.upload_metadata)
    principal = current_principal()
    named = metadata.get("filename") or metadata.get("name")
    filename = clean_filename(named, 0) if named else UNNAMED_UPLOAD
    upload = upload_service().create(
        db_session(), principal.tenant_id, header.upload_length, metadata, filename, admin=principal.admin
    )
    return Response(status=201), 201, {"Location": url_for("api.show_upload", upload_id=upload.id), **_state(upload)}


@bp.route("/uploads", methods=["OPTIONS"])
def tus_options() -> Response:
    """What this tus server speaks (public: it describes the protocol, not a tenant's data)."""
    response = Response(status=204)
    response.headers.update(
        {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(get_settings().files.max_file_bytes),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        }
    )
    return response


@bp.get("/uploads/<uuid:upload_id>", responses={200: UploadInfo, 404: ErrorBody})
def show_upload(path: UploadPath, header: TusHeaders) -> Response:
    """An upload: its offset and length, and once whole its stored file.

    Once whole it names its stored file: `file_id`, `sha256`, `size`.
    HEAD (tus 1.0) answers the same upload in headers only: `Upload-Offset`, `Upload-Length`,
    `Upload-Metadata`, `Upload-Expires` while unfinished, and `File-Id` once whole.
    """
    session = db_session()
    upload = find_upload(session, path.upload_id, tenant_scope())
    if request.method == "HEAD":
        _check_version(header)
        response = Response(status=200)
        response.headers.update({"Upload-Length": str(upload.length), **_state(upload)})
        if upload.metadata_:
            response.headers["Upload-Metadata"] = _format_metadata(upload.metadata_)
    else:
        response = jsonify(_upload_json(upload, stored_file_of(session, upload)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.patch(
    "/uploads/<uuid:upload_id>",
    responses={
        204: APPENDED,
        404: ErrorBody,
        409: ErrorBody,
        412: PRECONDITION_FAILED,
        413: ErrorBody,
        415: ErrorBody,
        423: ErrorBody,
        460: ErrorBody,
        507: ErrorBody,
    },
    openapi_extensions={"requestBody": PIECE_BODY},
)
def append_to_upload(path: UploadPath, header: PatchHeaders) -> Answer:
    """Send a piece of the upload's bytes, at its offset (tus 1.0 core).

    The piece starts at `Upload-Offset` and is sent as `Content-Type: application/offset+octet-stream`.
    409 `offset_mismatch` (ask HEAD, resume there), `exceeds_length`, `upload_complete`;
    415 `unsupported_media_type` (a piece of another type), `unsupported_media` (the last piece made a file
    that is neither an image nor a video, nor weights it declared); 413 `image_too_large`; 423 `upload_busy`
    (another request is sending to it; nothing was written); 460 `checksum_mismatch` (none of the piece was
    kept); 507 `insufficient_storage` (a full volume: what was kept is `Upload-Offset` by HEAD, resume there
    once there is room).
    The piece that brings the upload to its length makes it the tenant's stored file: `File-Id`.
    """
    _check_version(header)
    if request.mimetype != PIECE_TYPE:
        raise ApiError(415, "unsupported_media_type", f"A piece is sent as Content-Type: {PIECE_TYPE}.")
    checksum = _parse_checksum(header.upload_checksum)
    request.max_content_length = get_settings().files.max_file_bytes
    upload = upload_service().append(
        path.upload_id, tenant_scope(), header.upload_offset, request.content_length, _body_reader(), checksum
    )
    return Response(status=204), 204, _state(upload)


@bp.delete(
    "/uploads/<uuid:upload_id>", responses={204: TERMINATED, 404: ErrorBody, 412: PRECONDITION_FAILED, 423: ErrorBody}
)
def terminate_upload(path: UploadPath, header: TusHeaders) -> Answer:
    """Remove an upload and its bytes (tus 1.0 Termination).

    A finished upload's stored file stays: `DELETE /api/v1/files/{file_id}` removes it.
    """
    _check_version(header)
    upload_service().terminate(path.upload_id, tenant_scope())
    return Response(status=204), 204, {}


@bp.after_request
def _tus_headers(response: Response) -> Response:
    """Every answer under /api/v1/uploads says the protocol's version; a 412 says which this server speaks."""
    if request.path == UPLOADS_PATH or request.path.startswith(f"{UPLOADS_PATH}/"):
        response.headers["Tus-Resumable"] = TUS_VERSION
        if response.status_code == 412:
            response.headers["Tus-Version"] = TUS_VERSION
    return response


# Translation


def _check_version(header: TusHeaders) -> None:
    if header.tus_resumable != TUS_VERSION:
        raise ApiError(
            412, "unsupported_version", f"Send Tus-Resumable: {TUS_VERSION}, the version this server speaks."
        )


def _state(upload: ResumableUpload) -> dict[str, str]:
    """The headers that say where an upload stands: its offset, and its expiry or its stored file."""
    headers = {"Upload-Offset": str(upload.received)}
    if upload.file_id is not None:
        headers["File-Id"] = str(upload.file_id)
    else:
        headers["Upload-Expires"] = http_date(upload.expires_at)
    return headers


def _parse_metadata(raw: str | None) -> dict[str, str]:
    """``Upload-Metadata``: ``key base64value`` pairs, comma-separated; a key may come without a value."""
    metadata: dict[str, str] = {}
    for pair in (raw or "").split(","):
        if not pair.strip():
            continue
        key, _, encoded = pair.strip().partition(" ")
        try:
            metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ApiError(
                400, "invalid_parameter", f"Upload-Metadata: the value of {key[:40]!r} is not base64 UTF-8."
            ) from exc
        if "\x00" in key or "\x00" in metadata[key]:  # PostgreSQL's text and jsonb hold no NUL
            raise ApiError(400, "invalid_parameter", "Upload-Metadata: a key or value holds a NUL character.")
    return metadata


def _format_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}".rstrip() for key, value in metadata.items())


def _parse_checksum(raw: str | None) -> Checksum | None:
    if raw is None:
        return None
    algorithm, _, encoded = raw.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        supported = ", ".join(CHECKSUM_ALGORITHMS)
        raise ApiError(400, "unsupported_checksum", f"Upload-Checksum: the algorithm is one of {supported}.")
    try:
        return Checksum(algorithm, base64.b64decode(encoded.strip(), validate=True))
    except binascii.Error as exc:
        raise ApiError(400, "invalid_parameter", "Upload-Checksum: the digest is not base64.") from exc


def _body_reader() -> Reader:
    """The request body, read as it arrives; ``b""`` once it ended, or once the client went away (what came
    before then is kept)."""
    stream = request.stream

    def read(size: int) -> bytes:
        try:
            return stream.read(size)
        except (ClientDisconnected, OSError):  # OSError: gunicorn's NoMoreData, a socket timeout
            return b""

    return read


def _upload_json(upload: ResumableUpload, file: StoredFile | None) -> dict[str, Any]:
    finished = upload.finished_at
    return {
        "id": str(upload.id),
        "file_id": str(upload.file_id) if upload.file_id is not None else None,
        "sha256": file.sha256 if file is not None else None,
        "size": file.size if file is not None else None,
        "offset": upload.received,
        "length": upload.length,
        "filename": upload.filename,
        "expires_at": None if finished is not None else upload.expires_at.isoformat(),
        "finished_at": finished.isoformat() if finished is not None else None,
        "file_url": url_for("api.show_file", file_id=upload.file_id) if upload.file_id is not None else None,
    }
