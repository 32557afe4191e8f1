"""Initial store schema: runs, assets, check_results, findings.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("schema_version", sa.String(32), nullable=False),
        sa.Column("bastion_version", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("budget", sa.String(32), nullable=True),
        sa.Column("fail_on", sa.String(16), nullable=True),
        sa.Column("max_severity", sa.String(16), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_started", "runs", ["started"])
    op.create_index("ix_runs_project_started", "runs", ["project", "started"])

    op.create_table(
        "assets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("format", sa.String(64), nullable=True),
        sa.Column("framework", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("scan_verdict", sa.String(16), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_assets_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
    )
    op.create_index("ix_assets_run_id", "assets", ["run_id"])
    op.create_index("ix_assets_sha256", "assets", ["sha256"])

    op.create_table(
        "check_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("check_id", sa.String(255), nullable=False),
        sa.Column("asset", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("intervals", sa.JSON(), nullable=False),
        sa.Column("series", sa.JSON(), nullable=False),
        sa.Column("budget_used", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_check_results_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_check_results"),
    )
    op.create_index("ix_check_results_run_id", "check_results", ["run_id"])

    op.create_table(
        "findings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("threat", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(255), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("location", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("atlas", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=True),
        sa.Column("waived", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_findings_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
    )
    op.create_index("ix_findings_run_id", "findings", ["run_id"])
    op.create_index("ix_findings_fingerprint", "findings", ["fingerprint"])


def downgrade() -> None:
    """Drop the four tables (children first)."""
    op.drop_index("ix_findings_fingerprint", table_name="findings")
    op.drop_index("ix_findings_run_id", table_name="findings")
    op.drop_table("findings")
    op.drop_index("ix_check_results_run_id", table_name="check_results")
    op.drop_table("check_results")
    op.drop_index("ix_assets_sha256", table_name="assets")
    op.drop_index("ix_assets_run_id", table_name="assets")
    op.drop_table("assets")
    op.drop_index("ix_runs_project_started", table_name="runs")
    op.drop_index("ix_runs_started", table_name="runs")
    op.drop_table("runs")
