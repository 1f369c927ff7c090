"""prompts: `mcp`, whether a stored prompt is published over MCP (prompts/list, prompts/get); off for all

Revision ID: 0014_prompt_mcp
Revises: 0013_routeops
"""
from alembic import op
import sqlalchemy as sa

revision = "0014_prompt_mcp"
down_revision = "0013_routeops"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (SQLite has it): a batch rebuild would drop the table's AUTOINCREMENT (ids never reused).
    # Existing prompts stay unpublished: MCP hands a prompt's text to its users, so an admin opts each one in.
    op.add_column("prompts", sa.Column("mcp", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    op.execute("ALTER TABLE prompts DROP COLUMN mcp")
