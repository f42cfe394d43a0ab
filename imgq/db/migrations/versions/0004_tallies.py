"""Predictions carry their image's true label; answers are counted as they come.

``predictions.true_label`` follows ``images.true_label`` (see
``imgq.db.predictions``), so the wrong answers of a version, most confident
first, are one range of a partial index. ``label_tallies`` and
``confidence_tallies`` hold each version's answers counted by label pair and
by confidence bucket (see ``imgq.db.tallies``); this migration fills them
from the predictions already stored.

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
    op.execute(
        "INSERT INTO label_tallies (model_version_id, label, true_label, images) "
        "SELECT model_version_id, label, coalesce(true_label, ''), count(*) "
        "FROM predictions GROUP BY model_version_id, label, coalesce(true_label, '')"
    )
    # the bucket is floor(confidence * 1000), 1.0 in the top one; confidences
    # are never negative, so truncation by CAST is the floor on both databases
    bucket = f"min(CAST(confidence * {BUCKETS} AS INTEGER), {BUCKETS - 1})"
    if op.get_bind().dialect.name == "postgresql":
        bucket = f"least(CAST(floor(confidence * {BUCKETS}) AS INTEGER), {BUCKETS - 1})"
    op.execute(
        "INSERT INTO confidence_tallies "
        "(model_version_id, bucket, images, confidence_sum) "
        f"SELECT model_version_id, {bucket}, count(*), sum(confidence) "
        f"FROM predictions GROUP BY model_version_id, {bucket}"
    )


def downgrade() -> None:
    op.drop_table("confidence_tallies")
    op.drop_table("label_tallies")
    op.drop_index("ix_predictions_wrong_confidence", table_name="predictions")
    op.drop_column("predictions", "true_label")
