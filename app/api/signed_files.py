"""/api/v1/signed-files/<file_id>: a stored file's bytes with no API key, for whoever holds a signed URL of it.

An export names each image by a URL a labelling tool can load (Label Studio's ``data.image``): signed and
expiring (:mod:`files.signing`; ``SIGNED_URL_SECONDS``, 7 days by default), or ``EXPORT_IMAGE_URL_BASE``
followed by the file's name, where the user keeps a copy of the images. The route is open
(``app.auth.OPEN_ENDPOINTS``): the signature is its credential, checked before any database read, so a forged
URL costs an HMAC and nothing else; the proxy's per-address limits hold for it as for every request. It
answers as the authenticated content route does, headers and all (``app.api.files.send_held``), with
``Access-Control-Allow-Origin: *`` besides, for a tool that loads images with CORS (Label Studio's
``crossOrigin="anonymous"``): the URL carries the credential, never a cookie.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import quote

from flask import Response, current_app, url_for

from app.api import bp
from app.api.files import CONTENT, held_file, send_held
from app.api.schemas import ErrorBody, FilePath, SignedFileQuery
from app.extensions import get_settings
from files.signing import FileSigner, SignedFile, expiry


def export_image_urls(tenant_id: uuid.UUID | None) -> Callable[[str, str], str]:
    """Where a tool fetches an export's image, by its file id and name: ``EXPORT_IMAGE_URL_BASE/<name>`` when
    that is set, else a signed URL of the tenant's file, all of one export expiring together. A job made before
    tenants existed (``tenant_id`` None) has no tenant to sign for: its images keep the content URL, which needs
    a key."""
    settings = get_settings().files
    if settings.export_image_url_base:
        base = settings.export_image_url_base.rstrip("/")
        return lambda file_id, filename: f"{base}/{quote(filename, safe='')}"
    if tenant_id is None:
        return lambda file_id, filename: url_for("api.file_content", file_id=file_id, _external=True)
    signer, expires = FileSigner(current_app.secret_key), expiry(settings.signed_url_seconds)

    def signed_url(file_id: str, filename: str) -> str:
        signed = signer.sign(tenant_id, uuid.UUID(file_id), expires)
        query = {"tenant": signed.tenant_id, "expires": signed.expires, "signature": signed.signature}
        return url_for("api.signed_file_content", file_id=signed.file_id, _external=True, **query)

    return signed_url


@bp.get(
    "/signed-files/<uuid:file_id>",
    security=[{}],
    responses={200: CONTENT, 403: ErrorBody, 404: ErrorBody, 410: ErrorBody},
)
def signed_file_content(path: FilePath, query: SignedFileQuery) -> Response:
    """A stored file's bytes for whoever holds a signed URL of it, such as an export's image URL, with no API key.

    403 for a URL past its expiry, or whose signature does not match its tenant, file and expiry; 404 once the
    tenant no longer holds the file; 410 gone after retention deleted its bytes."""
    signed = SignedFile(query.tenant, path.file_id, query.expires, query.signature)
    FileSigner(current_app.secret_key).verify(signed)  # refused: 403 (app.refusals)
    response = send_held(held_file(signed.file_id, signed.tenant_id))
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
