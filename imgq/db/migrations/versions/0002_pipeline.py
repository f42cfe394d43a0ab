"""Jobs, images, batches, predictions and failures.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column(
            "model_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id"),
            nullable=False,
        ),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("total_images", sa.Integer(), nullable=False),
        sa.Column("queued_images", sa.Integer(), nullable=False),
        _created_at(),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "images",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("true_label", sa.String(200)),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _created_at(),
    )
    op.create_table(
        "job_images",
        sa.Column(
            "job_id",
            BigId,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("image_id", BigId, sa.ForeignKey("images.id"), primary_key=True),
    )
    op.create_index("ix_job_images_image", "job_images", ["image_id"])
    op.create_table(
        "batches",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "job_id",
            BigId,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("last_error", sa.Text()),
        _created_at(),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_batches_job", "batches", ["job_id"])
    op.create_table(
        "predictions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("image_id", BigId, sa.ForeignKey("images.id"), nullable=False),
        sa.Column(
            "model_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id"),
            nullable=False,
        ),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("batch_id", sa.BigInteger()),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("label_index", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("batch_images", sa.Integer(), nullable=False),
        sa.Column("decode_ms", sa.Float(), nullable=False),
        sa.Column("predict_ms", sa.Float(), nullable=False),
        _created_at(),
        sa.UniqueConstraint(
            "image_id", "model_version_id", name="uq_prediction_image_model"
        ),
    )
    op.create_index(
        "ix_predictions_model_confidence",
        "predictions",
        ["model_version_id", "confidence"],
    )
    op.create_index(
        "ix_predictions_model_label", "predictions", ["model_version_id", "label"]
    )
    op.create_index("ix_predictions_job", "predictions", ["job_id"])
    op.create_index("ix_predictions_created", "predictions", ["created_at"])
    op.create_table(
        "failures",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "job_id",
            BigId,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("image_id", BigId, sa.ForeignKey("images.id")),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id")),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _created_at(),
        sa.UniqueConstraint("job_id", "image_id", name="uq_failure_job_image"),
    )
    op.create_index("ix_failures_job_kind", "failures", ["job_id", "kind"])
    op.create_index("ix_failures_image", "failures", ["image_id"])


def downgrade() -> None:
    for table in ("failures", "predictions", "batches", "job_images", "images", "jobs"):
        op.drop_table(table)
