"""Predictions carry their image's true label; answers are counted as they come.

``predictions.true_label`` follows ``images.true_label`` (see
``imgq.db.predictions``), so the wrong answers of a version, most confident
first, are one range of a partial index. The tallies hold the answers of
each version and the results of each job counted by label pair and by
confidence bucket (see ``imgq.db.tallies``), and ``job_images.tallied`` says
which results a job's tallies count; this migration fills them from the rows
already stored.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BUCKETS = 1000
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("predictions", sa.Column("true_label", sa.String(200)))
    op.execute(
        "UPDATE predictions SET true_label = "
        "(SELECT images.true_label FROM images WHERE images.id = predictions.image_id)"
    )
    op.create_index(
        "ix_predictions_wrong_confidence",
        "predictions",
        ["model_version_id", "confidence"],
        postgresql_where=sa.text("label <> true_label"),
        sqlite_where=sa.text("label <> true_label"),
    )
    op.create_table(
        "label_tallies",
        sa.Column(
            "model_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id"),
            primary_key=True,
        ),
        sa.Column("label", sa.String(200), primary_key=True),
        sa.Column("true_label", sa.String(200), primary_key=True),
        sa.Column("images", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "confidence_tallies",
        sa.Column(
            "model_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id"),
            primary_key=True,
        ),
        sa.Column("bucket", sa.Integer(), primary_key=True),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("confidence_sum", sa.Float(), nullable=False),
    )
    op.create_table(
        "job_label_tallies",
        sa.Column(
            "job_id",
            BigId,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("label", sa.String(200), primary_key=True),
        sa.Column("true_label", sa.String(200), primary_key=True),
        sa.Column("images", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "job_confidence_tallies",
        sa.Column(
            "job_id",
            BigId,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("bucket", sa.Integer(), primary_key=True),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("confidence_sum", sa.Float(), nullable=False),
    )
    op.add_column(
        "job_images",
        sa.Column("tallied", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    _count_stored_answers()


def _count_stored_answers() -> None:
    # the bucket is floor(confidence * 1000), 1.0 in the top one; confidences
    # are never negative, so truncation by CAST is the floor on SQLite
    confidence = "predictions.confidence"
    bucket = f"min(CAST({confidence} * {BUCKETS} AS INTEGER), {BUCKETS - 1})"
    if op.get_bind().dialect.name == "postgresql":
        bucket = (
            f"least(CAST(floor({confidence} * {BUCKETS}) AS INTEGER), {BUCKETS - 1})"
        )
    true_label = "coalesce(predictions.true_label, '')"
    job_results = (
        "predictions JOIN job_images ON job_images.image_id = predictions.image_id "
        "JOIN jobs ON jobs.id = job_images.job_id "
        "AND jobs.model_version_id = predictions.model_version_id"
    )
    for column, scope, source, prefix in (
        ("model_version_id", "predictions.model_version_id", "predictions", ""),
        ("job_id", "job_images.job_id", job_results, "job_"),
    ):
        op.execute(
            f"INSERT INTO {prefix}label_tallies ({column}, label, true_label, images) "
            f"SELECT {scope}, predictions.label, {true_label}, count(*) "
            f"FROM {source} GROUP BY {scope}, predictions.label, {true_label}"
        )
        op.execute(
            f"INSERT INTO {prefix}confidence_tallies "
            f"({column}, bucket, images, confidence_sum) "
            f"SELECT {scope}, {bucket}, count(*), sum({confidence}) FROM {source} "
            f"GROUP BY {scope}, {bucket}"
        )
    op.execute(
        "UPDATE job_images SET tallied = TRUE WHERE EXISTS (SELECT 1 FROM "
        "predictions JOIN jobs ON jobs.model_version_id = predictions.model_version_id "
        "WHERE jobs.id = job_images.job_id "
        "AND predictions.image_id = job_images.image_id)"
    )


def downgrade() -> None:
    op.drop_column("job_images", "tallied")
    op.drop_table("job_confidence_tallies")
    op.drop_table("job_label_tallies")
    op.drop_table("confidence_tallies")
    op.drop_table("label_tallies")
    op.drop_index("ix_predictions_wrong_confidence", table_name="predictions")
    op.drop_column("predictions", "true_label")
