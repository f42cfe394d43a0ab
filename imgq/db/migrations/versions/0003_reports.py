"""Rendered review reports.

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


def downgrade() -> None:
    op.drop_table("reports")
