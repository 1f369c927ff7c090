"""routing: deployments per model, prompt label rollouts, the exact response cache

Revision ID: 0010_routing
Revises: 0009_tags
"""
from alembic import op
import sqlalchemy as sa

revision = "0010_routing"
down_revision = "0009_tags"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "model_deployments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("provider_id", sa.Integer(), sa.ForeignKey("providers.id"), nullable=False),
        sa.Column("upstream_model", sa.String(256), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("model_id", "provider_id", "upstream_model", name="uq_model_deployments_target"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_model_deployments_model_id", "model_deployments", ["model_id"])
    op.create_index("ix_model_deployments_provider_id", "model_deployments", ["provider_id"])
    # Each existing model's own provider and upstream name become its first deployment.
    op.execute("INSERT INTO model_deployments (model_id, provider_id, upstream_model, weight, priority, created_at) "
               "SELECT id, provider_id, upstream_model, 1, 0, created_at FROM models")
    # Plain ADD COLUMN (SQLite has it): a batch rebuild would drop the table's AUTOINCREMENT (ids never reused).
    op.add_column("models", sa.Column("strategy", sa.String(16), nullable=False, server_default="weighted"))
    op.add_column("models", sa.Column("cache_ttl", sa.Integer(), nullable=True))
    op.add_column("models", sa.Column("cache_scope", sa.String(8), nullable=False, server_default="user"))
    op.add_column("prompt_labels", sa.Column("split", sa.JSON(), nullable=True))
    op.add_column("request_logs", sa.Column("deployment_id", sa.Integer(), nullable=True))
    op.add_column("request_logs", sa.Column("cache_hit", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("request_logs", sa.Column("cost_saved", sa.Float(), nullable=True))
    op.create_table(
        "response_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_index("ix_response_cache_expires_at", "response_cache", ["expires_at"])


def downgrade():
    op.drop_index("ix_response_cache_expires_at", "response_cache")
    op.drop_table("response_cache")
    for table, column in (("request_logs", "cost_saved"), ("request_logs", "cache_hit"),
                          ("request_logs", "deployment_id"), ("prompt_labels", "split"),
                          ("models", "cache_scope"), ("models", "cache_ttl"), ("models", "strategy")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_index("ix_model_deployments_provider_id", "model_deployments")
    op.drop_index("ix_model_deployments_model_id", "model_deployments")
    op.drop_table("model_deployments")
