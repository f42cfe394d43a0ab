"""Rendered review reports; predictions by label come in confidence order.

The index on (model version, label) gains the confidence, so the most
confident predictions of a class (a report's samples per class, a listing of
one label sorted by confidence) are read in order instead of sorted.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "model_version_id",
            sa.Integer(),
            sa.ForeignKey("model_versions.id"),
            nullable=False,
        ),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
    )
    op.create_index("ix_reports_created", "reports", ["created_at"])
    op.create_index(
        "ix_predictions_model_label_confidence",
        "predictions",
        ["model_version_id", "label", "confidence"],
    )
    op.drop_index("ix_predictions_model_label", table_name="predictions")


def downgrade() -> None:
    op.create_index(
        "ix_predictions_model_label", "predictions", ["model_version_id", "label"]
    )
    op.drop_index("ix_predictions_model_label_confidence", table_name="predictions")
    op.drop_table("reports")
