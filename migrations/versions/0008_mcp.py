"""mcp: MCP tool servers behind /mcp, and who may use them (users and keys, like models)

Revision ID: 0008_mcp
Revises: 0007_endpoints
"""
from alembic import op
import sqlalchemy as sa

revision = "0008_mcp"
down_revision = "0007_endpoints"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("api_key_hint", sa.String(16), nullable=True),
        sa.Column("headers_encrypted", sa.Text(), nullable=True),
        sa.Column("header_names", sa.JSON(), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    # Plain ADD COLUMN (SQLite has it): a batch rebuild would drop the tables' AUTOINCREMENT (ids never reused).
    op.add_column("users", sa.Column("all_mcp", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("users", sa.Column("allowed_mcp", sa.JSON(), nullable=True))
    op.add_column("api_keys", sa.Column("allowed_mcp", sa.JSON(), nullable=True))


def downgrade():
    op.execute("ALTER TABLE api_keys DROP COLUMN allowed_mcp")
    op.execute("ALTER TABLE users DROP COLUMN allowed_mcp")
    op.execute("ALTER TABLE users DROP COLUMN all_mcp")
    op.drop_table("mcp_servers")
