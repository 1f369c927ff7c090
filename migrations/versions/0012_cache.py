"""cache: response cache settings per stored prompt; cache hits and savings in the usage roll-ups

Revision ID: 0012_cache
Revises: 0011_groups
"""
from alembic import op
import sqlalchemy as sa

revision = "0012_cache"
down_revision = "0011_groups"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (SQLite has it): a batch rebuild would drop the tables' AUTOINCREMENT (ids never reused).
    op.add_column("prompts", sa.Column("cache_ttl", sa.Integer(), nullable=True))
    op.add_column("prompts", sa.Column("cache_scope", sa.String(8), nullable=False, server_default="user"))
    op.add_column("usage_rollups", sa.Column("cache_hits", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("usage_rollups", sa.Column("cost_saved", sa.Float(), nullable=False, server_default="0"))
    # Hits logged since 0010_routing are still in the log (unless pruned): count them in their hours' roll-ups.
    from promptproxy.rollups import fill_cache_columns

    fill_cache_columns(op.get_bind())


def downgrade():
    for table, column in (("usage_rollups", "cost_saved"), ("usage_rollups", "cache_hits"),
                          ("prompts", "cache_scope"), ("prompts", "cache_ttl")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
