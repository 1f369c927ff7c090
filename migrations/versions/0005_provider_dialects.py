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
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("responses_api", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("reasoning_effort", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.drop_column("reasoning_effort")
        batch_op.drop_column("responses_api")
