"""ops: hourly usage roll-ups and request-log indexes for the dashboard and the request log

Revision ID: 0002_ops
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002_ops"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG = sa.BigInteger()


def upgrade():
    op.create_table(
        "usage_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=1), nullable=False),
        sa.Column("dim", sa.String(length=8), nullable=False),
        sa.Column("bucket_start", sa.DateTime(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        *[sa.Column(name, BIG, nullable=False) for name in
          ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens")],
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("latency_count", BIG, nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("ttft_count", BIG, nullable=False),
        sa.Column("ttft_sum", sa.Float(), nullable=False),
        *[sa.Column(f"lat_{i}", BIG, nullable=False) for i in range(14)],
        sa.PrimaryKeyConstraint("id"),
        # user_id before bucket_start: a chart reads one user (or everyone, -1) over a time range
        sa.UniqueConstraint("period", "dim", "user_id", "bucket_start", "value", name="uq_usage_rollups_bucket"),
    )
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.create_index("ix_request_logs_key_created", ["key_id", "created_at"], unique=False)
        batch_op.create_index("ix_request_logs_status_created", ["status", "created_at"], unique=False)
    # Existing request-log rows (if any) get their roll-ups now; new rows are rolled up as they are written.
    from promptproxy.rollups import rebuild

    rebuild(op.get_bind())


def downgrade():
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_request_logs_status_created")
        batch_op.drop_index("ix_request_logs_key_created")
    op.drop_table("usage_rollups")
