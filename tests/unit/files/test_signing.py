"""Signed file URLs' signatures: good until their expiry, and for nothing but the tenant, file and expiry signed."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import replace

import pytest

from files.signing import BadSignature, FileSigner, SignedFile, SignedUrlExpired, expiry

SECRET = "a-secret-key"
TENANT, OTHER_TENANT = uuid.uuid4(), uuid.uuid4()
FILE, OTHER_FILE = uuid.uuid4(), uuid.uuid4()
NOW = 1_800_000_000


@pytest.fixture()
def signed() -> SignedFile:
    return FileSigner(SECRET).sign(TENANT, FILE, NOW + 60)


def test_a_signature_is_good_until_its_expiry(signed: SignedFile) -> None:
    signer = FileSigner(SECRET)
    assert len(signed.signature) == 64 and int(signed.signature, 16) >= 0, "HMAC-SHA256 in hex"
    signer.verify(signed, now=NOW)
    signer.verify(signed, now=NOW + 59.9)
    with pytest.raises(SignedUrlExpired, match=str(NOW + 60)):
        signer.verify(signed, now=NOW + 60)
    assert FileSigner(SECRET).sign(TENANT, FILE, NOW + 60) == signed, "the same key signs the same way: no state"


@pytest.mark.parametrize(
    "changed",
    [
        {"tenant_id": OTHER_TENANT},
        {"file_id": OTHER_FILE},
        {"expires": NOW + 61},
        {"signature": "0" * 64},
        {"signature": ""},
        {"signature": "é" * 64},  # not ASCII: refused, not a TypeError of compare_digest
    ],
)
def test_a_changed_tenant_file_expiry_or_signature_is_refused(signed: SignedFile, changed: dict[str, object]) -> None:
    with pytest.raises(BadSignature):
        FileSigner(SECRET).verify(replace(signed, **changed), now=NOW)


def test_the_signature_is_checked_before_the_expiry(signed: SignedFile) -> None:
    """A tampered URL past its expiry is a bad signature: "expired" is said only of URLs the server made."""
    with pytest.raises(BadSignature):
        FileSigner(SECRET).verify(replace(signed, expires=NOW - 1), now=NOW)


def test_another_secret_key_voids_every_signature(signed: SignedFile) -> None:
    with pytest.raises(BadSignature):
        FileSigner("another-secret-key").verify(signed, now=NOW)


def test_the_key_is_derived_for_this_use_alone(signed: SignedFile) -> None:
    """Neither SECRET_KEY itself nor a signature it makes directly (as the session's and CSRF's signers use it)
    signs a file URL."""
    message = f"{TENANT}\n{FILE}\n{NOW + 60}".encode()
    direct = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert direct != signed.signature
    with pytest.raises(BadSignature):
        FileSigner(SECRET).verify(replace(signed, signature=direct), now=NOW)


def test_expiry_is_whole_seconds_from_now() -> None:
    assert expiry(604800, now=NOW + 0.9) == NOW + 604800
