"""providers: which inbound dialects an upstream speaks natively (Responses API) and whether it takes reasoning_effort

Revision ID: 0005_provider_dialects
Revises: 0004_no_id_reuse
"""
from alembic import op
import sqlalchemy as sa

revision = "0005_provider_dialects"
down_revision = "0004_no_id_reuse"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (SQLite has it): a batch rebuild would drop the table's AUTOINCREMENT (ids never reused).
    op.add_column("providers", sa.Column("responses_api", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("providers", sa.Column("reasoning_effort", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    # Plain DROP COLUMN (SQLite 3.35+) for the same reason: no table rebuild.
    op.execute("ALTER TABLE providers DROP COLUMN reasoning_effort")
    op.execute("ALTER TABLE providers DROP COLUMN responses_api")
