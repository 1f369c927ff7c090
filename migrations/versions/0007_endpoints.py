"""models: the endpoints a model serves (NULL = its kind's default: chat models serve chat and completions)

Revision ID: 0007_endpoints
Revises: 0006_alerts
"""
from alembic import op
import sqlalchemy as sa

revision = "0007_endpoints"
down_revision = "0006_alerts"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (SQLite has it): a batch rebuild would drop the table's AUTOINCREMENT (ids never reused).
    op.add_column("models", sa.Column("endpoints", sa.JSON(), nullable=True))


def downgrade():
    # Plain DROP COLUMN (SQLite 3.35+) for the same reason: no table rebuild.
    op.execute("ALTER TABLE models DROP COLUMN endpoints")
