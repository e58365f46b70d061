"""The tables as SQLAlchemy classes, mirroring ``schema.sql`` (the schema file is the source of truth).

Every relationship is ``lazy="raise"``: a query says what it loads (``selectinload``,
``joinedload``), and code that reaches for something not loaded fails in the tests
instead of issuing a query nobody planned, or failing on a closed session.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CHAR,
    REAL,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# A job's statuses (the CHECK in schema.sql); the last three are terminal.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


class Base(DeclarativeBase):
    """Declarative base of every yolo-jobs table."""


def _now_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Tenant(Base):
    """An owner of jobs."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    created_at: Mapped[datetime] = _now_column()


class ApiKey(Base):
    """A tenant's API key, stored as the SHA-256 of the key; ``prefix`` names it."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    prefix: Mapped[str] = mapped_column(CHAR(8), nullable=False, unique=True)
    secret_hash: Mapped[str] = mapped_column(CHAR(64), nullable=False)
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    label: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _now_column()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StoredFile(Base):
    """Bytes on the shared volume, addressed by their SHA-256."""

    __tablename__ = "stored_files"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    sha256: Mapped[str] = mapped_column(CHAR(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    content_type: Mapped[str] = mapped_column(Text, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now_column()
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Job(Base):
    """One detection request over one or more uploads."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="queued")
    model: Mapped[str] = mapped_column(Text, nullable=False)
    conf: Mapped[float] = mapped_column(REAL, nullable=False)
    iou: Mapped[float] = mapped_column(REAL, nullable=False)
    imgsz: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_files: Mapped[int] = mapped_column(Integer, nullable=False)
    done_files: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error_code: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _now_column()
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    task_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)

    uploads: Mapped[list[Upload]] = relationship(
        back_populates="job",
        order_by="Upload.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
    )

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Upload(Base):
    """A file as uploaded to a job: original name, order, and the stored bytes it points at."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stored_files.id"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    filename: Mapped[str] = mapped_column(Text, nullable=False)
    deduplicated: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = _now_column()

    job: Mapped[Job] = relationship(back_populates="uploads", lazy="raise")
    file: Mapped[StoredFile] = relationship(lazy="raise")
    result: Mapped[Result | None] = relationship(back_populates="upload", passive_deletes=True, lazy="raise")


class Result(Base):
    """What inference found in one upload (at most one row per upload)."""

    __tablename__ = "results"

    upload_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detections: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default="[]")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _now_column()

    upload: Mapped[Upload] = relationship(back_populates="result", lazy="raise")


class ModelRecord(Base):
    """A named model as a worker loaded it: its weights, their digest and the classes it detects."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    weights: Mapped[str] = mapped_column(Text, nullable=False)
    weights_sha256: Mapped[str | None] = mapped_column(CHAR(64), nullable=True)
    task: Mapped[str] = mapped_column(Text, nullable=False)
    classes: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False)
    loaded_at: Mapped[datetime] = _now_column()
    stride: Mapped[int | None] = mapped_column(Integer, nullable=True)
    imgsz: Mapped[int | None] = mapped_column(Integer, nullable=True)


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` of a job submission: the request's fingerprint, then its job and response."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(CHAR(64), nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    locked_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = _now_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
