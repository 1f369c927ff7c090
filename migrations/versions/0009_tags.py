"""request tags: a key's default tags, the tags on each request-log row, and an indexed tag table for filters

Revision ID: 0009_tags
Revises: 0008_mcp
"""
from alembic import op
import sqlalchemy as sa

revision = "0009_tags"
down_revision = "0008_mcp"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (SQLite has it): a batch rebuild would drop the tables' AUTOINCREMENT (ids never reused).
    op.add_column("api_keys", sa.Column("tags", sa.JSON(), nullable=True))
    op.add_column("request_logs", sa.Column("tags", sa.Text(), nullable=True))
    op.create_table(
        "request_tags",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_request_tags_tag_created", "request_tags", ["tag", "created_at"], unique=False)
    op.create_index(op.f("ix_request_tags_created_at"), "request_tags", ["created_at"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_request_tags_created_at"), table_name="request_tags")
    op.drop_index("ix_request_tags_tag_created", table_name="request_tags")
    op.drop_table("request_tags")
    # Plain DROP COLUMN (SQLite 3.35+) for the same reason: no table rebuild.
    op.execute("ALTER TABLE request_logs DROP COLUMN tags")
    op.execute("ALTER TABLE api_keys DROP COLUMN tags")
