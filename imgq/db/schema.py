"""The tables of imgq as SQLAlchemy 2 typed models.

``docs/schema.md`` describes them for people who query with SQL directly.
The migrations in ``migrations/versions`` create exactly these tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only makes INTEGER PRIMARY KEY an auto-incrementing row id.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelVersion(Base):
    """A trained model registered for inference; its id is its version number."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(50))
    path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    class_names: Mapped[list[Any]] = mapped_column(JSON)
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    imgq_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class ModelAlias(Base):
    """A name such as ``production`` that points at one model version."""

    __tablename__ = "model_aliases"

    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Job(Base):
    """One submission (or re-inference run) of images to one model version."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="submit")
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    source: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(20), default="submitting")
    queue: Mapped[str] = mapped_column(String(100), default="")
    total_images: Mapped[int] = mapped_column(Integer, default=0)
    queued_images: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Image(Base):
    """One distinct image content; the same bytes submitted twice are one image."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    true_label: Mapped[str | None] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class JobImage(Base):
    """Membership of an image in a job."""

    __tablename__ = "job_images"
    __table_args__ = (Index("ix_job_images_image", "image_id"),)

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), primary_key=True)
    # whether the job's tallies count this image's answer (imgq.db.predictions)
    tallied: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )


class Batch(Base):
    """One queue message: a chunk of image ids of a job, and its deliveries."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_job", "job_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    image_count: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20), default="queued")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Prediction(Base):
    """The answer of one model version for one image; at most one such row."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint(
            "image_id", "model_version_id", name="uq_prediction_image_model"
        ),
        Index("ix_predictions_model_confidence", "model_version_id", "confidence"),
        Index(
            "ix_predictions_model_label_confidence",
            "model_version_id",
            "label",
            "confidence",
        ),
        Index("ix_predictions_job", "job_id"),
        Index("ix_predictions_created", "created_at"),
        # the wrong answers only, in confidence order: worst wrong first
        Index(
            "ix_predictions_wrong_confidence",
            "model_version_id",
            "confidence",
            postgresql_where=text("label <> true_label"),
            sqlite_where=text("label <> true_label"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL")
    )
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    label: Mapped[str] = mapped_column(String(200))
    # the image's true label, kept in step by imgq.db.predictions
    true_label: Mapped[str | None] = mapped_column(String(200))
    label_index: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[list[Any]] = mapped_column(JSON)
    batch_images: Mapped[int] = mapped_column(Integer, default=0)
    decode_ms: Mapped[float] = mapped_column(Float, default=0.0)
    predict_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class LabelTally(Base):
    """How many answers of a version have this predicted and this true label."""

    __tablename__ = "label_tallies"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(200), primary_key=True)
    # '' where the true label is unknown: a key column cannot be null
    true_label: Mapped[str] = mapped_column(String(200), primary_key=True)
    images: Mapped[int] = mapped_column(BigInteger)


class ConfidenceTally(Base):
    """How many answers of a version have a confidence in this 1/1000 bucket."""

    __tablename__ = "confidence_tallies"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id"), primary_key=True
    )
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    images: Mapped[int] = mapped_column(BigInteger)
    confidence_sum: Mapped[float] = mapped_column(Float)


class JobLabelTally(Base):
    """How many results of a job have this predicted and this true label."""

    __tablename__ = "job_label_tallies"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(200), primary_key=True)
    true_label: Mapped[str] = mapped_column(String(200), primary_key=True)
    images: Mapped[int] = mapped_column(BigInteger)


class JobConfidenceTally(Base):
    """How many results of a job have a confidence in this 1/1000 bucket."""

    __tablename__ = "job_confidence_tallies"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    images: Mapped[int] = mapped_column(BigInteger)
    confidence_sum: Mapped[float] = mapped_column(Float)


class Failure(Base):
    """Why an image (or a submitted path) got no prediction in a job."""

    __tablename__ = "failures"
    __table_args__ = (
        UniqueConstraint("job_id", "image_id", name="uq_failure_job_image"),
        Index("ix_failures_job_kind", "job_id", "kind"),
        Index("ix_failures_image", "image_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id")
    )
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(50))
    message: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class Report(Base):
    """A rendered review report: what it covered and where its HTML page lies."""

    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL")
    )
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(Text)
