"""Signed file URLs: a stored file's bytes for whoever holds the URL, until it expires, with no API key.

Label Studio (like any tool that loads images by URL into a browser) cannot send a Bearer key, so an export
names each image by a URL that carries its own proof, as an S3 presigned URL does: the expiry (a Unix time)
and an HMAC-SHA256 over the tenant, the file and the expiry. Nothing is stored: the signature is checked
against the key, and a URL stops working at its expiry, when its tenant no longer holds the file, or when
SECRET_KEY changes.

The tenant is signed with the file because storage is shared: the same bytes uploaded by two tenants are one
stored file. A URL one tenant handed out must stop when that tenant deletes its file, whoever else holds the
same bytes, and never serve them under another tenant's name.

The key is not SECRET_KEY itself but derived from it for this one use (an HMAC of a fixed label), so a
signature made here never passes for a session cookie's or a CSRF token's, nor theirs for one of these.
Signatures are compared in constant time, and the signature is checked before the expiry, so "expired" is
said only of a URL this server made.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass

from files.errors import FileRefused

# What the key derived from SECRET_KEY is for: changing it voids every URL signed before.
KEY_LABEL = b"yolo-jobs signed file URL v1"


class BadSignature(FileRefused):
    """A signed URL whose signature does not match its tenant, file and expiry."""

    def __init__(self) -> None:
        super().__init__("This URL's signature does not match its file and expiry.")


class SignedUrlExpired(FileRefused):
    """A signed URL past its expiry."""

    def __init__(self, expires: int) -> None:
        super().__init__(f"This URL expired at {expires} (Unix time); export the job again for a new one.")
        self.expires = expires


@dataclass(frozen=True)
class SignedFile:
    """A file of a tenant, until ``expires`` (Unix seconds), and the signature that vouches for the three."""

    tenant_id: uuid.UUID
    file_id: uuid.UUID
    expires: int
    signature: str


class FileSigner:
    """Signs and checks :class:`SignedFile` with a key derived from ``secret_key``."""

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), KEY_LABEL, hashlib.sha256).digest()

    def _signature(self, tenant_id: uuid.UUID, file_id: uuid.UUID, expires: int) -> str:
        message = f"{tenant_id}\n{file_id}\n{expires}".encode()  # UUIDs in their one canonical spelling
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, tenant_id: uuid.UUID, file_id: uuid.UUID, expires: int) -> SignedFile:
        return SignedFile(tenant_id, file_id, expires, self._signature(tenant_id, file_id, expires))

    def verify(self, signed: SignedFile, now: float | None = None) -> None:
        """Return if ``signed`` is this key's and not expired at ``now`` (default: the present); else raise
        :class:`BadSignature` or :class:`SignedUrlExpired`."""
        expected = self._signature(signed.tenant_id, signed.file_id, signed.expires)
        if not hmac.compare_digest(expected.encode(), signed.signature.encode()):
            raise BadSignature
        if (time.time() if now is None else now) >= signed.expires:
            raise SignedUrlExpired(signed.expires)


def expiry(seconds: int, now: float | None = None) -> int:
    """The Unix time ``seconds`` from ``now`` (default: the present), in whole seconds."""
    return int(time.time() if now is None else now) + seconds
